//! `wirebench load`: one ad-hoc load point against one transport (a summary on the terminal)
//! or against several in turn (one table side by side), and optionally the full records as a
//! results file (`--json`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wirebench_tls::TlsMode;

use anyhow::Result;
use wirebench_core::{Capability, Method, Transport};
use wirebench_reports::results::{Results, RunFailure, RunRecord, StepInfo, SuiteRecord};
use wirebench_scenarios::load::{
    Length, LoadSpec, Mode, Pacing, Ramp, RampShape, Schedule, Stage, Stall,
};
use wirebench_scenarios::steps::{Knob, Place, Steps, expand, is_range};
use wirebench_scenarios::suite::ValiditySpec;
use wirebench_scenarios::units::{parse_duration, parse_rate, parse_size};

use std::sync::Arc;

use wirebench_transports::AnyTransport;

use crate::brokers::{Availability, BrokerArgs, availability};
use crate::cmd::args::{KnobArgs, PlacementArgs};
use crate::cmd::serve::parse_options;
use crate::cmd::side_by_side;
use crate::exit::bad_input;
use crate::run::events::{EventBus, RunEvent, StepResult};
use crate::run::{executor, reporters};
use crate::runner::{PlacedServer, RunContext, run_on, run_point};
use crate::shard::Shard;
use crate::{environment, interrupt};

pub(crate) fn method(s: &str) -> Result<Method, String> {
    Method::parse(s)
        .ok_or_else(|| format!("{s:?}: expected unary, server-stream, client-stream or bidi"))
}

/// `--start-at`: RFC 3339 (UTC) or unix milliseconds.
fn start_time(s: &str) -> Result<std::time::SystemTime, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = t.parse().map_err(|e| format!("{t:?}: {e}"))?;
        return Ok(std::time::UNIX_EPOCH + Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(t).map_err(|e| {
        format!("{t:?}: expected RFC 3339 in UTC (2026-12-08T10:00:00Z) or unix milliseconds: {e}")
    })
}

/// `--stages` as given: one value holding every stage (clap would read a bare `Vec` as a
/// repeatable flag).
#[derive(Clone, Debug, PartialEq)]
pub struct Stages(pub Vec<Stage>);

fn stages(s: &str) -> Result<Stages, String> {
    Ramp::parse_stages(s).map(Stages)
}

fn ramp_shape(s: &str) -> Result<RampShape, String> {
    RampShape::parse(s).ok_or_else(|| format!("{s:?}: expected linear or step"))
}

pub(crate) fn pacing(s: &str) -> Result<Pacing, String> {
    Pacing::parse(s).ok_or_else(|| format!("{s:?}: expected sleep or spin"))
}

pub(crate) fn schedule(s: &str) -> Result<Schedule, String> {
    Schedule::parse(s).ok_or_else(|| format!("{s:?}: expected constant or poisson"))
}

pub(crate) fn positive(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!("{s:?}: expected a whole number of at least 1")),
        Ok(n) => Ok(n),
    }
}

fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("{s:?}: expected a whole number of at least 1")),
        Ok(n) => Ok(n),
    }
}

/// Arguments of `wirebench load`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    wirebench load --transport tcp --concurrency 1 --duration 5s\n  \
    wirebench load --transport tcp --rate 20k --schedule poisson --connections 4 --duration 10s\n  \
    wirebench load --transport tcp --method bidi --messages 100 --concurrency 4 --duration 5s\n  \
    wirebench load --transport tcp,grpc,quic --rate 5k --duration 5s --json side-by-side.json\n  \
    wirebench load --transport tcp --rate 500 --max-in-flight 1 --stall-at 1s --stall-for 500ms --duration 3s\n  \
    wirebench serve --transport tcp --listen 127.0.0.1:7000 &\n  \
    wirebench load --transport tcp --target 127.0.0.1:7000 --rate 5000 --duration 10s --json run.json")]
