//! `wirebench floor`: the loopback floor, optionally next to transports measured the same way
//! in the same run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use wirebench_transports::Transport;
use wirebench_transports::registry::AnyTransport;

use crate::affinity::Pin;
use crate::brokers::{Availability, BrokerArgs, availability};
use crate::exit::bad_input;
use crate::floor::{
    LatencySummary, Probe, ProbeConfig, measure_floor, measure_nats_baseline, measure_transport_on,
};

/// Arguments of `wirebench floor`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wirebench floor\n  wirebench floor --vs tcp,inproc --pin same --duration 5s\n  wirebench floor --vs nats,tcp --in-flight 64\n\nWith nats, the row nats-min is the yardstick: a minimal plain async-nats\nrequest/reply pair on its own private broker. Brokers run as their own process,\nunpinned."
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
    /// Calls in flight on each transport's one connection (the floor stays at one).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Brokers for broker transports.
    #[command(flatten)]
    pub brokers: BrokerArgs,
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
    let rate = s.count as f64 / p.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{:<9} {:>9} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}x  client {} / server {}",
        p.name,
        s.count,
        rate,
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
    let transports = match args.vs.as_deref() {
        Some(list) => super::parse_transports(Some(list))?,
        None => Vec::new(),
    };
    if args.in_flight == 0 {
        return Err(bad_input("--in-flight must be at least 1"));
    }
    args.brokers.validate()?;
    let cfg = ProbeConfig {
        payload: args.payload,
        duration: args.duration,
        warmup: args.warmup,
        pin: args.pin,
        in_flight: args.in_flight,
    };
    let floor = measure_floor(&ProbeConfig {
        in_flight: 1,
        ..cfg
    })?;
    let floor_p50 = floor.histogram.value_at_quantile(0.5);
    println!(
        "{} B each way, {:?} per probe, pin {:?}; floor: 1 in flight, transports: {} in flight \
         on one connection",
        args.payload, args.duration, args.pin, args.in_flight
    );
    println!(
        "{:<9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}  cpus",
        "probe",
        "calls",
        "calls/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "p50/floor"
    );
    print_row(&floor, floor_p50);
    let mut failed = false;
    for t in transports {
        match availability(&t, &args.brokers) {
            Availability::Ready => {}
            Availability::Skipped(why) => {
                println!("skipped {why}");
                continue;
            }
            Availability::Missing(why) => {
                println!("FAIL {why}");
                failed = true;
                continue;
            }
        }
        let p = measure_transport_on(t, &cfg, args.brokers.server_config(&t))?;
        print_row(&p, floor_p50);
        if let AnyTransport::Nats(_) = t {
            let url = args.brokers.url_for(&t).map(str::to_owned);
            let b = measure_nats_baseline(&cfg, url)?;
            print_row(&b, floor_p50);
            let (ours, theirs) = (
                LatencySummary::of(&p.histogram),
                LatencySummary::of(&b.histogram),
            );
            println!(
                "          {} vs nats-min: p50 {:.2}x, calls/s {:.2}x",
                t.name(),
                ours.p50_ns as f64 / theirs.p50_ns.max(1) as f64,
                (ours.count as f64 / p.elapsed.as_secs_f64())
                    / (theirs.count as f64 / b.elapsed.as_secs_f64()).max(1e-9),
            );
        }
    }
    Ok(if failed {
        ExitCode::from(crate::exit::FAILED)
    } else {
        ExitCode::SUCCESS
    })
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
