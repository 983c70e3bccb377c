//! `wirebench floor`: the loopback floor, optionally next to transports measured the same way
//! in the same run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use wirebench_core::{Transport, YardstickConfig};
use wirebench_transports::AnyTransport;

use crate::affinity::Pin;
use crate::brokers::{Availability, BrokerArgs, availability};
use crate::exit::bad_input;
use crate::floor::{
    LatencySummary, Probe, ProbeConfig, measure_floor, measure_host_gaps, measure_plain,
    measure_transport_on, measure_yardstick,
};

/// Arguments of `wirebench floor`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  wirebench floor\n  wirebench floor --vs tcp,inproc --pin same --duration 5s\n  wirebench floor --vs nats,tcp --in-flight 64\n\nWith nats, two more rows compare it with its yardstick through one plain client\nloop: nats* (our transport) and nats-min* (a minimal plain async-nats\nrequest/reply pair on its own private broker). Brokers run as their own\nprocess, unpinned. With tcp (and --in-flight 1), tcp* is shown next to\ntokio-min*: the floor's ping-pong on tokio current-thread runtimes, no framing\n(what an async runtime alone adds to the floor). With quic, quinn-min* is stock\nquinn with one stream per call and the raw payload; with grpc, tonic-min* is\ntonic's stock generated server and Channel client (a one-method .proto)."
)]
pub struct Args {
    /// Measured time per probe (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up per probe, run first and discarded.
    #[arg(long, default_value = "500ms", allow_hyphen_values = true, value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bytes per message, each way (e.g. 64, 2KiB).
    #[arg(long, default_value = "64", allow_hyphen_values = true, value_parser = parse_size)]
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

use wirebench_scenarios::units::{parse_duration, parse_size};

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn print_row(p: &Probe, floor_p50: u64) {
    let s = LatencySummary::of(&p.histogram);
    let rate = s.count as f64 / p.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{:<10} {:>9} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}x  client {} / server {}",
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

/// `transport` measured as the floor was (the load engine, then the plain client loop), and
/// beside its yardstick when it declares one for this measurement.
fn measure_beside(
    t: AnyTransport,
    cfg: &ProbeConfig,
    brokers: &BrokerArgs,
    floor_p50: u64,
) -> Result<()> {
    let p = measure_transport_on(t, cfg, brokers.server_config(&t))?;
    print_row(&p, floor_p50);
    // The same transport through a plain client loop (calls in one runtime task, no
    // schedule, no recorder): the gap between the two rows is the load engine's own cost.
    let ours = measure_plain(t, cfg, brokers.server_config(&t))?;
    print_row(&ours, floor_p50);
    // The like-for-like pair: ours and the transport's own yardstick through the same
    // plain loop (a transport declares whether it has one for this measurement).
    let ycfg = YardstickConfig {
        payload: cfg.payload,
        in_flight: cfg.in_flight,
        broker_url: brokers.url_for(&t).map(str::to_owned),
    };
    let yardstick = t
        .yardstick(&ycfg)
        .map(|y| measure_yardstick(y, cfg))
        .transpose()?;
    if let Some(min) = yardstick {
        print_row(&min, floor_p50);
        let (o, m) = (
            LatencySummary::of(&ours.histogram),
            LatencySummary::of(&min.histogram),
        );
        println!(
            "          {} vs {}: p50 {:.2}x, calls/s {:.2}x   (* = plain client loop, \
                 not the load engine)",
            ours.name,
            min.name,
            o.p50_ns as f64 / m.p50_ns.max(1) as f64,
            (o.count as f64 / ours.elapsed.as_secs_f64())
                / (m.count as f64 / min.elapsed.as_secs_f64()).max(1e-9),
        );
    }
    Ok(())
}

/// The host's own jitter on the CPUs the floor ran on: the limit of any pacing here.
fn print_host_gaps(floor: &Probe) -> Result<()> {
    for cpu in floor
        .client_cpus
        .0
        .iter()
        .chain(&floor.server_cpus.0)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let g = measure_host_gaps(*cpu, Duration::from_secs(1))?;
        println!(
            "host: a thread spinning 1 s on CPU {cpu} lost {:.2}% of it in {} gaps over 10 µs \
             ({:.0}/s over 50 µs, {} over 100 µs, longest {} µs)",
            g.lost_ns as f64 * 100.0 / g.spun_ns.max(1) as f64,
            g.over_10us,
            g.over_50us_per_s(),
            g.over_100us,
            us(g.longest_ns),
        );
    }
    Ok(())
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
        "{} B each way, {:?} per probe, pin {}; floor: 1 in flight, transports: {} in flight \
         on one connection",
        args.payload,
        args.duration,
        args.pin.name(),
        args.in_flight
    );
    println!(
        "{:<10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}  cpus",
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
    let mut measured_any = false;
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
        measure_beside(t, &cfg, &args.brokers, floor_p50)?;
        measured_any = true;
    }
    print_host_gaps(&floor)?;
    if measured_any {
        println!(
            "name* = the transport through a plain client loop (calls in one spawned task, no \
             schedule, no recorder); without * = the load engine's closed loop"
        );
    }
    Ok(if failed {
        ExitCode::from(crate::exit::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
