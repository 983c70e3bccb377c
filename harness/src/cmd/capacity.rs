//! `wirebench capacity`: for each transport, the highest open-loop rate that meets an SLO
//! (the knee), found by the search in [`crate::capacity`] over steps run one after another on
//! one server. Every step is a run of its own in `results.json` (its summary, validity and
//! histograms), the knees are in `capacity`, and the report draws latency against achieved
//! throughput for every transport on one chart, the knees marked and the SLO drawn.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use wirebench_core::tls::TlsMode;
use wirebench_core::{Method, Transport};
use wirebench_reports::results::{Results, SuiteRecord};
use wirebench_scenarios::capacity::CapacityPoint;
use wirebench_scenarios::load::{Length, LoadSpec, Pacing, Schedule};
use wirebench_scenarios::threshold::Threshold;
use wirebench_scenarios::units::{parse_duration, parse_rate, parse_size};

use crate::brokers::BrokerArgs;
use crate::capacity::{self, SearchSpec, Verdict, rate_text};
use crate::cmd::args::{KnobArgs, PlacementArgs};
use crate::cmd::load::{Choice, chosen, run_context};
use crate::environment;
use crate::exit::{FAILED, HARNESS, INTERRUPTED, bad_input};

/// Arguments of `wirebench capacity`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each transport's server is started once; the search then runs \
    open-loop steps on it: the rate doubles from --start-rate until a step misses the SLO \
    (or is not sustained), then the bracket is bisected down to --tolerance. A step whose \
    measure lies within 10% of a limit is run twice more and the majority decides. A step the \
    generator invalidated (its own lag, a busy host) is never taken as an answer: the search \
    stops there and says so.\n\n\
    Writes results.json (every step as a run, the knees under \"capacity\"), report.html \
    (latency against throughput, knees marked, SLO drawn) and summary.md into --out.\n\n\
    Exit codes: 0 every knee found, 1 a knee below --min-rate, 2 bad input, 3 a step could \
    not run or a knee could not be decided, 130 interrupted.\n\n\
    Examples:\n  \
    wirebench capacity --transport tcp,grpc,quic,nats,mqtt --slo 'p99<2ms'\n  \
    wirebench capacity --transport grpc --slo 'p99<1ms' --slo 'p99.9<5ms' --min-rate 20k\n  \
    wirebench capacity --transport tcp --server-delay 1ms --max-in-flight 8 --slo 'p99<5ms'"
)]
pub struct Args {
    /// The transports to search, separated by commas (or `all`).
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// The SLO a step must meet (repeatable), as a threshold: `p99<2ms`, `p99.9 < 10ms`.
    /// Latency counts from each request's intended start.
    #[arg(long = "slo", value_name = "LIMIT", default_value = "p99 < 1ms", value_parser = super::run::parse_threshold)]
    pub slo: Vec<Threshold>,
    /// The highest share of calls that may fail in a step that meets the SLO.
    #[arg(long, default_value = "0.1%", value_parser = parse_share)]
    pub max_errors: f64,
    /// The first rate tried.
    #[arg(long, default_value = "1k", allow_hyphen_values = true, value_parser = parse_rate)]
    pub start_rate: f64,
    /// The lowest rate the search may try.
    #[arg(long, default_value = "10", allow_hyphen_values = true, value_parser = parse_rate)]
    pub min_probe: f64,
    /// The highest rate the search may try.
    #[arg(long, default_value = "2M", allow_hyphen_values = true, value_parser = parse_rate)]
    pub max_rate: f64,
    /// Bisect until the bracket (missed - met) / met is at most this (1% to 50%).
    #[arg(long, default_value = "5%", value_parser = parse_tolerance)]
    pub tolerance: f64,
    /// Extra runs of a step within 10% of an SLO limit (0 to 4).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=4))]
    pub repeats: u32,
    /// Exit 1 when a transport's knee is below this rate (a capacity gate for CI).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_rate)]
    pub min_rate: Option<f64>,
    /// Measured time of each step.
    #[arg(long, default_value = "2s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub step: Duration,
    /// Warm-up before each step, at the step's rate (discarded).
    #[arg(long, default_value = "500ms", allow_hyphen_values = true, value_parser = parse_duration)]
    pub warmup: Duration,
    /// Request payload size.
    #[arg(long, default_value = "64", allow_hyphen_values = true, value_parser = parse_size)]
    pub payload: usize,
    /// The method: unary, server-stream, client-stream or bidi.
    #[arg(long, default_value = "unary", value_parser = super::load::method)]
    pub method: Method,
    /// Messages per stream call.
    #[arg(long, default_value_t = 10, value_parser = super::load::positive)]
    pub messages: u32,
    /// Connections in total.
    #[arg(long, default_value_t = 4, value_parser = super::load::positive)]
    pub connections: u32,
    /// Client worker threads.
    #[arg(long, default_value_t = 1, value_parser = super::load::positive)]
    pub workers: u32,
    /// How starts are spaced, constant or poisson.
    #[arg(long, default_value = "poisson", value_parser = super::load::schedule)]
    pub schedule: Schedule,
    /// How to wait for each due time: sleep or spin (see `wirebench load --help`). Sleep by
    /// default: on a small host a spinning generator takes a CPU from the server and its
    /// broker (nats p99 at 8k/s rose from 1.4-1.8 ms to 4.1-4.3 ms here).
    #[arg(long, default_value = "sleep", value_parser = super::load::pacing)]
    pub pacing: Pacing,
    /// Calls in flight at most; a due request waits for a free caller and the wait counts.
    #[arg(long, default_value_t = 256, value_parser = super::load::positive)]
    pub max_in_flight: u32,
    /// Every call asks the server to wait this long: a slower system under test on demand.
    #[arg(long, default_value = "0s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub server_delay: Duration,
    /// Seed of the Poisson schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// TLS between client and server: none, tls or mtls.
    #[arg(long, default_value_t = TlsMode::None)]
    pub tls: TlsMode,
    /// A step is not judged when the generator's lag p99 exceeds this.
    #[arg(long, default_value = "1ms", allow_hyphen_values = true, value_parser = parse_duration)]
    pub max_lag: Duration,
    /// Where servers come from and where processes run.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// The transport's client and server options.
    #[command(flatten)]
    pub knobs: KnobArgs,
    /// Brokers for broker transports.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Output folder (default: a fresh timestamped folder under target/wirebench/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_tolerance(s: &str) -> Result<f64, String> {
    let v = parse_share(s)?;
    if (0.01..=0.5).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s}: the tolerance must be between 1% and 50%"))
    }
}

