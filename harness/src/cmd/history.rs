//! `wirebench history`: builds, or extends, a static site of many runs — a trend per metric
//! and point over commits, with each step `compare` judged a regression or an improvement
//! marked where it happened, and every run's own report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use wirebench_reports::compare::CompareConfig;
use wirebench_reports::history::{self, History, site};
use wirebench_reports::results::{Results, write_atomic};

use crate::exit::bad_input;

/// Arguments of `wirebench history`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Builds a self-contained static site (no script, no external URL) from any \
number of results files: an index of every run and every change, and a page per transport and \
load point with throughput, p50, p99 and client CPU over the runs. Each run is compared with the \
previous run of the same machine class (CPU model, cores, kernel) exactly as `wirebench compare` \
would, and every step judged a regression or an improvement is marked where it happened. Runs \
from different machine classes are separate lines, never joined or compared.\n\n\
The site keeps its data in SITE/history.json (schema wirebench-history), so --append adds new \
runs without the old results files. A file that is not a wirebench results file is named and \
skipped: the site is still built from the rest, and the exit code is 2.",
    after_help = "Examples:\n  wirebench history ci-runs/ --out site/\n  \
    wirebench history target/wirebench/2026-12-08T10-00-00Z/results.json --out site/ --append"
)]
pub struct Args {
    /// Results files, or folders searched (three levels deep) for `results.json` files and
    /// holding `*.json` results files.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// The site's folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Add to the site already in --out (created when there is none yet); without it, --out
    /// must not hold a history.
    #[arg(long)]
    pub append: bool,
}

/// The results files named by the inputs, in a stable order.
fn files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: u32, top: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if depth > 0 {
                    walk(&p, depth - 1, false, out)?;
                }
            } else if p.file_name().is_some_and(|n| n == "results.json")
                || (top && p.extension().is_some_and(|e| e == "json"))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, 3, true, &mut out)
                .with_context(|| format!("reading folder {}", input.display()))?;
        } else if input.exists() {
            out.push(input.clone());
        } else {
            return Err(bad_input(format!(
                "{}: no such file or folder",
                input.display()
            )));
        }
    }
    Ok(out)
}

/// Runs `wirebench history`.
pub fn run(args: Args) -> Result<ExitCode> {
    let data = args.out.join(history::FILE);
    let mut h = if data.exists() {
        if !args.append {
            return Err(bad_input(format!(
                "--out {} already holds a history ({}); add to it with --append",
                args.out.display(),
                data.display()
            )));
        }
        History::load(&data).map_err(|e| bad_input(e.to_string()))?
    } else {
        History::default()
    };
    let mut skipped = 0usize;
    let mut loaded = Vec::new();
    for path in files(&args.inputs)? {
        // The site's own data file is not a run.
        if path.file_name().is_some_and(|n| n == history::FILE) {
            continue;
        }
        match Results::load(&path) {
            Ok(r) => loaded.push((path, r)),
            Err(e) => {
                eprintln!("skipping {}: {e}", path.display());
                skipped += 1;
            }
        }
    }
    // Runs go in in the order they ran, whatever order the files were named in.
    loaded.sort_by(|a, b| a.1.started_at.cmp(&b.1.started_at));
    let cfg = CompareConfig::default();
    let mut added = 0usize;
    for (path, results) in &loaded {
        if h.contains(results) {
            eprintln!("already in the site: {}", path.display());
            continue;
        }
        let id = h.add(results, &path.display().to_string(), &cfg);
        let report = args.out.join(site::report_path(&id));
        if let Some(dir) = report.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomic(&report, wirebench_reports::html::render(results).as_bytes())
            .with_context(|| format!("writing {}", report.display()))?;
        let run = h.runs.last().context("the run just added")?;
        let regressed = run.changes.iter().filter(|c| c.regressed).count();
        println!(
            "added {id} from {}{}",
            path.display(),
            match (regressed, run.changes.len() - regressed) {
                (0, 0) => String::new(),
                (r, i) => format!(": {r} regressed, {i} improved"),
            }
        );
        added += 1;
    }
    if h.runs.is_empty() {
        return Err(bad_input(
            "no results file could be read, so there is no site to build",
        ));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    h.save(&data)?;
    let pages = site::write(&h, &args.out).context("writing the site")?;
    println!(
        "site: {} ({} runs, {added} added, {} pages)",
        args.out.join("index.html").display(),
        h.runs.len(),
        pages.len()
    );
    if skipped > 0 {
        eprintln!("{skipped} input file(s) skipped (named above)");
        return Ok(ExitCode::from(crate::exit::BAD_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}
