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

/// Arguments of `wirebench proxy`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Runs the fault proxy in front of any TCP or UDP service until interrupted.\n\n\
Fault specs are KIND[:PARAM][,key=value...]; common keys: dir=up|down|both (up = client to \
server, default both) and p=PROBABILITY (0..1 or a percentage) per chunk/packet, or per \
connection for reset, refuse, blackhole, limit and slow-close.\n\n\
TCP and UDP:\n\
  latency:50ms[,jitter=5ms,dist=uniform|normal|pareto]   delay each chunk/packet\n\
  bandwidth:1mbit                                        cap throughput (kbit, mbit, gbit, kb, mb, b /s)\n\
  blackhole                                              accept and read, never forward\n\
TCP only:\n\
  slicer:size=1[,delay=1ms]                              forward in writes of at most SIZE bytes\n\
  limit:4096                                             close the connection after N bytes\n\
  reset[:after=2s]                                       reset (RST) the connection after a while\n\
  slow-close:1s                                          hold a half-close (FIN) back\n\
  refuse                                                 refuse new connections\n\
UDP only:\n\
  loss:5%  or  loss:ge,p=1%,r=30%[,good=0,bad=100%]      random or bursty (Gilbert-Elliott) loss\n\
  duplicate[,p=1%]  reorder[:5ms][,p=5%]  corrupt[,p=1%]\n\n\
While it runs, type on stdin: `set SPEC [SPEC...]` to replace the faults, `clear` to remove \
them, `stats` to print the counters. Counters are printed every --stats-every and at exit.",
    after_help = "Examples:\n  wirebench proxy --listen 127.0.0.1:7000 --upstream 127.0.0.1:50051 --fault latency:50ms,dir=down\n  wirebench proxy --udp --listen 127.0.0.1:7001 --upstream 127.0.0.1:4433 --fault loss:2% --fault reorder,p=1%"
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
    /// A fault to apply (repeatable); see above for the syntax.
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
    rt.block_on(async move {
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
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => eprintln!("{:?}", proxy.counters()),
                line = lines.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => command(&proxy, line.trim()),
                    _ => stdin_open = false,
                },
            }
        }
        println!("{}", serde_json::to_string(&proxy.counters())?);
        Ok(ExitCode::SUCCESS)
    })
}

fn command(proxy: &Proxy, line: &str) {
    let mut words = line.split_whitespace();
    match words.next() {
        None => {}
        Some("stats") => eprintln!("{:?}", proxy.counters()),
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