impl Args {
    fn choice(&self) -> Choice<'_> {
        Choice::of(&self.transport, &self.placement, &self.knobs, &self.brokers)
    }

    /// The search the flags describe.
    fn point(&self) -> Result<CapacityPoint> {
        let search = SearchSpec {
            start: self.start_rate,
            floor: self.min_probe,
            ceiling: self.max_rate,
            factor: 2.0,
            tolerance: self.tolerance,
            repeats: self.repeats,
        };
        search.validate().map_err(|e| {
            bad_input(
                e.replace("min_probe", "--min-probe")
                    .replace("start_rate", "--start-rate")
                    .replace("max_rate", "--max-rate"),
            )
        })?;
        let slo = wirebench_scenarios::capacity::slo(&self.slo, self.max_errors)
            .map_err(|e| bad_input(format!("--slo: {e}")))?;
        let mut spec = LoadSpec {
            name: SERIES.into(),
            method: self.method,
            connections: self.connections,
            workers: self.workers,
            payload: self.payload,
            response_size: None,
            messages: self.messages,
            warmup: self.warmup,
            length: Length::Duration(self.step),
            seed: self.seed,
            timeout: None,
            stall: None,
            server_delay: self.server_delay,
            tls: self.tls,
            pacing: self.pacing,
            ..LoadSpec::default()
        };
        wirebench_scenarios::capacity::open_loop(
            &mut spec,
            self.schedule,
            self.max_in_flight,
            self.start_rate,
        );
        Ok(CapacityPoint {
            name: SERIES.into(),
            spec,
            slo,
            search,
            min_rate: self.min_rate,
            transports: None,
        })
    }
}

/// A percentage (`0.1%`) as a share (0.001).
fn parse_share(s: &str) -> Result<f64, String> {
    let t = Threshold::parse(&format!("errors < {s}")).map_err(|e| e.why)?;
    Ok(t.limit)
}

/// The series name of the command's search.
const SERIES: &str = "capacity";

