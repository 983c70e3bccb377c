//! `wirebench conformance`: every case against every chosen transport, the matrix, and exit 1
//! on any failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use wirebench_core::Transport;
use wirebench_reports::conformance::{CaseOutcome, Verdict, matrix_text};
use wirebench_scenarios::conformance::{self, CaseReport, Env, Outcome};
use wirebench_tls::{TlsMaterial, TlsMode};
use wirebench_transports::registry::AnyTransport;

use crate::brokers::{Availability, BrokerArgs, availability};
use crate::cmd::args::TlsArgs;
use crate::exit::{FAILED, bad_input};
use crate::proxy::HarnessFaults;

/// Arguments of `wirebench conformance`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  wirebench conformance
  wirebench conformance --transport inproc,tcp --json conformance.json --junit junit.xml
  wirebench conformance --case unary_large,stream_integrity
  wirebench conformance --transport tcp,grpc,quic --tls mtls
  wirebench conformance --tls tls --tls-dir ./certs --tls-server-name api.example
  wirebench conformance --transport nats --broker-url nats://127.0.0.1:4222
  wirebench conformance --transport mqtt --broker-url mqtt://127.0.0.1:1883

Broker transports start a private broker per case: nats a nats-server from PATH or
WIREBENCH_NATS_SERVER (without one it is skipped with an install hint, except when
CI is set, where that is a failure), mqtt its embedded broker.")]
pub struct Args {
    /// Transports to check, comma-separated (default: all).
    #[arg(long)]
    pub transport: Option<String>,
    /// Only these cases, comma-separated (default: all).
    #[arg(long)]
    pub case: Option<String>,
    /// Also write the outcomes as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the outcomes as JUnit XML to this file (one testcase per case × transport;
    /// unsupported cases are `skipped` with their reason).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Print every case as it completes.
    #[arg(long)]
    pub progress: bool,
    /// Brokers for broker transports.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// TLS: every case over TLS 1.3 or mutual TLS (transports without it report every case
    /// unsupported; the `tls` group sets up its own TLS either way).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The environment of a plaintext run: the harness's fault proxy; the `tls` group makes its
/// own throwaway certificates.
pub fn conformance_env() -> Env {
    Env {
        faults: Some(HarnessFaults::shared()),
        ..Env::default()
    }
}

/// The environment a run uses: the harness's fault proxy, and TLS material (loaded from
/// `--tls-dir` or generated) applied to every case when `--tls` asks for it.
pub fn env_for(args: &Args) -> Result<Env> {
    let material = match &args.tls.tls_dir {
        Some(dir) => TlsMaterial::from_pem_dir(dir, &args.tls.tls_server_name)
            .map_err(|e| bad_input(format!("--tls-dir: {e}")))?,
        None => TlsMaterial::generate().context("generating throwaway TLS certificates")?,
    };
    if args.tls.tls == TlsMode::Mutual && !material.has_client_cert() {
        return Err(bad_input(
            "--tls mtls needs a client certificate: --tls-dir has no client.pem/client.key",
        ));
    }
    let env = conformance_env();
    let material = Arc::new(material);
    Ok(match args.tls.tls {
        TlsMode::None => Env {
            tls: Some(material),
            ..env
        },
        mode => env.with_tls(mode, material),
    })
}

/// Converts a case report to its saved form.
pub fn to_outcome(r: &CaseReport) -> CaseOutcome {
    CaseOutcome {
        case: r.case.to_owned(),
        group: r.group.to_owned(),
        transport: r.transport.to_owned(),
        verdict: match r.outcome {
            Outcome::Pass { .. } => Verdict::Pass,
            Outcome::Fail { .. } => Verdict::Fail,
            Outcome::Unsupported { .. } => Verdict::Unsupported,
        },
        detail: r.outcome.detail().map(str::to_owned),
        elapsed_ms: r.elapsed.as_secs_f64() * 1e3,
    }
}

/// Runs the chosen cases against the chosen transports, one at a time (broker transports on
/// the brokers `brokers` names, else on private ones).
pub async fn run_all(
    transports: &[AnyTransport],
    only: Option<&[String]>,
    brokers: &BrokerArgs,
    env: Env,
    mut on_done: impl FnMut(&CaseReport),
) -> Vec<CaseReport> {
    conformance::install_panic_counter();
    let cases = conformance::cases::<AnyTransport>();
    let mut reports = Vec::new();
    for t in transports {
        let env = Arc::new(brokers.env_for(t, &env));
        for case in cases
            .iter()
            .filter(|c| only.is_none_or(|o| o.iter().any(|n| n == c.name)))
        {
            let r = conformance::run_case(case, *t, env.clone()).await;
            on_done(&r);
            reports.push(r);
        }
    }
    reports
}

/// Runs `wirebench conformance`.
pub fn run(args: Args) -> Result<ExitCode> {
    let transports = super::parse_transports(args.transport.as_deref())?;
    args.brokers.validate()?;
    let only = selected_cases(args.case.as_deref())?;
    let env = env_for(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // A broker transport whose broker is missing is skipped (or, under CI, failed) as a
    // whole, with one line saying how to fix it, rather than failing case by case.
    let mut skipped = Vec::new();
    let mut missing = Vec::new();
    let transports: Vec<AnyTransport> = transports
        .into_iter()
        .filter(|t| match availability(t, &args.brokers) {
            Availability::Ready => true,
            Availability::Skipped(why) => {
                skipped.push(why);
                false
            }
            Availability::Missing(why) => {
                missing.push(why);
                false
            }
        })
        .collect();
    let progress = args.progress;
    let reports = rt.block_on(run_all(
        &transports,
        only.as_deref(),
        &args.brokers,
        env,
        |r| {
            if progress {
                eprintln!(
                    "{:<8} {:<28} {:<11} {:>8.1} ms",
                    r.transport,
                    r.case,
                    r.outcome.verdict(),
                    r.elapsed.as_secs_f64() * 1e3
                );
            }
        },
    ));
    let outcomes: Vec<CaseOutcome> = reports.iter().map(to_outcome).collect();
    let mut out = std::io::stdout().lock();
    let failures = print_matrix(&mut out, &args, &transports, &reports, &skipped, &missing)?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&outcomes)?;
        std::fs::write(path, json)
            .map_err(|e| bad_input(format!("cannot write {}: {e}", path.display())))?;
        writeln!(out, "wrote {}", path.display())?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, wirebench_reports::junit::render(&outcomes, &[]))
            .map_err(|e| bad_input(format!("cannot write {}: {e}", path.display())))?;
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(if failures > 0 {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The cases `--case` names (checked against the known ones), or `None` for all.
fn selected_cases(list: Option<&str>) -> Result<Option<Vec<String>>> {
    let Some(list) = list else {
        return Ok(None);
    };
    let only: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
    let known: Vec<&str> = conformance::cases::<AnyTransport>()
        .iter()
        .map(|c| c.name)
        .collect();
    if let Some(n) = only.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(bad_input(format!(
            "unknown case {n:?} (known: {})",
            known.join(", ")
        )));
    }
    Ok(Some(only))
}

/// Prints the case × transport matrix, every failure and unsupported case with its reason,
/// and the tally; returns the failures (cases, and brokers missing under CI).
fn print_matrix(
    out: &mut impl Write,
    args: &Args,
    transports: &[AnyTransport],
    reports: &[CaseReport],
    skipped: &[String],
    missing: &[String],
) -> Result<usize> {
    let outcomes: Vec<CaseOutcome> = reports.iter().map(to_outcome).collect();
    write!(out, "{}", matrix_text(&outcomes))?;
    let mut failures = 0;
    for r in reports {
        match &r.outcome {
            Outcome::Fail { reason } => {
                failures += 1;
                writeln!(out, "FAIL {}::{}: {reason}", r.transport, r.case)?;
            }
            Outcome::Unsupported { reason } => {
                writeln!(out, "unsupported {}::{}: {reason}", r.transport, r.case)?;
            }
            Outcome::Pass { .. } => {}
        }
    }
    for why in skipped {
        writeln!(out, "skipped {why}")?;
    }
    for why in missing {
        failures += 1;
        writeln!(out, "FAIL {why}")?;
    }
    let passed = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Pass { .. }))
        .count();
    let failed_cases = failures - missing.len();
    writeln!(
        out,
        "{passed} passed, {failures} failed, {} unsupported (TLS: {}; {} transports: {}){}",
        reports.len() - passed - failed_cases,
        args.tls.tls,
        transports.len(),
        transports
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", "),
        if !skipped.is_empty() {
            format!("; {} skipped", skipped.len())
        } else {
            String::new()
        }
    )?;
    Ok(failures)
}
