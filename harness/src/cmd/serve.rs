//! `wirebench serve`: serves the echo service over one transport until told to stop, and
//! reports where it listens as one JSON line on stdout (and in `--ready-file`). SIGTERM drains
//! the server (`Server::drain`, bounded by `--drain-grace`); Ctrl-C, a second SIGTERM or the end
//! of stdin stop it at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncReadExt;
use wirebench_core::transport::Options;
use wirebench_core::{Capability, Echo, Server, ServerConfig, Transport};
use wirebench_reports::results::write_atomic;
use wirebench_tls::{TlsMaterial, TlsMode};

use crate::affinity::pin_current_thread;
use crate::child::ReadyLine;
use crate::cmd::args::TlsArgs;
use crate::exit::bad_input;
use wirebench_scenarios::units::parse_duration;

/// Arguments of `wirebench serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The ready line, printed once the server accepts connections:\n  \
    {\"transport\":\"tcp\",\"endpoint\":\"127.0.0.1:40123\",\"pid\":4242}\n\n\
    Stopping: SIGTERM drains the server: it takes no new connections or calls (its clients \
    learn so and connect again), lets the calls in flight finish for up to --drain-grace, \
    then closes, cutting whatever still runs (UNAVAILABLE); a line on stderr says how many \
    calls finished and how many were cut. SIGINT (Ctrl-C), a second SIGTERM, or the end of \
    standard input under --watch-stdin stop it at once. A broker transport's private broker \
    (the default) stops with the server.\n\n\
    Examples:\n  wirebench serve --transport tcp --listen 127.0.0.1:7000\n  \
    wirebench serve --transport tcp --ready-file /tmp/tcp.ready &\n  \
    wirebench load --transport tcp --target 127.0.0.1:7000 --rate 5000 --duration 10s"
)]
pub struct Args {
    /// The transport to serve (see `wirebench conformance` for the list).
    #[arg(long)]
    pub transport: String,
    /// Address to listen on; port 0 picks a free port (the ready line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Also write the ready line to this file (atomically) once ready.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Runtime worker threads (default: one per available CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin the server to these CPUs (comma-separated, e.g. `1` or `0,1`).
    #[arg(long)]
    pub cpus: Option<String>,
    /// A transport option KEY=VALUE (repeatable); the transport rejects keys it does not know.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// TLS, with the certificates in `--tls-dir` (`server.pem`, `server.key`, and `ca.pem`,
    /// the CA that signs client certificates under mtls).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Exit when standard input closes (the harness uses this so that a server never
    /// outlives it).
    #[arg(long)]
    pub watch_stdin: bool,
    /// How long a SIGTERM drain lets the calls in flight finish before it cuts them.
    #[arg(long, default_value = "5s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub drain_grace: Duration,
}

/// Parses `KEY=VALUE` options.
pub fn parse_options(list: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for o in list {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| bad_input(format!("option {o:?}: expected KEY=VALUE")))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// Parses a CPU list (`1`, `0,1`).
pub fn parse_cpus(list: &str) -> Result<Vec<usize>> {
    list.split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .map_err(|_| bad_input(format!("CPU list {list:?}: {c:?} is not a CPU number")))
        })
        .collect()
}

