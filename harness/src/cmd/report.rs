//! `wirebench report`: re-renders `report.html` and `summary.md` from a saved results file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use wirebench_reports::results::Results;

use crate::exit::bad_input;

/// Arguments of `wirebench report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wirebench report target/wirebench/2026-11-01T10-00-00Z/results.json\n  \
    wirebench report results.json --out /tmp/report"
)]
pub struct Args {
    /// A results.json written by `wirebench run` or `wirebench load --json`.
    pub results: PathBuf,
    /// Folder to write report.html and summary.md into (default: beside the results file).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `wirebench report`.
pub fn run(args: Args) -> Result<ExitCode> {
    let results = Results::load(&args.results).map_err(|e| bad_input(e.to_string()))?;
    let dir = match args.out {
        Some(d) => d,
        None => args
            .results
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
    let rendered =
        wirebench_reports::render_all(&results, &dir).context("rendering the reports")?;
    println!("report:  {}", rendered.html.display());
    println!("summary: {}", rendered.summary.display());
    if let Some(junit) = &rendered.junit {
        println!("junit:   {}", junit.display());
    }
    Ok(ExitCode::SUCCESS)
}
