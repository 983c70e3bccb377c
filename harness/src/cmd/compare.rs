//! `wirebench compare BASE NEW`: the regression verdict, noise-aware; exit 1 on a regression.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use wirebench_reports::compare::{self, CompareConfig, Metric};
use wirebench_reports::results::Results;

use crate::exit::{FAILED, bad_input};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Text,
    /// A Markdown table (for CI job summaries).
    Markdown,
    /// The full comparison as JSON.
    Json,
}

/// Arguments of `wirebench compare`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Compares two results files run by run (matched by transport and load point) \
on throughput, p50, p99, p99.9 and CPU per call on each side.\n\n\
A metric counts as changed only when the change is larger than its threshold AND outside the \
noise: each run's per-second intervals are resampled (a bootstrap that merges the drawn \
intervals' histograms) to get a confidence interval for NEW/BASE, and the change counts only \
when that interval excludes no change. CPU per call has no per-interval data: it is judged on \
the threshold widened by /proc's 10 ms accounting resolution.\n\n\
The gate fails when it judged less than it was given: no run in both files (always), a BASE \
run missing from NEW, or a run not judged — parameters that differ, or a run invalid or \
unsustained on either side — unless --allow-partial. A NEW open-loop run that no longer \
sustains the rate its BASE run sustained is a regression. Runs only in NEW are listed. Files \
from different machines (CPU model, cores, kernel) get a warning; --require-same-machine \
refuses them (exit 2).\n\n\
Repeated runs (a suite's `repeat = N` or `run --repeat N`, at least 3 valid repeats on each \
side) are judged by their spread between runs instead, which on a shared machine is several \
times the spread within one run: the medians of the repeats are compared, and a change beyond \
the threshold counts only when a one-sided exact Mann-Whitney rank test over the repeats gives \
p <= --rank-alpha (5 against 5 repeats: at most one of the 25 pairs out of order).\n\n\
Default thresholds: throughput 25%, p50 25%, p99 50%, p99.9 50%, CPU 25% (set from 21 \
consecutive clean runs on a shared 2-vCPU VM). Only the gated metrics fail the gate: by \
default every metric but p99.9 (which moved up to 4x between clean runs there); a suite's \
`gate = [...]` per load point, or --gate, chooses others.\n\n\
Exit codes: 0 no regression, 1 a regression or a comparison that judged too little, 2 \
unusable input (or different machines with --require-same-machine).",
    after_help = "Examples:\n  wirebench compare ci/baseline.json target/ci-run/results.json\n  \
wirebench compare base.json new.json --threshold 10% --threshold p99.9=80% --format markdown"
)]
pub struct Args {
    /// The reference results.json.
    pub base: PathBuf,
    /// The results.json to judge.
    pub new: PathBuf,
    /// A relative threshold for every metric (`10%`, `0.1`) or one metric (`p99=40%`;
    /// metrics: throughput, p50, p99, p99.9, cpu-client, cpu-server). Repeatable.
    #[arg(long = "threshold", value_parser = parse_threshold)]
    pub thresholds: Vec<(Option<Metric>, f64)>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Confidence of the bootstrap interval.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// The metrics whose regression fails the gate, comma-separated, for every run (default:
    /// each run's suite `gate`, else every metric but p99.9). The others are still shown.
    #[arg(long, value_delimiter = ',', value_parser = parse_metric)]
    pub gate: Option<Vec<Metric>>,
    /// Repeated runs: the rank test's one-sided p-value at or below which a change counts.
    #[arg(long, default_value_t = 0.01)]
    pub rank_alpha: f64,
    /// Also write the output to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Pass even when some runs could not be judged (parameters differ, invalid or
    /// unsustained on either side) or BASE runs are missing from NEW. A comparison with no
    /// run in common fails regardless.
    #[arg(long)]
    pub allow_partial: bool,
    /// Refuse (exit 2) files from different machines (CPU model, core count, kernel) instead
    /// of warning.
    #[arg(long)]
    pub require_same_machine: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number or percentage"))?;
    let v = v / scale;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("threshold {s:?} must be positive"));
    }
    Ok(v)
}

