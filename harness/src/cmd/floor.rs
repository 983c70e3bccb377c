//! `wirebench floor`: the loopback floor, optionally next to transports measured the same way
//! in the same run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::affinity::Pin;
use crate::floor::{LatencySummary, Probe, ProbeConfig, measure_floor, measure_transport};

/// Arguments of `wirebench floor`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wirebench floor\n  wirebench floor --vs tcp,inproc --pin same --duration 5s"
)]
pub struct Args {
    /// Measured time per probe (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up per probe, run first and discarded.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bytes per message, each way.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// CPU placement of the two sides: none (scheduler decides), same (both on CPU 0),
    /// split (client CPU 0, server CPU 1).
    #[arg(long, value_enum, default_value_t = Pin::None)]
    pub pin: Pin,
    /// Also measure these transports (comma-separated) the same way: unary calls, one in
    /// flight, server on its own thread.
    #[arg(long)]
    pub vs: Option<String>,
}

pub use wirebench_scenarios::units::parse_duration;

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn print_row(p: &Probe, floor_p50: u64) {
    let s = LatencySummary::of(&p.histogram);
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}x  client {} / server {}",
        p.name,
        s.count,
        us(s.p50_ns),
        us(s.p90_ns),
        us(s.p99_ns),
        us(s.p999_ns),
        us(s.max_ns),
        s.p50_ns as f64 / floor_p50.max(1) as f64,
        p.client_cpus,
        p.server_cpus,
    );
}

/// Runs `wirebench floor`.
pub fn run(args: Args) -> Result<ExitCode> {
    let transports = super::parse_transports(args.vs.as_deref().or(Some("")))?;
    let transports = if args.vs.is_some() {
        transports
    } else {
        Vec::new()
    };
    let cfg = ProbeConfig {
        payload: args.payload,
        duration: args.duration,
        warmup: args.warmup,
        pin: args.pin,
    };
    let floor = measure_floor(&cfg)?;
    let floor_p50 = floor.histogram.value_at_quantile(0.5);
    println!(
        "one message in flight, {} B each way, {:?} per probe, pin {:?}",
        args.payload, args.duration, args.pin
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}  cpus",
        "probe", "calls", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "p50/floor"
    );
    print_row(&floor, floor_p50);
    for t in transports {
        let p = measure_transport(t, &cfg)?;
        print_row(&p, floor_p50);
    }
    Ok(ExitCode::SUCCESS)
}
