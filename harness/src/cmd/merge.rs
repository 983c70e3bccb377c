//! `wirebench merge`: the shards of one run (`load --shard-count N`, one file per generator)
//! merged exactly into the run they made together, rendered like any other.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use wirebench_reports::results::Results;
use wirebench_reports::shards::{self, ShardError, ShardFile};

use crate::exit::{HARNESS, bad_input};

/// Arguments of `wirebench merge`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Histograms are added bucket by bucket and every figure is recomputed \
    from them (percentiles are never averaged); counters and rates are summed; the client CPU \
    is the generators' total. Shards of different builds or scenarios are refused, naming the \
    difference, and so are two files claiming one shard.\n\n\
    Exit codes: 0 merged, 2 bad input (files that are not shards of one run), 3 shards \
    missing (named; --allow-partial merges what there is and marks each run degraded).\n\n\
    Example:\n  wirebench merge shard-*.json --expect-shards 3 --out merged/"
)]
pub struct Args {
    /// The shards' results files (`load --shard-count N --json FILE`).
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    /// How many shards made the run: any of 0..N missing is named.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub expect_shards: u32,
    /// Merge what there is when shards are missing; the runs are marked degraded.
    #[arg(long)]
    pub allow_partial: bool,
    /// Folder for results.json, report.html, summary.md and junit.xml.
    #[arg(long, default_value = "wirebench-merged")]
    pub out: PathBuf,
}

/// Runs `wirebench merge`.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut files = Vec::new();
    for path in &args.shards {
        let results = Results::load(path).map_err(|e| bad_input(e.to_string()))?;
        files.push(ShardFile {
            label: path.display().to_string(),
            results,
        });
    }
    let merged = match shards::merge(files, args.expect_shards, args.allow_partial) {
        Ok(m) => m,
        Err(e @ ShardError::Missing(_)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(HARNESS));
        }
        Err(e) => return Err(bad_input(e.to_string())),
    };
    std::fs::create_dir_all(&args.out).map_err(|e| {
        bad_input(format!(
            "cannot create output folder {}: {e}",
            args.out.display()
        ))
    })?;
    let path = args.out.join("results.json");
    if args.shards.iter().any(|p| {
        p.canonicalize()
            .ok()
            .zip(path.canonicalize().ok())
            .is_some_and(|(a, b)| a == b)
    }) {
        return Err(bad_input(format!(
            "--out {}: the merged results.json would overwrite a shard; choose another folder",
            args.out.display()
        )));
    }
    merged.save(&path).context("saving the merged results")?;
    for r in &merged.runs {
        println!(
            "{} {}: {} calls, {:.0} calls/s, p50 {}, p99 {} — {}",
            r.transport,
            r.point,
            r.summary.calls,
            r.summary.throughput_per_s,
            wirebench_reports::html::dur(r.summary.latency.p50_ns),
            wirebench_reports::html::dur(r.summary.latency.p99_ns),
            r.validity.label()
        );
    }
    let rendered =
        wirebench_reports::render_all(&merged, &args.out).context("rendering the reports")?;
    println!("results: {}", path.display());
    println!("report:  {}", rendered.html.display());
    println!("summary: {}", rendered.summary.display());
    Ok(ExitCode::SUCCESS)
}