fn parse_metric(s: &str) -> Result<Metric, String> {
    Metric::parse(s.trim()).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        format!("unknown metric {s:?} (known: {})", known.join(", "))
    })
}

fn parse_threshold(s: &str) -> Result<(Option<Metric>, f64), String> {
    match s.split_once('=') {
        Some((m, v)) => {
            let metric = parse_metric(m)?;
            Ok((Some(metric), parse_fraction(v)?))
        }
        None => Ok((None, parse_fraction(s)?)),
    }
}

/// Runs `wirebench compare`.
pub fn run(args: Args) -> Result<ExitCode> {
    if !(0.5..1.0).contains(&args.confidence) {
        return Err(bad_input(format!(
            "--confidence {} must be in [0.5, 1)",
            args.confidence
        )));
    }
    if !(args.rank_alpha > 0.0 && args.rank_alpha < 0.5) {
        return Err(bad_input(format!(
            "--rank-alpha {} must be in (0, 0.5)",
            args.rank_alpha
        )));
    }
    if args.resamples < 100 {
        return Err(bad_input("--resamples must be at least 100"));
    }
    let base = Results::load(&args.base).map_err(|e| bad_input(e.to_string()))?;
    let new = Results::load(&args.new).map_err(|e| bad_input(e.to_string()))?;
    let mut cfg = CompareConfig {
        confidence: args.confidence,
        resamples: args.resamples,
        rank_alpha: args.rank_alpha,
        gate: args.gate.clone(),
        ..CompareConfig::default()
    };
    let mut thresholds: BTreeMap<Metric, f64> = cfg.thresholds.clone();
    // Global thresholds first, per-metric ones override them whatever the order given.
    for (_, v) in args.thresholds.iter().filter(|(m, _)| m.is_none()) {
        for t in thresholds.values_mut() {
            *t = *v;
        }
    }
    for (m, v) in &args.thresholds {
        if let Some(m) = m {
            thresholds.insert(*m, *v);
        }
    }
    cfg.thresholds = thresholds;
    let c = compare::compare(
        &base,
        &args.base.display().to_string(),
        &new,
        &args.new.display().to_string(),
        &cfg,
    );
    if args.require_same_machine && !c.machine.is_empty() {
        return Err(bad_input(format!(
            "--require-same-machine: {} and {} come from different machines ({})",
            args.base.display(),
            args.new.display(),
            c.machine.join(", ")
        )));
    }
    let text = match args.format {
        Format::Text => compare::render_text(&c, args.allow_partial),
        Format::Markdown => compare::render_markdown(&c, args.allow_partial),
        Format::Json => serde_json::to_string_pretty(&c)? + "\n",
    };
    print!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text)
            .map_err(|e| bad_input(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(w) = compare::machine_warning(&c) {
        eprintln!("{w}");
    }
    let passed = c.regressions().is_empty()
        && c.lost_rate().is_empty()
        && c.shortfalls(args.allow_partial).is_empty();
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_threshold("10%"), Ok((None, 0.1)));
        assert_eq!(parse_threshold("0.2"), Ok((None, 0.2)));
        assert_eq!(parse_threshold("p99=40%"), Ok((Some(Metric::P99), 0.4)));
        assert!(
            parse_threshold("p42=1%")
                .unwrap_err()
                .contains("unknown metric")
        );
        assert!(parse_threshold("-5%").unwrap_err().contains("positive"));
        assert!(parse_threshold("lots").is_err());
    }

    #[test]
    fn a_suites_gate_names_are_compares_metric_names() {
        // scenarios (the suite parser) cannot depend on reports: its list is checked here.
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, wirebench_scenarios::suite::GATE_METRICS.to_vec());
    }
}
