//! `wirebench proxy`: the fault proxy on its own, in front of any service, so users can
//! impair their own systems.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::exit::bad_input;
use crate::proxy::{Fault, Protocol, Proxy, spec};
use wirebench_scenarios::units::parse_duration;

/// The fault syntax (written once, beside its parser) and examples, after the flags.
fn faults_and_examples() -> String {
    format!(
        "{}\n\nExamples:\n  \
         wirebench proxy --listen 127.0.0.1:7000 --upstream 127.0.0.1:50051 --fault latency:50ms,dir=down\n  \
         wirebench proxy --udp --listen 127.0.0.1:7001 --upstream 127.0.0.1:4433 --fault loss:2% --fault reorder,p=1%\n  \
         wirebench proxy --upstream 127.0.0.1:8080 --fault reset:2s,p=10% --stats-every 1s",
        wirebench_scenarios::faultspec::SYNTAX
    )
}

/// Arguments of `wirebench proxy`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Runs the fault proxy in front of any TCP or UDP service until interrupted. \
It prints one JSON line when it listens ({\"proxy\":..,\"listen\":..,\"upstream\":..}).\n\n\
While it runs, type on stdin: `set SPEC [SPEC...]` to replace the faults, `clear` to remove \
them, `stats` to print the counters. Counters are one JSON object per line on stdout — on \
`stats`, every --stats-every, and once at exit (Ctrl-C or SIGTERM) — each with its time and \
why it was printed.",
    after_help = faults_and_examples()
)]
pub struct Args {
    /// Address to listen on (port 0 picks one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The service to forward to.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// Proxy UDP datagrams instead of TCP connections.
    #[arg(long)]
    pub udp: bool,
    /// A fault to apply (repeatable): KIND[:VALUE][,key=value...], every fault and its
    /// parameters under FAULTS below.
    #[arg(long = "fault", value_parser = parse_fault)]
    pub faults: Vec<Fault>,
    /// Seed for every random decision (probabilities, jitter, loss).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the counters this often (0s: only at exit).
    #[arg(long, default_value = "0s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub stats_every: Duration,
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    spec::parse(s).map_err(|e| e.reason)
}

/// Runs `wirebench proxy`.
pub fn run(args: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = rt.block_on(async move {
        let protocol = if args.udp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let proxy = Proxy::start(
            protocol,
            &args.listen,
            args.upstream,
            args.faults,
            args.seed,
        )
        .await
        .map_err(|e| match e {
            crate::proxy::ProxyError::NotApplicable { .. } => bad_input(e.to_string()),
            other => anyhow::Error::new(other),
        })?;
        println!(
            "{{\"proxy\":\"{}\",\"listen\":\"{}\",\"upstream\":\"{}\"}}",
            if args.udp { "udp" } else { "tcp" },
            proxy.local_addr(),
            args.upstream
        );
        for f in proxy.faults() {
            eprintln!("fault: {f}");
        }
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut tick = tokio::time::interval(if args.stats_every.is_zero() {
            Duration::from_secs(u64::MAX / 4)
        } else {
            args.stats_every
        });
        tick.tick().await;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("watching for SIGTERM")?;
        let started = std::time::Instant::now();
        let stop = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break "SIGINT",
                _ = term.recv() => break "SIGTERM",
                _ = tick.tick() => print_counters(&proxy, started, "interval"),
                line = lines.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => command(&proxy, line.trim(), started),
                    _ => stdin_open = false,
                },
            }
        };
        print_counters(&proxy, started, stop);
        Ok(ExitCode::SUCCESS)
    });
    // Stdin is read by a blocking thread that no one can cancel: waiting for it would hang
    // the exit until the user pressed Enter, so the runtime is left behind instead.
    rt.shutdown_background();
    outcome
}

/// One line of counters on stdout, as JSON: `{"elapsed_s":..,"reason":..,"counters":{..}}`,
/// `reason` being `interval`, `stats` (asked on stdin), `SIGINT` or `SIGTERM` (the last line).
fn print_counters(proxy: &Proxy, started: std::time::Instant, reason: &str) {
    let line = serde_json::json!({
        "elapsed_s": (started.elapsed().as_secs_f64() * 1e3).round() / 1e3,
        "reason": reason,
        "counters": proxy.counters(),
    });
    println!("{line}");
}

fn command(proxy: &Proxy, line: &str, started: std::time::Instant) {
    let mut words = line.split_whitespace();
    match words.next() {
        None => {}
        Some("stats") => print_counters(proxy, started, "stats"),
        Some("clear") => {
            let _ = proxy.set_faults(Vec::new());
            eprintln!("faults cleared");
        }
        Some("set") => {
            let parsed: Result<Vec<Fault>, _> = words.map(spec::parse).collect();
            match parsed
                .map_err(|e| e.to_string())
                .and_then(|faults| proxy.set_faults(faults).map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    for f in proxy.faults() {
                        eprintln!("fault: {f}");
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
        }
        Some(other) => eprintln!("error: unknown command {other:?} (set SPEC..., clear, stats)"),
    }
}