/// Runs `wirebench capacity`.
pub fn run(args: Args) -> Result<ExitCode> {
    let point = args.point()?;
    let transports = chosen(&args.choice(), &point.spec)?;
    let dir = super::run::prepare_out(args.out.clone())?;
    let ctx = run_context(&args.choice(), args.max_lag, &transports, None)?;
    let mut results = Results::new(
        format!("wirebench {}", env!("CARGO_PKG_VERSION")),
        environment::now_rfc3339(),
        environment::collect(),
        SuiteRecord {
            name: "capacity".into(),
            description: format!(
                "capacity under {} ({} {}B, {} connections, steps of {} after {} warm-up)",
                point.slo_text(),
                args.method.name(),
                args.payload,
                args.connections,
                wirebench_scenarios::units::format_duration(args.step),
                wirebench_scenarios::units::format_duration(args.warmup),
            ),
            source: "command line".into(),
            toml: String::new(),
        },
    );
    results.transports = transports.iter().map(|t| t.name().to_owned()).collect();
    let path = dir.join("results.json");
    let interrupted = || ctx.interrupted.load(Ordering::SeqCst);
    println!(
        "capacity under {} — {} transport(s), writing {}",
        point.slo_text(),
        transports.len(),
        dir.display()
    );
    for t in &transports {
        if interrupted() {
            break;
        }
        let name = t.name();
        // Every step is saved as it finishes: an interruption keeps what ran.
        let searched = capacity::search_transport(&point, *t, &ctx, |run, probe| {
            println!(
                "  {name:<6} {:>10}  {:<8}  {}",
                rate_text(run.step.as_ref().map_or(0.0, |s| s.value)),
                match probe.verdict {
                    Verdict::Met => "met",
                    Verdict::Missed => "missed",
                    Verdict::Unjudged => "UNJUDGED",
                },
                probe.why
            );
            results.runs.push(run.clone());
            results.save(&path)?;
            Ok(())
        });
        println!("{name:<6} {}", searched.record.verdict);
        results.capacity.push(searched.record);
        results.errors.extend(searched.failure);
        results.save(&path)?;
    }
    results.interrupted = interrupted();
    results.complete = !results.interrupted && results.errors.is_empty();
    results.finished_at = Some(environment::now_rfc3339());
    results.save(&path)?;
    let rendered = wirebench_reports::render_all(&results, &dir)?;
    println!("\n{}", knee_table(&results));
    println!("results: {}", path.display());
    println!("report:  {}", rendered.html.display());
    println!("summary: {}", rendered.summary.display());
    Ok(exit_code(&results))
}

/// The knees side by side.
fn knee_table(results: &Results) -> String {
    let mut out = format!(
        "{:<10} {:>12} {:>12} {:>8}  {}\n",
        "transport", "knee", "missed at", "steps", "outcome"
    );
    for c in &results.capacity {
        out.push_str(&format!(
            "{:<10} {:>12} {:>12} {:>8}  {}\n",
            c.transport,
            c.knee_per_s.map_or("-".into(), rate_text),
            c.missed_per_s.map_or("-".into(), rate_text),
            c.steps.iter().map(|s| s.runs).sum::<u32>(),
            c.outcome
        ));
    }
    out
}

/// 130 interrupted, 3 a step failed or a knee was not decided, 1 a knee below `min_rate`.
fn exit_code(results: &Results) -> ExitCode {
    if results.interrupted {
        return ExitCode::from(INTERRUPTED);
    }
    let undecided: Vec<&str> = results
        .capacity
        .iter()
        .filter(|c| {
            !matches!(
                c.outcome.as_str(),
                "found" | "above-ceiling" | "below-floor"
            )
        })
        .map(|c| c.transport.as_str())
        .collect();
    if !undecided.is_empty() {
        eprintln!(
            "error: no knee decided for {} (see the verdicts above)",
            undecided.join(", ")
        );
        return ExitCode::from(HARNESS);
    }
    let below: Vec<String> = results
        .capacity
        .iter()
        .filter_map(capacity::below_min)
        .collect();
    if !below.is_empty() {
        for b in below {
            eprintln!("capacity below --min-rate: {b}");
        }
        return ExitCode::from(FAILED);
    }
    ExitCode::SUCCESS
}