#[command(group(clap::ArgGroup::new("loop").args(["rate", "concurrency"])))]
pub struct Args {
    /// The transport to load, or several separated by commas (`tcp,grpc,quic`, or `all`):
    /// the same point runs on each in turn and one table puts them side by side.
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// Open loop: requests per second in total (e.g. 5000, 2.5k). Latency is measured from
    /// each request's intended start. A range (1k..20k) with --step runs one step per rate.
    #[arg(long, allow_hyphen_values = true, value_parser = rate_level)]
    pub rate: Option<Level>,
    /// Closed loop: calls in flight in total, each waiting for its answer. Without --rate or
    /// --concurrency the loop is closed with 1 call in flight. A range (1..64) with --step
    /// runs one step per concurrency.
    #[arg(long, value_parser = concurrency_level)]
    pub concurrency: Option<Level>,
    /// With a --rate or --concurrency range: the spacing of the steps, added (5k, 8) or
    /// multiplied (x2). Every step runs on the same server, with its own warm-up, and is a
    /// run of its own (named POINT@VALUE) with its own summary and verdict.
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Open loop: a ramp of stages, RATE:DURATION each (`1k:5s,20k:30s,20k:1m`), run as one
    /// point whose rate moves through them (see --ramp); each stage is summarised on its own.
    /// The measured time is the stages' total. A linear ramp starts at --rate (default: the
    /// first stage's rate).
    #[arg(long, value_name = "STAGES", value_parser = stages, conflicts_with_all = ["concurrency", "duration", "requests", "step"])]
    pub stages: Option<Stages>,
    /// How the rate moves within a stage: linear (from the previous stage's rate) or step.
    #[arg(long, default_value = "linear", value_parser = ramp_shape, requires = "stages")]
    pub ramp: RampShape,
    /// Measured time (e.g. 10s, 500ms), of each step when stepping (--every says the same);
    /// the default when --requests is not given is 5s.
    #[arg(long, visible_alias = "every", allow_hyphen_values = true, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure this many calls instead of a duration.
    #[arg(long, value_parser = positive_u64)]
    pub requests: Option<u64>,
    /// Request payload size (e.g. 64, 16KiB, 1MiB).
    #[arg(long, default_value = "64", allow_hyphen_values = true, value_parser = parse_size)]
    pub payload: usize,
    /// Response payload size (default: echo the request's).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size)]
    pub response_size: Option<usize>,
    /// The method: unary, server-stream, client-stream or bidi.
    #[arg(long, default_value = "unary", value_parser = method)]
    pub method: Method,
    /// Messages per stream call: responses (server-stream), requests (client-stream) or
    /// round trips (bidi).
    #[arg(long, default_value_t = 10, value_parser = positive)]
    pub messages: u32,
    /// Connections in total (spread over the workers).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub connections: u32,
    /// Client worker threads, each with its own single-threaded runtime.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub workers: u32,
    /// Open loop: how starts are spaced, constant or poisson.
    #[arg(long, default_value = "poisson", value_parser = schedule)]
    pub schedule: Schedule,
    /// Open loop: how to wait for each due time. sleep: a timer, then yielding through the
    /// last 50 µs (cheap; lag p99 as the host's wake-ups allow). spin: never sleep (lag p99
    /// of 12-15 µs at 2k/s here, for a whole CPU per worker, taken from the system under test
    /// on a small host).
    #[arg(long, default_value = "sleep", value_parser = pacing)]
    pub pacing: Pacing,
    /// Open loop: calls in flight at most; a due request waits for a free caller and the
    /// wait counts in its latency.
    #[arg(long, default_value_t = 1024, value_parser = positive)]
    pub max_in_flight: u32,
    /// Run first and discard.
    #[arg(long, default_value = "1s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub warmup: Duration,
    /// Seed of the Poisson schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-call deadline (default: none).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Make the server stall once: the call started this long into the measured phase asks
    /// the server to wait --stall-for before answering.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_duration, requires = "stall_for")]
    pub stall_at: Option<Duration>,
    /// How long the injected stall lasts.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_duration, requires = "stall_at")]
    pub stall_for: Option<Duration>,
    /// Every call asks the server to wait this long before answering: a slow system under
    /// test on demand (e.g. 1ms), to see what an open loop it cannot sustain looks like.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_duration, default_value = "0s")]
    pub server_delay: Duration,
    /// TLS between client and server: none, tls (TLS 1.3) or mtls (mutual TLS), with a
    /// throwaway CA and certificates generated for the run.
    #[arg(long, default_value_t = TlsMode::None, )]
    pub tls: TlsMode,
    /// Where the server comes from and where processes run.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// The transport's client and server options.
    #[command(flatten)]
    pub knobs: KnobArgs,
    /// Mark the run invalid when the generator's lag p99 exceeds this.
    #[arg(long, default_value = "1ms", allow_hyphen_values = true, value_parser = parse_duration)]
    pub max_lag: Duration,
    /// Write the full record (a results file with this one run) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Brokers for broker transports (without one, the server starts a private broker).
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Plain progress: one line per interval, even on a terminal (else a bar with the live
    /// figures beneath it).
    #[arg(long)]
    pub plain: bool,
    /// No progress at all, and no live figures computed: only the summary at the end (for
    /// scripts, and to measure what the live view costs).
    #[arg(long, conflicts_with = "plain")]
    pub quiet: bool,
    /// This generator is shard I of --shard-count equal shards of the run: it takes its
    /// exact share of the rate, connections and calls in flight (integer shares that add up
    /// to the whole) and a seed of its own. Absent, the index comes from JOB_COMPLETION_INDEX
    /// (Kubernetes Indexed Job), SLURM_PROCID or NOMAD_ALLOC_INDEX when --shard-count is given.
    #[arg(long, value_name = "I")]
    pub shard_index: Option<u32>,
    /// How many equal shards make the run (explicit: never guessed from the environment).
    #[arg(long, value_name = "N")]
    pub shard_count: Option<u32>,
    /// k6's form of a shard: this generator's segment of the whole, FROM:TO as fractions
    /// (`0:1/3`, `1/3:2/3`, `0.5:1`).
    #[arg(long, value_name = "FROM:TO")]
    pub execution_segment: Option<String>,
    /// A coordinated start: the warm-up begins at this wall-clock time (RFC 3339 in UTC,
    /// `2026-12-08T10:00:00Z`, or unix milliseconds), so shards started apart run together.
    /// Missed by more than --start-grace, the command exits 75 without running.
    #[arg(long, value_name = "TIME", value_parser = start_time)]
    pub start_at: Option<std::time::SystemTime>,
    /// How late --start-at may be met (the start skew is recorded either way).
    #[arg(long, default_value = "1s", allow_hyphen_values = true, value_parser = parse_duration, requires = "start_at")]
    pub start_grace: Duration,
    /// An absolute limit the run must keep (repeatable): `p99 < 1ms`, `errors < 0.1%`,
    /// `throughput > 4500/s`, `cpu-server < 20us`. A breach exits 1.
    #[arg(long = "threshold", value_name = "LIMIT", value_parser = super::run::parse_threshold)]
    pub thresholds: Vec<wirebench_scenarios::threshold::Threshold>,
}

/// A step's place as `results.json` records it.
pub(crate) fn step_info(p: &Place) -> StepInfo {
    StepInfo {
        series: p.series.clone(),
        knob: p.knob.name().into(),
        value: p.value,
        index: p.index,
    }
}

/// A `--rate` or `--concurrency`: one value, or a range to step through.
#[derive(Clone, Debug, PartialEq)]
pub enum Level {
    /// One value.
    One(f64),
    /// `FROM..TO`, read with `--step` (see [`wirebench_scenarios::steps`]).
    Range(String),
}

impl Level {
    /// The value, or a range's first.
    fn first(&self, knob: Knob) -> f64 {
        match self {
            Level::One(v) => *v,
            Level::Range(r) => Steps::parse(knob, r, Some("x2")).map_or(1.0, |s| s.from),
        }
    }
}

fn rate_level(s: &str) -> Result<Level, String> {
    if is_range(s) {
        Ok(Level::Range(s.to_owned()))
    } else {
        parse_rate(s).map(Level::One).map_err(|e| e.to_string())
    }
}

fn concurrency_level(s: &str) -> Result<Level, String> {
    if is_range(s) {
        Ok(Level::Range(s.to_owned()))
    } else {
        positive(s).map(|n| Level::One(f64::from(n)))
    }
}

impl Args {
    /// The stepped schedule, when --rate or --concurrency is a range.
    fn steps(&self) -> Result<Option<Steps>> {
        let (knob, range) = match (&self.rate, &self.concurrency) {
            (Some(Level::Range(r)), _) => (Knob::Rate, r),
            (_, Some(Level::Range(r))) => (Knob::Concurrency, r),
            _ => {
                return match &self.step {
                    Some(s) => Err(bad_input(format!(
                        "--step {s}: steps need a range to step through (--rate 1k..20k or \
                         --concurrency 1..64)"
                    ))),
                    None => Ok(None),
                };
            }
        };
        let flag = match knob {
            Knob::Rate => "--rate",
            Knob::Concurrency => "--concurrency",
        };
        Steps::parse(knob, range, self.step.as_deref())
            .map(Some)
            .map_err(|e| bad_input(format!("{flag} {e}")))
    }

