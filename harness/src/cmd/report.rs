//! `wirebench report`: re-renders `report.html`, `summary.md` and `junit.xml` from a saved
//! results file, or renders several results files as one report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use wirebench_reports::merge::{self, Part};
use wirebench_reports::results::Results;

use crate::exit::bad_input;

/// Where several files' merged report goes when `--out` is not given: a folder of its own in
/// the current directory, never beside one of the inputs, whose own report it would replace.
const MERGED_DIR: &str = "wirebench-report";

/// Arguments of `wirebench report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wirebench report target/wirebench/2026-11-01T10-00-00Z/results.json\n  \
    wirebench report results.json --out /tmp/report\n  \
    wirebench report tcp.json grpc.json quic.json --out side-by-side\n\n\
With several files, every run of every file is in the one report; a transport and point \
found in more than one file is labelled with its file (\"load (before)\"), and files from \
different machines are flagged. The merged results.json is written beside the report."
)]
pub struct Args {
    /// One or more results.json written by `wirebench run` or `wirebench load --json`.
    #[arg(required = true, num_args = 1..)]
    pub results: Vec<PathBuf>,
    /// Folder to write report.html, summary.md and junit.xml into (default: beside the
    /// results file; with several files, ./wirebench-report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `wirebench report`.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut loaded = Vec::new();
    for path in &args.results {
        loaded.push(Results::load(path).map_err(|e| bad_input(e.to_string()))?);
    }
    let several = loaded.len() > 1;
    let dir = match (args.out, several) {
        (Some(d), _) => d,
        (None, true) => PathBuf::from(MERGED_DIR),
        (None, false) => args.results[0]
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        bad_input(format!(
            "cannot create output folder {}: {e}",
            dir.display()
        ))
    })?;
    let results = if several {
        let parts = merge::labels(&args.results)
            .into_iter()
            .zip(loaded)
            .map(|(label, results)| Part { label, results })
            .collect();
        let merged = merge::merge(parts).context("merging the results files")?;
        let path = dir.join("results.json");
        // The inputs are never overwritten, whatever --out says.
        if args.results.iter().any(|p| same_file(p, &path)) {
            return Err(bad_input(format!(
                "--out {}: the merged results.json would overwrite an input; choose another \
                 folder",
                dir.display()
            )));
        }
        merged.save(&path).context("saving the merged results")?;
        println!("results: {}", path.display());
        merged
    } else {
        loaded.remove(0)
    };
    let rendered =
        wirebench_reports::render_all(&results, &dir).context("rendering the reports")?;
    println!("report:  {}", rendered.html.display());
    println!("summary: {}", rendered.summary.display());
    if let Some(junit) = &rendered.junit {
        println!("junit:   {}", junit.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether two paths name the same file (the second need not exist yet).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
