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
    after_help = "Examples:\n  wirebench floor\n  wirebench floor --vs tcp,inproc --pin same --duration 5s\n  wirebench floor --vs tcp,grpc,quic --inflight 64"
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
    /// Also measure these transports (comma-separated) the same way: unary calls, server on
    /// its own thread.
    #[arg(long)]
    pub vs: Option<String>,
    /// Unary calls in flight at once on the transports' one connection (the floor stays at
    /// one message in flight); above 1 the p50/floor ratio compares unlike things.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub inflight: u64,
}

/// Parses `3s`, `250ms`, `1.5s`, `2m`, `10us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: missing unit (ns, us, ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?}: must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn print_row(p: &Probe, floor_p50: u64) {
    let s = LatencySummary::of(&p.histogram);
    let cpu = match p.cpu_us_per_call() {
        Some((c, sv)) => format!("{c:>8.1} {sv:>8.1}"),
        None => format!("{:>8} {:>8}", "-", "-"),
    };
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}x {:>10.0} {cpu}  client {} / server {}",
        p.name,
        s.count,
        us(s.p50_ns),
        us(s.p90_ns),
        us(s.p99_ns),
        us(s.p999_ns),
        us(s.max_ns),
        s.p50_ns as f64 / floor_p50.max(1) as f64,
        p.throughput(),
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
        inflight: usize::try_from(args.inflight).unwrap_or(usize::MAX),
    };
    let floor = measure_floor(&cfg)?;
    let floor_p50 = floor.histogram.value_at_quantile(0.5);
    println!(
        "floor: one message in flight; transports: {} in flight on one connection; {} B each \
         way, {:?} per probe, pin {:?}",
        args.inflight, args.payload, args.duration, args.pin
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>8} {:>8}  cpus",
        "probe",
        "calls",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "p50/floor",
        "calls/s",
        "cli µs/c",
        "srv µs/c"
    );
    print_row(&floor, floor_p50);
    for t in transports {
        let p = measure_transport(t, &cfg)?;
        print_row(&p, floor_p50);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