    fn spec(&self) -> LoadSpec {
        let ramp = self.stages.as_ref().map(|stages| Ramp {
            shape: self.ramp,
            stages: stages.0.clone(),
        });
        let mode = match (&self.rate, &self.concurrency, &ramp) {
            (Some(rate), _, _) => Mode::Open {
                rate: rate.first(Knob::Rate),
                schedule: self.schedule,
                max_in_flight: self.max_in_flight,
            },
            (None, _, Some(r)) => Mode::Open {
                rate: r.stages[0].rate,
                schedule: self.schedule,
                max_in_flight: self.max_in_flight,
            },
            (None, c, None) => Mode::Closed {
                concurrency: c.as_ref().map_or(1, |c| c.first(Knob::Concurrency) as u32),
            },
        };
        LoadSpec {
            name: "load".into(),
            method: self.method,
            mode,
            connections: self.connections,
            workers: self.workers,
            payload: self.payload,
            response_size: self.response_size,
            messages: self.messages,
            warmup: self.warmup,
            length: match (&ramp, self.requests, self.duration) {
                (Some(r), _, _) => Length::Duration(r.total()),
                (None, Some(n), _) => Length::Requests(n),
                (None, None, d) => Length::Duration(d.unwrap_or(Duration::from_secs(5))),
            },
            seed: self.seed,
            timeout: self.timeout,
            stall: match (self.stall_at, self.stall_for) {
                (Some(at), Some(duration)) => Some(Stall { at, duration }),
                _ => None,
            },
            server_delay: self.server_delay,
            tls: self.tls,
            pacing: self.pacing,
            ramp,
        }
    }
}

/// Nanoseconds as µs, or ms from 10 ms up: the terminal's one time format.
pub(crate) fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// The terminal summary of one run.
pub fn summary_text(r: &RunRecord) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let p = &r.params;
    out.push_str(&format!(
        "{} {} — {} {} loop, {} B, server {} ({})\n",
        r.transport,
        r.point,
        p.method,
        p.mode,
        p.payload_bytes,
        r.server.placement,
        r.server.endpoint
    ));
    out.push_str(&format!(
        "  calls {} in {:.2} s: {:.0} calls/s",
        s.calls, s.elapsed_s, s.throughput_per_s
    ));
    if s.messages_sent + s.messages_received > 0 {
        out.push_str(&format!(", {:.0} msgs/s", s.messages_per_s));
    }
    out.push('\n');
    if let Some(o) = &s.offered {
        out.push_str(&offered_line(o));
    }
    let row = |name: &str, l: &wirebench_reports::results::LatencySummary| {
        format!(
            "  {name:<14} p50 {:>10}  p90 {:>10}  p99 {:>10}  p99.9 {:>10}  p99.99 {:>10}  max {:>10}\n",
            us(l.p50_ns),
            us(l.p90_ns),
            us(l.p99_ns),
            us(l.p999_ns),
            us(l.p9999_ns),
            us(l.max_ns)
        )
    };
    let label = if p.mode == "open" {
        "latency*"
    } else {
        "latency"
    };
    out.push_str(&row(label, &s.latency));
    if let Some(l) = s
        .offered
        .as_ref()
        .and_then(|o| o.latency_with_unsent.as_ref())
    {
        out.push_str(&row("with unsent ≥", l));
    }
    if let Some(l) = &s.service_time {
        out.push_str(&row("service time", l));
    }
    if let Some(l) = &s.generator_lag {
        out.push_str(&row("generator lag", l));
    }
    if let Some(l) = &s.message_latency {
        out.push_str(&row("per message", l));
    }
    if p.mode == "open" {
        out.push_str(
            "  * of the calls sent, from each request's intended start (coordinated omission \
             corrected)\n",
        );
    }
    let codes: Vec<String> = s
        .status_counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out.push_str(&format!("  status: {}", codes.join(", ")));
    if s.incomplete > 0 {
        out.push_str(&format!(", {} unanswered", s.incomplete));
    }
    out.push('\n');
    let server_cpu = s
        .server
        .as_ref()
        .map_or("n/a".to_owned(), |u| format!("{:.1}", u.cpu_us_per_call));
    out.push_str(&format!(
        "  CPU µs/call: client {:.1}, server {server_cpu}; client CPUs [{}]",
        s.client.cpu_us_per_call,
        s.client
            .cpus
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ));
    if let Some(srv) = &s.server {
        out.push_str(&format!(
            ", server CPUs [{}]",
            srv.cpus
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    out.push('\n');
    out.push_str(&match &s.bytes {
        Some(b) => format!(
            "  wire bytes/call: sent {:.0}, received {:.0}\n",
            b.sent_per_call, b.received_per_call
        ),
        None => format!(
            "  wire bytes/call: not measured: {}\n",
            s.bytes_not_measured
                .as_deref()
                .unwrap_or("the results file does not say why")
        ),
    });
    if let Some(h) = &s.host {
        out.push_str(&format!(
            "  host: other processes used {:.2} of {} CPUs, {:.0} ms stolen\n",
            h.other_cpus, h.cpus, h.steal_ms
        ));
    }
    out.push_str(&validity_lines(&r.validity));
    for t in &r.thresholds {
        let verdict = if t.passed { "ok" } else { "BREACHED" };
        out.push_str(&format!(
            "  threshold {}: {} {verdict}\n",
            t.threshold, t.measured
        ));
    }
    out
}

/// An open loop's schedule accounted for: due = sent + never sent.
fn offered_line(o: &wirebench_reports::results::OfferedLoad) -> String {
    let mut line = format!(
        "  offered {:.0}/s: {} requests due, {} sent",
        o.rate_per_s, o.due, o.sent
    );
    if o.unsent > 0 {
        line.push_str(&format!(", {} NEVER SENT", o.unsent));
    }
    line.push_str(&format!("; achieved {:.0}/s\n", o.achieved_per_s));
    line
}

/// The verdict: `valid`, or each reason it is not, then the notes.
fn validity_lines(v: &wirebench_reports::results::Validity) -> String {
    let mut out = String::new();
    if v.valid {
        out.push_str("  valid\n");
    }
    if let Some(why) = &v.unsustained {
        out.push_str(&format!("  UNSUSTAINED: {why}\n"));
    }
    for reason in &v.reasons {
        out.push_str(&format!("  INVALID: {reason}\n"));
    }
    for note in &v.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

/// Runs `wirebench load`: one point on each transport named, with a bar and its live
/// figures (or one line per interval), then the summary (one transport) or a table side by
/// side (several).
pub fn run(args: Args) -> Result<ExitCode> {
    let spec = args.spec();
    let stepped = args.steps()?;
    let transports = chosen(&args.choice(), &spec)?;
    check_parent("--json", args.json.as_deref())?;
    // The points to run on each transport: the one point, or its steps.
    let points: Vec<(LoadSpec, Option<StepInfo>)> = match &stepped {
        None => vec![(spec.clone(), None)],
        Some(steps) => expand(&spec, steps)
            .map_err(|e| bad_input(e.to_string()))?
            .into_iter()
            .map(|st| (st.spec, Some(step_info(&st.place))))
            .collect(),
    };
    // A shard runs its share of every point (each step of a schedule included).
    let shard = Shard::resolve(
        args.shard_index,
        args.shard_count,
        args.execution_segment.as_deref(),
        |v| std::env::var(v).ok(),
    )
    .map_err(bad_input)?;
    let points = match &shard {
        None => points,
        Some(sh) => points
            .into_iter()
            .map(|(p, step)| Ok((sh.apply(&p).map_err(bad_input)?, step)))
            .collect::<Result<Vec<_>>>()?,
    };
    let reporters = if args.quiet {
        Vec::new()
    } else {
        vec![reporters::progress(args.plain)]
    };
    let bus = Arc::new(EventBus::new(reporters));
    let live = (!args.quiet).then(|| executor::live(&bus));
    let ctx = run_context(&args.choice(), args.max_lag, &transports, live)?;
    let started = environment::now_rfc3339();
    let names: Vec<String> = transports.iter().map(|t| t.name().to_owned()).collect();
    let eta: Duration = points.iter().map(|(p, _)| p.estimate()).sum();
    bus.emit(RunEvent::Started {
        suite: "load".into(),
        transports: names.clone(),
        steps: transports.len() * points.len(),
        eta: eta * transports.len() as u32,
        out: args.json.clone(),
    })?;
    let interrupted = || ctx.interrupted.load(std::sync::atomic::Ordering::SeqCst);
    let mut records = Vec::new();
    let mut failures = Vec::new();
    let single = transports.len() == 1 && stepped.is_none();
    let mut index = 0;
    'transports: for transport in transports {
        let name = transport.name().to_owned();
        // Steps share one server, as a deployed service sees its load change; one point
        // places its own.
        let server = match &stepped {
            Some(_) => match PlacedServer::start(transport, spec.tls, &ctx) {
                Ok(s) => Some(s),
                // As for one point: the only transport failing is the command's error (bad
                // input keeps its exit code 2).
                Err(e) if names.len() == 1 => {
                    let _ = bus.emit(RunEvent::Finished {
                        complete: false,
                        interrupted: interrupted(),
                    });
                    return Err(e);
                }
                Err(e) => {
                    failures.push(RunFailure {
                        transport: name,
                        point: spec.name.clone(),
                        error: format!("{e:#}"),
                    });
                    continue;
                }
            },
            None => None,
        };
        for (point, step) in &points {
            if interrupted() {
                break 'transports;
            }
            let label = format!("{name}: {}", point.describe());
            bus.emit(RunEvent::StepStarted {
                index,
                label: label.clone(),
                estimate: point.estimate(),
            })?;
            // The coordinated start is the first point's; the others follow it.
            let mut ctx = ctx.clone();
            if index == 0 {
                ctx.start_at = args.start_at.map(|at| (at, args.start_grace));
            }
            let outcome = match &server {
                Some(s) => run_on(s, point, &ctx),
                None => run_point(transport, point, &ctx),
            };
            match outcome {
                Ok(mut record) => {
                    record.step = step.clone();
                    record.params.shard = shard.as_ref().map(Shard::params);
                    record.thresholds = crate::thresholds::check(&args.thresholds, &record.summary);
                    if !single {
                        let line = StepResult::Load {
                            point: index,
                            record: Box::new(record.clone()),
                        };
                        bus.emit(RunEvent::StepFinished {
                            index,
                            label,
                            result: line,
                        })?;
                    }
                    records.push(record);
                }
                // One transport's run failing is itself an input error when it is the only
                // one; among several the others still run, and the failure is named at the
                // end.
                Err(e) if single => {
                    let _ = bus.emit(RunEvent::Finished {
                        complete: false,
                        interrupted: interrupted(),
                    });
                    return Err(e);
                }
                Err(e) => {
                    let failure = RunFailure {
                        transport: name.clone(),
                        point: point.name.clone(),
                        error: format!("{e:#}"),
                    };
                    bus.emit(RunEvent::StepFinished {
                        index,
                        label,
                        result: StepResult::Failed(failure.clone()),
                    })?;
                    failures.push(failure);
                    // A step that could not run says the server may be gone: the
                    // transport's remaining steps would only fail the same way.
                    if server.is_some() {
                        continue 'transports;
                    }
                }
            }
            index += 1;
        }
    }
    // The bar goes before anything else is printed, whatever happened.
    let _ = bus.emit(RunEvent::Finished {
        complete: records.len() + failures.len() == names.len() * points.len(),
        interrupted: interrupted(),
    });
    match records.as_slice() {
        [one] if single => print!("{}", summary_text(one)),
        _ => print!("{}", side_by_side::table(&records, &failures)),
    }
    let breached = records.iter().any(|r| r.breaches().next().is_some());
    if let Some(path) = &args.json {
        let complete = !interrupted() && failures.is_empty();
        let description = match &stepped {
            Some(steps) => format!("{}; stepped: {steps}", spec.describe()),
            None => spec.describe(),
        };
        save_json(
            path,
            started,
            description,
            names,
            records,
            failures.clone(),
            complete,
        )?;
        println!("wrote {}", path.display());
    }
    if interrupted() {
        return Ok(ExitCode::from(crate::exit::INTERRUPTED));
    }
    if !failures.is_empty() {
        return Ok(ExitCode::from(crate::exit::HARNESS));
    }
    if breached {
        return Ok(ExitCode::from(crate::exit::FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// What picks and places the transports of a `load` or `capacity` command.
pub(crate) struct Choice<'a> {
    /// `--transport` as given.
    pub list: &'a str,
    /// Where servers come from.
    pub placement: &'a PlacementArgs,
    /// `--option` values.
    pub options: &'a [String],
    /// `--server-option` values.
    pub server_options: &'a [String],
    /// Brokers for broker transports.
    pub brokers: &'a BrokerArgs,
}

impl<'a> Choice<'a> {
    /// The choice a command's flags make.
    pub fn of(
        list: &'a str,
        placement: &'a PlacementArgs,
        knobs: &'a KnobArgs,
        brokers: &'a BrokerArgs,
    ) -> Choice<'a> {
        Choice {
            list,
            placement,
            options: &knobs.options,
            server_options: &knobs.server_options,
            brokers,
        }
    }
}

/// The transports named by `--transport`, each checked against the point before anything
/// runs. `all` keeps the ones that can run here and says why the others cannot.
pub(crate) fn chosen(c: &Choice<'_>, spec: &LoadSpec) -> Result<Vec<AnyTransport>> {
    let every = c.list.trim().eq_ignore_ascii_case("all");
    let transports = super::parse_transports(Some(c.list))?;
    if transports.is_empty() {
        return Err(bad_input("--transport: no transport named"));
    }
    for (i, t) in transports.iter().enumerate() {
        if transports[..i].iter().any(|u| u.name() == t.name()) {
            return Err(bad_input(format!(
                "--transport {}: {} is named twice",
                c.list,
                t.name()
            )));
        }
    }
    if transports.len() > 1 {
        if c.placement.target.is_some() || c.placement.server_cmd.is_some() {
            return Err(bad_input(
                "--target and --server-cmd name one server, so they take one transport \
                 (--transport NAME)",
            ));
        }
        if !c.options.is_empty() || !c.server_options.is_empty() {
            return Err(bad_input(
                "--option and --server-option are one transport's knobs, so they take one \
                 transport; to set knobs for several, write a suite (wirebench run --suite)",
            ));
        }
    }
    // What is wrong with the point itself is wrong for every transport: said once, first.
    spec.validate().map_err(|e| bad_input(e.to_string()))?;
    c.brokers.validate()?;
    let mut kept = Vec::new();
    for t in transports {
        match check(c, &t, spec) {
            Ok(()) => kept.push(t),
            // `all` means "all that can run here": the rest is said, not fatal.
            Err(e) if every => eprintln!("not loading {}: {e:#}", t.name()),
            Err(e) => return Err(e),
        }
    }
    if kept.is_empty() {
        return Err(bad_input(
            "--transport all: no transport can run this point here",
        ));
    }
    Ok(kept)
}

/// What can be refused for one transport before anything runs (the point itself is checked
/// once, in [`chosen`]).
fn check(c: &Choice<'_>, transport: &AnyTransport, spec: &LoadSpec) -> Result<()> {
    match availability(transport, c.brokers) {
        Availability::Ready => {}
        // One explicit transport that cannot run here: say why and how to fix it.
        Availability::Skipped(why) | Availability::Missing(why) => {
            return Err(anyhow::anyhow!("cannot load {why}"));
        }
    }
    if let Some((cap, reason)) = transport.capabilities().first_missing(&spec.needs()) {
        return Err(bad_input(format!(
            "{} does not support {}: {reason}",
            transport.name(),
            cap.name()
        )));
    }
    if c.placement.target.is_some()
        && transport
            .capabilities()
            .gap(Capability::OutOfProcess)
            .is_some()
    {
        return Err(bad_input(format!(
            "{} cannot be reached in another process, so --target does not apply",
            transport.name()
        )));
    }
    Ok(())
}

/// Refuses a `--json` or `--out` file whose folder does not exist, before anything runs.
pub(crate) fn check_parent(flag: &str, path: Option<&std::path::Path>) -> Result<()> {
    if let Some(path) = path
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(bad_input(format!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

impl Args {
    fn choice(&self) -> Choice<'_> {
        Choice::of(&self.transport, &self.placement, &self.knobs, &self.brokers)
    }
}

/// How the chosen transports' points run: placement, validity, options and brokers.
pub(crate) fn run_context(
    c: &Choice<'_>,
    max_lag: Duration,
    transports: &[AnyTransport],
    live: Option<Arc<dyn crate::load::live::LiveSink>>,
) -> Result<RunContext> {
    // Options were refused above for several transports, so they belong to the one.
    let options = |given: &[String]| -> Result<BTreeMap<String, _>> {
        let parsed = parse_options(given)?;
        Ok(transports
            .iter()
            .map(|t| (t.name().to_owned(), parsed.clone()))
            .collect())
    };
    Ok(RunContext {
        pin: c.placement.pin,
        validity: ValiditySpec {
            max_lag_p99: max_lag,
            ..ValiditySpec::default()
        },
        interrupted: interrupt::install(),
        ready_timeout: c.placement.ready_timeout,
        target: c.placement.target.clone(),
        target_pid: c.placement.target_pid,
        server_cmd: c.placement.server_cmd.clone(),
        server_threads: c.placement.server_threads,
        client_options: options(c.options)?,
        server_options: options(c.server_options)?,
        server_listen: transports
            .iter()
            .filter_map(|t| {
                let url = c.brokers.url_for(t)?;
                Some((t.name().to_owned(), url.to_owned()))
            })
            .collect(),
        tls: Default::default(),
        live,
        start_at: None,
    })
}

/// Writes the runs (one per transport) as a results file.
fn save_json(
    path: &std::path::Path,
    started: String,
    description: String,
    transports: Vec<String>,
    records: Vec<RunRecord>,
    errors: Vec<RunFailure>,
    complete: bool,
) -> Result<()> {
    let mut results = Results::new(
        format!("wirebench {}", env!("CARGO_PKG_VERSION")),
        started,
        environment::collect(),
        SuiteRecord {
            name: "load".into(),
            description,
            source: "command line".into(),
            toml: String::new(),
        },
    );
    results.transports = transports;
    results.runs = records;
    results.errors = errors;
    results.finished_at = Some(environment::now_rfc3339());
    results.complete = complete;
    results.save(path)?;
    Ok(())
}