/// Runs `wirebench serve`.
pub fn run(args: Args) -> Result<ExitCode> {
    let transport = wirebench_transports::registry::transport(&args.transport)
        .map_err(|e| bad_input(e.to_string()))?;
    if let Some(reason) = transport.capabilities().gap(Capability::OutOfProcess) {
        return Err(bad_input(format!(
            "{} cannot be served to other processes: {reason}",
            transport.name()
        )));
    }
    let tls = match (&args.tls.tls, &args.tls.tls_dir) {
        (TlsMode::None, _) => None,
        (mode, Some(dir)) => {
            if let Some(reason) = transport.capabilities().gap(Capability::Tls) {
                return Err(bad_input(format!(
                    "--tls {mode}: {} has no TLS: {reason}",
                    transport.name()
                )));
            }
            let material = TlsMaterial::from_pem_dir(dir, &args.tls.tls_server_name)
                .map_err(|e| bad_input(format!("--tls-dir: {e}")))?;
            material.server(*mode)
        }
        (mode, None) => return Err(bad_input(format!("--tls {mode} needs --tls-dir"))),
    };
    let mut options = Options::new();
    for (k, v) in parse_options(&args.options)? {
        options.set(k, v);
    }
    if let Some(list) = &args.cpus {
        // Threads inherit the affinity of the thread that creates them: pin before the
        // runtime starts its workers.
        let cpus = parse_cpus(list)?;
        let mut set = nix::sched::CpuSet::new();
        for c in &cpus {
            set.set(*c)
                .map_err(|e| bad_input(format!("CPU {c} cannot be pinned: {e}")))?;
        }
        if cpus.len() == 1 {
            pin_current_thread(cpus[0]).map_err(bad_input)?;
        } else {
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .map_err(|e| bad_input(format!("pinning to CPUs {list}: {e}")))?;
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(bad_input("--threads must be at least 1"));
        }
        rt.worker_threads(t);
    }
    let rt = rt.build().context("starting the server runtime")?;
    let served = rt.block_on(async move {
        let config = ServerConfig {
            listen: args.listen.clone(),
            options,
            tls,
        };
        let server = transport
            .serve(&config, Arc::new(Echo::default()))
            .await
            .map_err(|e| {
                bad_input(format!(
                    "cannot serve {} on {}: {e}",
                    transport.name(),
                    args.listen
                ))
            })?;
        // Watched from before the ready line: a parent may send SIGTERM as soon as it reads
        // it, and before the handler exists that signal would kill rather than drain.
        let mut stop = StopSignals::new(args.watch_stdin);
        let ready = ReadyLine {
            transport: transport.name().to_owned(),
            endpoint: server.endpoint(),
            pid: std::process::id(),
        };
        let line = serde_json::to_string(&ready)?;
        if let Some(path) = &args.ready_file {
            write_atomic(path, format!("{line}\n").as_bytes())
                .with_context(|| format!("writing the ready file {}", path.display()))?;
        }
        println!("{line}");
        match stop.next().await {
            Stop::Now => server.shutdown().await,
            Stop::Drain => {
                tokio::select! {
                    report = server.drain(args.drain_grace) => {
                        eprintln!("wirebench serve: {report}");
                    }
                    // Dropping the drain drops the server: the runtime's end closes every
                    // connection and stops a private broker.
                    _ = stop.next() => eprintln!("wirebench serve: stopped during the drain"),
                }
            }
        }
        anyhow::Ok(())
    });
    // The stdin watcher's blocking read cannot be cancelled: waiting for it (as dropping the
    // runtime does) would keep a stopped server alive until its stdin closes.
    rt.shutdown_background();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// How `wirebench serve` was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: drain.
    Drain,
    /// Ctrl-C, or the end of standard input: at once.
    Now,
}

/// The stop requests of `wirebench serve`: SIGTERM, Ctrl-C, and (with `watch_stdin`) the end of
/// standard input. Kept across requests, so a second one during a drain is seen too.
struct StopSignals {
    /// `None` when SIGTERM cannot be watched (then only the other two stop the server).
    term: Option<tokio::signal::unix::Signal>,
    watch_stdin: bool,
    stdin_closed: bool,
}

impl StopSignals {
    fn new(watch_stdin: bool) -> StopSignals {
        StopSignals {
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
            watch_stdin,
            stdin_closed: false,
        }
    }

    /// Waits for the next stop request.
    async fn next(&mut self) -> Stop {
        let term = async {
            match &mut self.term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let watch = self.watch_stdin && !self.stdin_closed;
        let stdin_closed = async {
            if !watch {
                return std::future::pending().await;
            }
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Stop::Now,
            _ = term => Stop::Drain,
            _ = stdin_closed => {
                self.stdin_closed = true;
                Stop::Now
            }
        }
    }
}
