//! One load point against one transport, start to finish: place the server (a child
//! process, in-process when the transport cannot leave the process, or an external
//! `--target`), run the engine, account CPU and memory on both sides from `/proc`, judge
//! validity, and build the saved [`RunRecord`].

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use wirebench_core::transport::Options;
use wirebench_core::{
    CallOptions, Capability, ClientConfig, Code, Connection, Echo, EchoRequest, Server,
    ServerConfig, Transport, TransportError,
};
use wirebench_reports::histogram::{encode, summarize};
use wirebench_reports::results::{
    IntervalRecord, OfferedLoad, ProcessUsage, RunHistograms, RunParams, RunRecord, RunSummary,
    ServerInfo, Validity, WireTotals,
};
use wirebench_scenarios::load::{Length, LoadSpec, Mode, Pacing};
use wirebench_scenarios::suite::ValiditySpec;
use wirebench_tls::{TlsMaterial, TlsMode};
use wirebench_transports::AnyTransport;
use wirebench_transports::registry::AnyServer;

use crate::affinity::{CpusSeen, Pin};
use crate::child::{ChildServer, ServerCommand};
use crate::exit::bad_input;
use crate::load::live::LiveSink;
use crate::load::{self, EngineOptions, Hooks, LoadError, Target};
use crate::procfs::{self, CpuTimes, CpuWatcher};

/// Everything about how to run a load point besides the point itself.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// CPU placement.
    pub pin: Pin,
    /// Validity thresholds.
    pub validity: ValiditySpec,
    /// Set on Ctrl-C.
    pub interrupted: Arc<AtomicBool>,
    /// How long a server child may take to become ready.
    pub ready_timeout: Duration,
    /// Drive this already-running server instead of starting one.
    pub target: Option<String>,
    /// The external server's pid, to read its CPU and memory.
    pub target_pid: Option<u32>,
    /// Start the server with this shell command instead of `wirebench serve`.
    pub server_cmd: Option<String>,
    /// Server runtime threads (`wirebench serve --threads`).
    pub server_threads: Option<u32>,
    /// Client options per transport.
    pub client_options: BTreeMap<String, BTreeMap<String, String>>,
    /// Server options per transport.
    pub server_options: BTreeMap<String, BTreeMap<String, String>>,
    /// Where a transport's server listens, when not on loopback port 0 (a broker transport
    /// given an external broker: `nats://HOST:PORT`).
    pub server_listen: BTreeMap<String, String>,
    /// Throwaway TLS material for the run's TLS points, made on first use.
    pub tls: Arc<OnceLock<Result<RunTls, String>>>,
    /// Where a running point's interval figures go (a progress display).
    pub live: Option<Arc<dyn LiveSink>>,
    /// A coordinated start for the next point, and its grace (`--start-at`).
    pub start_at: Option<(std::time::SystemTime, Duration)>,
}

/// A throwaway CA with server and client certificates for one run, and the same as PEM files
/// for `wirebench serve --tls-dir` (deleted with the run).
pub struct RunTls {
    /// The certificates.
    pub material: TlsMaterial,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RunTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTls")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl RunTls {
    fn generate() -> Result<RunTls, String> {
        let material =
            TlsMaterial::generate().map_err(|e| format!("generating TLS certificates: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("wirebench-tls-")
            .tempdir()
            .map_err(|e| format!("a directory for the TLS certificates: {e}"))?;
        material
            .write_pem_dir(dir.path())
            .map_err(|e| format!("writing the TLS certificates: {e}"))?;
        Ok(RunTls { material, dir })
    }
}

impl RunContext {
    /// The run's TLS material, generated the first time a point asks for it.
    fn tls_material(&self) -> Result<&RunTls> {
        self.tls
            .get_or_init(RunTls::generate)
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }
}

impl Default for RunContext {
    fn default() -> RunContext {
        RunContext {
            pin: Pin::None,
            validity: ValiditySpec::default(),
            interrupted: Arc::new(AtomicBool::new(false)),
            ready_timeout: Duration::from_secs(10),
            target: None,
            target_pid: None,
            server_cmd: None,
            server_threads: None,
            client_options: BTreeMap::new(),
            server_options: BTreeMap::new(),
            server_listen: BTreeMap::new(),
            tls: Arc::default(),
            live: None,
            start_at: None,
        }
    }
}

/// Where the server of a run lives while it runs.
enum Placement {
    Child(ChildServer),
    InProcess {
        rt: tokio::runtime::Runtime,
        server: Option<AnyServer>,
        reason: String,
    },
    External,
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Placement::InProcess { rt, server, .. } = self
            && let Some(s) = server.take()
        {
            rt.block_on(s.shutdown());
        }
    }
}

/// Transport options from a suite or command-line map.
pub fn options(map: Option<&BTreeMap<String, String>>) -> Options {
    let mut o = Options::new();
    for (k, v) in map.into_iter().flatten() {
        o.set(k.clone(), v.clone());
    }
    o
}

/// Where `transport`'s server listens: its override, else loopback port 0.
fn listen_for(ctx: &RunContext, transport: &str) -> String {
    ctx.server_listen
        .get(transport)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:0".into())
}

fn start_server(
    transport: AnyTransport,
    tls: TlsMode,
    ctx: &RunContext,
) -> Result<(Placement, ServerInfo, String)> {
    let name = transport.name();
    let run_tls = match tls {
        TlsMode::None => None,
        _ => Some(ctx.tls_material()?),
    };
    if let Some(target) = &ctx.target {
        if tls != TlsMode::None {
            return Err(bad_input(format!(
                "load points over {tls} cannot drive a --target server: its certificates are \
                 not this run's (run such points without --target)"
            )));
        }
        let info = ServerInfo {
            placement: "external".into(),
            endpoint: target.clone(),
            pid: ctx.target_pid,
            note: Some(match ctx.target_pid {
                Some(_) => "an already-running server (--target); CPU and memory read from \
                            --target-pid"
                    .into(),
                None => "an already-running server (--target): its CPU and memory are not \
                         measured (pass --target-pid to read them)"
                    .into(),
            }),
        };
        return Ok((Placement::External, info, target.clone()));
    }
    if let Some(reason) = transport.capabilities().gap(Capability::OutOfProcess) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{name}-server"))
            .enable_all()
            .build()
            .context("starting the in-process server runtime")?;
        let config = ServerConfig {
            listen: listen_for(ctx, name),
            options: options(ctx.server_options.get(name)),
            tls: run_tls.and_then(|t| t.material.server(tls)),
        };
        let server = rt
            .block_on(transport.serve(&config, Arc::new(Echo::default())))
            .map_err(|e| bad_input(format!("cannot serve {name}: {e}")))?;
        let endpoint = server.endpoint();
        let info = ServerInfo {
            placement: "in-process".into(),
            endpoint: endpoint.clone(),
            pid: Some(std::process::id()),
            note: Some(format!(
                "the server runs inside the load generator ({reason}); client CPU and memory \
                 include the server's"
            )),
        };
        return Ok((
            Placement::InProcess {
                rt,
                server: Some(server),
                reason: reason.to_owned(),
            },
            info,
            endpoint,
        ));
    }
    let cmd = match &ctx.server_cmd {
        Some(c) => ServerCommand::Shell {
            command: c.clone(),
            transport: name.to_owned(),
            tls: run_tls.map(|t| (tls, t.dir.path().to_owned())),
        },
        None => ServerCommand::Serve {
            transport: name.to_owned(),
            listen: listen_for(ctx, name),
            options: ctx.server_options.get(name).cloned().unwrap_or_default(),
            threads: ctx.server_threads,
            cpu: ctx.pin.cpus().map(|(_, s)| s),
            tls: run_tls.map(|t| (tls, t.dir.path().to_owned())),
        },
    };
    let child = ChildServer::spawn(&cmd, ctx.ready_timeout).map_err(|e| {
        // A user's own server command that fails is bad input, and so is our own server
        // refusing what it was given (exit 2: an unknown --server-option, say); our own
        // server failing otherwise is the harness's failure.
        let refused = matches!(e, crate::child::ChildError::Exited { code: Some(2), .. });
        if ctx.server_cmd.is_some() || refused {
            bad_input(e.to_string())
        } else {
            anyhow!(e)
        }
    })?;
    let endpoint = child.ready.endpoint.clone();
    let info = ServerInfo {
        placement: "child".into(),
        endpoint: endpoint.clone(),
        pid: Some(child.pid()),
        note: Some(format!("`{}`", child.command())),
    };
    Ok((Placement::Child(child), info, endpoint))
}

/// Snapshots of both processes at the edges of the measured phase.
struct Accounting {
    client_pid: u32,
    server_pid: Option<u32>,
    client_start: Option<CpuTimes>,
    server_start: Option<CpuTimes>,
    client_end: Option<CpuTimes>,
    server_end: Option<CpuTimes>,
    /// Whose processes count as ours on the host: this one (and so every child it started)
    /// and an external server's pid when given.
    host_roots: Vec<u32>,
    host_start: Option<crate::host::Sample>,
    host_end: Option<crate::host::Sample>,
}

impl Accounting {
    fn new(client_pid: u32, server_pid: Option<u32>) -> Accounting {
        Accounting {
            client_pid,
            server_pid,
            client_start: None,
            server_start: None,
            client_end: None,
            server_end: None,
            host_roots: std::iter::once(client_pid).chain(server_pid).collect(),
            host_start: None,
            host_end: None,
        }
    }

    /// The host's load over the measured phase, when both edges were sampled.
    fn host(&self) -> Option<wirebench_reports::results::HostLoad> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Some(crate::host::between(
            self.host_start?,
            self.host_end?,
            procfs::ticks_per_second(),
            cpus,
        ))
    }
}

impl Hooks for Accounting {
    fn measure_start(&mut self) {
        self.client_start = procfs::cpu_times(self.client_pid).ok();
        self.server_start = self.server_pid.and_then(|p| procfs::cpu_times(p).ok());
        self.host_start = crate::host::sample(&self.host_roots);
    }

    fn measure_end(&mut self) {
        self.host_end = crate::host::sample(&self.host_roots);
        self.client_end = procfs::cpu_times(self.client_pid).ok();
        self.server_end = self.server_pid.and_then(|p| procfs::cpu_times(p).ok());
    }
}

fn usage(
    start: Option<CpuTimes>,
    end: Option<CpuTimes>,
    calls: u64,
    peak: Option<u64>,
    cpus: &CpusSeen,
    note: Option<String>,
) -> Option<ProcessUsage> {
    let used = end?.since(start?);
    Some(ProcessUsage {
        user_s: used.user.as_secs_f64(),
        system_s: used.system.as_secs_f64(),
        cpu_us_per_call: if calls > 0 {
            used.total().as_secs_f64() * 1e6 / calls as f64
        } else {
            0.0
        },
        peak_rss_bytes: peak,
        cpus: cpus.0.clone(),
        note,
    })
}

/// The saved parameters of a run.
pub fn params(spec: &LoadSpec, pin: Pin, transport: &str, ctx: &RunContext) -> RunParams {
    let (concurrency, rate, schedule, max_in_flight) = match &spec.mode {
        Mode::Closed { concurrency } => (Some(*concurrency), None, None, None),
        Mode::Open {
            rate,
            schedule,
            max_in_flight,
        } => (
            None,
            Some(*rate),
            Some(schedule.name().to_owned()),
            Some(*max_in_flight),
        ),
    };
    RunParams {
        method: spec.method.name().into(),
        mode: if concurrency.is_some() {
            "closed"
        } else {
            "open"
        }
        .into(),
        concurrency,
        rate,
        schedule,
        max_in_flight,
        connections: spec.connections,
        workers: spec.workers,
        payload_bytes: spec.payload as u64,
        response_bytes: spec.response_size.map(|s| s as u64),
        messages_per_call: spec.messages,
        warmup_s: spec.warmup.as_secs_f64(),
        duration_s: match spec.length {
            Length::Duration(d) => Some(d.as_secs_f64()),
            Length::Requests(_) => None,
        },
        requests: match spec.length {
            Length::Requests(n) => Some(n),
            Length::Duration(_) => None,
        },
        seed: spec.seed,
        timeout_s: spec.timeout.map(|t| t.as_secs_f64()),
        stall_at_s: spec.stall.map(|s| s.at.as_secs_f64()),
        stall_for_s: spec.stall.map(|s| s.duration.as_secs_f64()),
        server_delay_s: (!spec.server_delay.is_zero()).then_some(spec.server_delay.as_secs_f64()),
        pin: format!("{pin:?}").to_lowercase(),
        client_options: ctx
            .client_options
            .get(transport)
            .cloned()
            .unwrap_or_default(),
        server_options: ctx
            .server_options
            .get(transport)
            .cloned()
            .unwrap_or_default(),
        tls: spec.tls.name().into(),
        pacing: rate.map(|_| spec.pacing.name().to_owned()),
        shard: None,
    }
}

/// Runs one load point against one transport and returns its record.
pub fn run_point(transport: AnyTransport, spec: &LoadSpec, ctx: &RunContext) -> Result<RunRecord> {
    spec.validate()
        .map_err(|e| bad_input(format!("load point {:?}: {e}", spec.name)))?;
    let server = PlacedServer::start(transport, spec.tls, ctx)?;
    run_on(&server, spec, ctx)
}

/// A transport's server, placed for a series of load points (the steps of a schedule or of a
/// capacity search run one after another on one server, as a deployed service would see its
/// load change). Stopped when dropped.
pub struct PlacedServer {
    transport: AnyTransport,
    tls: TlsMode,
    placement: Placement,
    info: ServerInfo,
    endpoint: String,
}

impl std::fmt::Debug for PlacedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedServer")
            .field("transport", &self.transport.name())
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl PlacedServer {
    /// Places `transport`'s server for points over `tls` (a child, in-process, or the
    /// `--target`).
    pub fn start(transport: AnyTransport, tls: TlsMode, ctx: &RunContext) -> Result<PlacedServer> {
        let (placement, info, endpoint) = start_server(transport, tls, ctx)?;
        Ok(PlacedServer {
            transport,
            tls,
            placement,
            info,
            endpoint,
        })
    }

    fn pid(&self, ctx: &RunContext) -> Option<u32> {
        match &self.placement {
            Placement::Child(c) => Some(c.pid()),
            Placement::External => ctx.target_pid,
            Placement::InProcess { .. } => None,
        }
    }

    fn in_process_reason(&self) -> Option<String> {
        match &self.placement {
            Placement::InProcess { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }
}

/// Runs one load point on an already placed server and returns its record.
pub fn run_on(server: &PlacedServer, spec: &LoadSpec, ctx: &RunContext) -> Result<RunRecord> {
    spec.validate()
        .map_err(|e| bad_input(format!("load point {:?}: {e}", spec.name)))?;
    if spec.tls != server.tls {
        return Err(anyhow!(
            "load point {:?} is over {} but its server was placed for {}",
            spec.name,
            spec.tls,
            server.tls
        ));
    }
    let transport = server.transport;
    let name = transport.name();
    let me = std::process::id();
    let peak_reset = procfs::reset_peak_rss(me);
    let server_info = server.info.clone();
    let server_pid = server.pid(ctx);
    let target = Target {
        transport,
        endpoint: server.endpoint.clone(),
        client: client_config(ctx, name, spec.tls)?,
    };
    let setup = measure_setup(&target, SETUP_SAMPLES).map_err(|e| match &ctx.target {
        Some(_) => bad_input(format!("{e} (is the --target server running?)")),
        None => e,
    })?;
    let engine = EngineOptions {
        cpus: ctx.pin.cpus().map(|(c, _)| vec![c]),
        interrupted: ctx.interrupted.clone(),
        live: ctx.live.clone(),
        start_at: ctx.start_at,
        ..EngineOptions::default()
    };
    let mut acct = Accounting::new(me, server_pid);
    let watcher = CpuWatcher::start(server_pid.into_iter().collect());
    let outcome = load::run(spec, &target, &engine, &mut acct);
    let server_cpus = watcher.stop().into_iter().next().unwrap_or_default();
    let outcome = match outcome {
        Ok(o) => o,
        Err(LoadError::Connect(e)) if ctx.target.is_some() => {
            return Err(bad_input(format!("{e} (is the --target server running?)")));
        }
        Err(LoadError::Invalid(e)) => return Err(bad_input(e.to_string())),
        Err(LoadError::Late(e)) => return Err(anyhow::Error::new(crate::exit::LateStart(e))),
        Err(e) => return Err(anyhow!(e)),
    };
    let client_peak = procfs::peak_rss(me);
    let server_peak = server_pid.and_then(procfs::peak_rss);
    let in_process_reason = server.in_process_reason();

    let mut summary = run_summary(
        spec,
        &outcome,
        &acct,
        &setup,
        Peaks {
            client: client_peak,
            server: server_peak,
            client_note: match (&in_process_reason, peak_reset) {
                (Some(_), _) => Some("includes the in-process server".into()),
                (None, false) => Some("peak RSS is the process's lifetime peak".into()),
                (None, true) => None,
            },
        },
        &server_cpus,
    );
    summary.start_skew_ms = outcome.start_skew_ms;
    if summary.bytes.is_none() {
        // Said, not left blank: the transport's declared reason, or (when it declares that it
        // counts them yet gave none) that this is a defect.
        summary.bytes_not_measured = Some(
            transport
                .capabilities()
                .gap(Capability::WireBytes)
                .unwrap_or("the transport declares that it counts its bytes but gave none")
                .to_owned(),
        );
    }
    let validity = judge(
        spec,
        &summary,
        &server_info,
        in_process_reason.is_some(),
        ctx,
    );
    let m = &outcome.merged;
    let enc = |h: &hdrhistogram::Histogram<u64>| encode(h).map_err(|e| anyhow!(e));
    let histograms = RunHistograms {
        latency: enc(&m.latency)?,
        service_time: m.service.as_ref().map(enc).transpose()?,
        generator_lag: m.lag.as_ref().map(enc).transpose()?,
        message_latency: m
            .message
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(enc)
            .transpose()?,
    };
    Ok(RunRecord {
        transport: name.to_owned(),
        point: spec.name.clone(),
        params: params(spec, ctx.pin, name, ctx),
        server: server_info,
        summary,
        validity,
        histograms,
        intervals: interval_records(&m.intervals, load::recorder::INTERVAL),
        repeats: Vec::new(),
        gate: None,
        thresholds: Vec::new(),
        step: None,
        stages: match (&spec.ramp, &spec.mode) {
            (Some(ramp), Mode::Open { rate, .. }) => {
                stage_records(ramp, *rate, &m.phases, ctx.validity.max_lag_p99)
            }
            _ => Vec::new(),
        },
    })
}

/// Each stage of a ramp summarised on its own, from the recorder's phases (one per stage):
/// what was due, sent, completed, its latency and lag, and its verdict — INVALID when the
/// generator's lag p99 was over `max_lag`, UNSUSTAINED when fewer than
/// [`SUSTAINED_SHARE`] of its due requests completed.
fn stage_records(
    ramp: &wirebench_scenarios::load::Ramp,
    rate: f64,
    phases: &[load::recorder::PhaseRecord],
    max_lag: Duration,
) -> Vec<wirebench_reports::results::StageRecord> {
    ramp.segments(rate)
        .iter()
        .zip(phases)
        .enumerate()
        .map(|(i, (seg, p))| {
            let completed: u64 = p.status.iter().sum();
            let errors = completed - p.status[Code::Ok.as_u32() as usize];
            let due = p.sent + p.unsent;
            let secs = seg.length.as_secs_f64();
            let lag = summarize(&p.lag);
            let (verdict, why) = if lag.count > 0 && lag.p99_ns > max_lag.as_nanos() as u64 {
                (
                    "INVALID",
                    format!(
                        "generator lag p99 {} over {}",
                        us(lag.p99_ns),
                        us(max_lag.as_nanos() as u64)
                    ),
                )
            } else if (completed as f64) < SUSTAINED_SHARE * due as f64 {
                (
                    "UNSUSTAINED",
                    format!(
                        "{completed} of {due} due requests completed ({} never sent)",
                        p.unsent
                    ),
                )
            } else {
                ("valid", String::new())
            };
            wirebench_reports::results::StageRecord {
                index: i as u32,
                start_s: seg.start.as_secs_f64(),
                duration_s: secs,
                rate_from: seg.from,
                rate_to: seg.to,
                due,
                sent: p.sent,
                unsent: p.unsent,
                completed,
                errors,
                achieved_per_s: if secs > 0.0 {
                    completed as f64 / secs
                } else {
                    0.0
                },
                latency: summarize(&p.latency),
                generator_lag: lag,
                verdict: verdict.into(),
                why,
            }
        })
        .collect()
}

/// The saved series of a run whose intervals are `length` long.
pub fn interval_records(
    intervals: &[load::recorder::MergedInterval],
    length: Duration,
) -> Vec<IntervalRecord> {
    intervals
        .iter()
        .map(|iv| IntervalRecord {
            start_s: iv.index as f64 * length.as_secs_f64(),
            calls: iv.calls,
            errors: iv.errors,
            latency: iv.latency,
            histogram: iv.histogram.clone(),
        })
        .collect()
}

/// The client's configuration for a point of `transport` over `tls`.
fn client_config(ctx: &RunContext, transport: &str, tls: TlsMode) -> Result<ClientConfig> {
    Ok(ClientConfig {
        options: options(ctx.client_options.get(transport)),
        tls: match tls {
            TlsMode::None => None,
            mode => ctx.tls_material()?.material.client(mode),
        },
        ..ClientConfig::default()
    })
}

/// Peak memory of both sides, and what to say of the client's.
struct Peaks {
    client: Option<u64>,
    server: Option<u64>,
    client_note: Option<String>,
}

/// An open loop's schedule accounted for: due = sent + unsent, with the unsent requests'
/// latency lower bounds beside the sent ones' latency.
fn offered_load(
    spec: &LoadSpec,
    m: &load::recorder::Merged,
    calls: u64,
    elapsed: f64,
) -> Option<OfferedLoad> {
    let Mode::Open { rate, .. } = spec.mode else {
        return None;
    };
    let with_unsent = m.unsent_wait.as_ref().filter(|w| !w.is_empty()).map(|w| {
        let mut all = m.latency.clone();
        // Same bounds on both sides: adding cannot fail.
        let _ = all.add(w);
        summarize(&all)
    });
    // A ramp offers its stages' mean rate.
    let rate = match &spec.ramp {
        Some(r) => {
            let segs = r.segments(rate);
            segs.iter().map(|s| s.due()).sum::<f64>() / r.total().as_secs_f64().max(1e-9)
        }
        None => rate,
    };
    Some(OfferedLoad {
        rate_per_s: rate,
        due: m.sent + m.unsent,
        sent: m.sent,
        unsent: m.unsent,
        achieved_per_s: calls as f64 / elapsed,
        unsent_wait: m
            .unsent_wait
            .as_ref()
            .filter(|w| !w.is_empty())
            .map(summarize),
        latency_with_unsent: with_unsent,
    })
}

/// The run's summary: calls by outcome, throughput, latencies, bytes and resources.
fn run_summary(
    spec: &LoadSpec,
    outcome: &load::Outcome,
    acct: &Accounting,
    setup: &hdrhistogram::Histogram<u64>,
    peaks: Peaks,
    server_cpus: &CpusSeen,
) -> RunSummary {
    let m = &outcome.merged;
    let calls = m.latency.len();
    let ok = m.status[Code::Ok.as_u32() as usize];
    let mut status_counts = BTreeMap::new();
    for code in Code::ALL {
        let n = m.status[code.as_u32() as usize];
        if n > 0 {
            status_counts.insert(code.as_str().to_owned(), n);
        }
    }
    let elapsed = outcome.elapsed.as_secs_f64().max(1e-9);
    let client = usage(
        acct.client_start,
        acct.client_end,
        calls,
        peaks.client,
        &outcome.client_cpus,
        peaks.client_note,
    )
    .unwrap_or_default();
    let server = usage(
        acct.server_start,
        acct.server_end,
        calls,
        peaks.server,
        server_cpus,
        None,
    );
    RunSummary {
        start_skew_ms: None,
        elapsed_s: elapsed,
        calls,
        ok,
        errors: calls - ok,
        incomplete: outcome.incomplete,
        status_counts,
        throughput_per_s: calls as f64 / elapsed,
        messages_sent: m.messages_sent,
        messages_received: m.messages_received,
        messages_per_s: (m.messages_sent + m.messages_received) as f64 / elapsed,
        latency: summarize(&m.latency),
        service_time: m.service.as_ref().map(summarize),
        generator_lag: m.lag.as_ref().map(summarize),
        message_latency: m.message.as_ref().filter(|h| !h.is_empty()).map(summarize),
        backpressured: m.backpressured,
        offered: offered_load(spec, m, calls, elapsed),
        bytes: outcome.wire.map(|w| WireTotals {
            sent: w.sent,
            received: w.received,
            sent_per_call: w.sent as f64 / calls.max(1) as f64,
            received_per_call: w.received as f64 / calls.max(1) as f64,
        }),
        bytes_not_measured: None,
        host: acct.host(),
        client,
        server,
        worker_busy: outcome.worker_busy.clone(),
        connect: Some(summarize(setup)),
    }
}

/// Connections set up (each with its first call) before a point's warm-up.
const SETUP_SAMPLES: usize = 16;

/// Times `n` connection setups in a row: connect, one 0-byte unary call (so lazy transports
/// finish their handshakes and broker sessions), close. Before the warm-up, so neither the
/// load's numbers nor its CPU accounting include them.
fn measure_setup(target: &Target, n: usize) -> Result<hdrhistogram::Histogram<u64>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the connection-setup runtime")?;
    let mut h = wirebench_reports::histogram::latency_histogram();
    rt.block_on(async {
        for _ in 0..n {
            let t0 = std::time::Instant::now();
            let conn = tokio::time::timeout(
                SETUP_TIMEOUT,
                target.transport.connect(&target.client, &target.endpoint),
            )
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", target.endpoint))?
            .map_err(|e| match e {
                // A client option or setting the transport refuses is the user's input.
                TransportError::Config(_) => bad_input(format!("{}: {e}", target.transport.name())),
                e => anyhow!("cannot connect to {}: {e}", target.endpoint),
            })?;
            let reply = conn
                .unary(
                    EchoRequest::new(bytes::Bytes::new()),
                    &CallOptions::with_timeout(SETUP_TIMEOUT),
                )
                .await;
            h.saturating_record(t0.elapsed().as_nanos() as u64);
            conn.close().await;
            reply.map_err(|e| anyhow!("the first call on a new connection failed: {e}"))?;
        }
        anyhow::Ok(())
    })?;
    Ok(h)
}

/// How long one connection setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// Decides whether a run's numbers measure the transport, and says why not.
pub fn judge(
    spec: &LoadSpec,
    s: &RunSummary,
    server: &ServerInfo,
    in_process: bool,
    ctx: &RunContext,
) -> Validity {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    if ctx.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        reasons.push("interrupted by the user before the run completed".to_owned());
    }
    if s.calls == 0 {
        reasons.push("no call completed".to_owned());
    }
    // Whose fault a late schedule is. A busy host (someone else's work, or stolen time) is
    // named as the cause of a schedule that slipped; when the schedule held, it is a note
    // only: the numbers were kept, and the note says they may carry its interference.
    let mut host_busy = s.host.as_ref().and_then(crate::host::busy_reason);
    if ctx.target.is_some() && ctx.target_pid.is_none() {
        // The server is another process we cannot tell apart: its CPU is in the others'.
        host_busy = host_busy.map(|why| {
            format!(
                "{why} (this includes the --target server's own CPU: give --target-pid to \
                 tell them apart)"
            )
        });
    }
    let lag_over = s
        .generator_lag
        .as_ref()
        .filter(|lag| lag.p99_ns > ctx.validity.max_lag_p99.as_nanos() as u64);
    match (lag_over, &host_busy) {
        (Some(lag), Some(why)) => {
            reasons.push(why.clone());
            reasons.push(format!(
                "generator lag p99 {} exceeds {}: the schedule slipped because the host was \
                 busy (above), not because the generator was slow",
                us(lag.p99_ns),
                us(ctx.validity.max_lag_p99.as_nanos() as u64)
            ));
        }
        (Some(lag), None) => reasons.push(format!(
            "generator lag p99 {} exceeds {}: the load generator fell behind its schedule{}",
            us(lag.p99_ns),
            us(ctx.validity.max_lag_p99.as_nanos() as u64),
            match spec.pacing {
                // Sleeping between requests leaves the host's timer wake-ups in the lag.
                Pacing::Sleep =>
                    " (if its CPU was not saturated, the host's timer wake-ups \
                                  were late: --pacing spin never sleeps and keeps the \
                                  schedule to microseconds, for a whole CPU per worker)",
                Pacing::Spin => "",
            }
        )),
        (None, Some(why)) => notes.push(format!(
            "{why}; the schedule held, but latencies may include that interference"
        )),
        (None, None) => {
            if let Some(h) = s
                .host
                .as_ref()
                .filter(|h| h.other_cpus >= crate::host::NOTE_CPUS)
            {
                notes.push(format!(
                    "other processes used {:.2} of {} CPUs during this point",
                    h.other_cpus, h.cpus
                ));
            }
        }
    }
    let busiest = s.worker_busy.iter().copied().fold(0.0f64, f64::max);
    let open_loop = matches!(spec.mode, Mode::Open { .. });
    if busiest >= ctx.validity.max_client_busy {
        if in_process {
            notes.push(format!(
                "a client worker was on CPU {:.0}% of the time, but the server runs in the \
                 same process and threads, so saturation is not judged",
                busiest * 100.0
            ));
        } else if open_loop {
            // The open-loop pacer yields through the last microseconds before each start,
            // so busy time includes deliberate waiting; falling behind shows in the lag.
            notes.push(format!(
                "a client worker was on CPU {:.0}% of the time, pacing included; an open loop \
                 is judged by its generator lag",
                busiest * 100.0
            ));
        } else {
            reasons.push(format!(
                "a client worker thread was on CPU {:.0}% of the time (limit {:.0}%): the load \
                 generator saturated its CPU",
                busiest * 100.0,
                ctx.validity.max_client_busy * 100.0
            ));
        }
    }
    if s.incomplete > 0 {
        reasons.push(format!(
            "{} calls were still unanswered when the run stopped waiting; they are missing \
             from the histograms",
            s.incomplete
        ));
    }
    let unsustained = s
        .offered
        .as_ref()
        .and_then(|o| unsustained(spec, o, ctx.validity.max_lag_p99));
    if s.errors > 0 {
        notes.push(format!("{} of {} calls failed", s.errors, s.calls));
    }
    if s.backpressured > 0
        && let Mode::Open { max_in_flight, .. } = spec.mode
    {
        notes.push(format!(
            "{} calls waited for a free caller (max_in_flight {max_in_flight} reached); the \
             wait is in their latency",
            s.backpressured
        ));
    }
    if cfg!(debug_assertions) {
        notes.push("debug build: numbers are not representative".to_owned());
    }
    if server.placement == "external" && server.pid.is_none() {
        notes.push("external server: its CPU and memory are not measured".to_owned());
    }
    Validity {
        valid: reasons.is_empty() && unsustained.is_none(),
        reasons,
        notes,
        unsustained,
    }
}

/// The share of the schedule's rate an open loop must achieve to have sustained it.
pub const SUSTAINED_SHARE: f64 = 0.95;

/// Whether an open loop failed to sustain its offered rate, and how to say so: any due
/// request never sent, or completions below [`SUSTAINED_SHARE`] of the schedule's rate. The
/// schedule's own count of due requests is the yardstick (a Poisson schedule's draw over a
/// short run differs from the nominal rate by chance; that is not the system's fault).
///
/// Requests left unsent that had waited no longer than the generator's allowed lag when the
/// run closed are not a sign of overload: they fell due in the last instants, before the
/// dispatcher reached them (at 200k/s a few are always that close to the end). They stay
/// counted in `offered`, but only a longer wait says the callers were all stuck.
fn unsustained(spec: &LoadSpec, o: &OfferedLoad, lag_limit: Duration) -> Option<String> {
    let scheduled_per_s = match spec.length {
        Length::Duration(d) => o.due as f64 / d.as_secs_f64().max(1e-9),
        Length::Requests(_) => o.rate_per_s,
    };
    let stuck = o.unsent > 0
        && o.unsent_wait
            .as_ref()
            .is_none_or(|w| w.max_ns > lag_limit.as_nanos() as u64);
    if !stuck && o.achieved_per_s >= SUSTAINED_SHARE * scheduled_per_s {
        return None;
    }
    let mut why = format!(
        "offered {}/s, achieved {}/s: the system under test could not keep up",
        rate_text(o.rate_per_s),
        rate_text(o.achieved_per_s)
    );
    if o.unsent > 0 {
        why.push_str(&format!(
            " ({} of {} requests due were never sent; the percentiles leave them out",
            o.unsent, o.due
        ));
        if let Some(w) = &o.unsent_wait {
            why.push_str(&format!(
                ": they had waited {} to {} when the run ended",
                wirebench_reports::html::dur(w.min_ns),
                wirebench_reports::html::dur(w.max_ns)
            ));
        }
        why.push(')');
    }
    Some(why)
}

/// A rate as people write it: `5000`, `837`, `12.5`.
fn rate_text(r: f64) -> String {
    if r >= 100.0 || r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirebench_reports::results::LatencySummary;
    use wirebench_scenarios::load::Schedule;

    fn open() -> LoadSpec {
        LoadSpec {
            mode: Mode::Open {
                rate: 100.0,
                schedule: Schedule::Poisson,
                max_in_flight: 4,
            },
            ..LoadSpec::default()
        }
    }

    fn summary(lag_p99_us: u64, busy: f64) -> RunSummary {
        RunSummary {
            calls: 100,
            ok: 100,
            generator_lag: Some(LatencySummary {
                p99_ns: lag_p99_us * 1000,
                ..LatencySummary::default()
            }),
            worker_busy: vec![0.1, busy],
            ..RunSummary::default()
        }
    }

    fn child() -> ServerInfo {
        ServerInfo {
            placement: "child".into(),
            pid: Some(1),
            ..ServerInfo::default()
        }
    }

    #[test]
    fn a_busy_host_is_named_for_a_slipped_schedule_and_noted_for_a_kept_one() {
        let busy = |lag_us| {
            let mut s = summary(lag_us, 0.1);
            s.host = Some(wirebench_reports::results::HostLoad {
                window_s: 2.0,
                cpus: 2,
                other_cpus: 1.2,
                steal_ms: 0.0,
            });
            s
        };
        let ctx = RunContext::default();
        let v = judge(&open(), &busy(3000), &child(), false, &ctx);
        assert!(!v.valid);
        assert!(
            v.reasons[0].contains("host busy: other processes used 1.20 of 2"),
            "{v:?}"
        );
        assert!(
            v.reasons[1].contains("not because the generator was slow"),
            "{v:?}"
        );
        let v = judge(&open(), &busy(100), &child(), false, &ctx);
        assert!(v.valid, "{v:?}");
        assert!(
            v.notes.iter().any(|n| n.contains("the schedule held")),
            "{v:?}"
        );
        // An external server without its pid is part of "others", and the verdict says so.
        let ctx = RunContext {
            target: Some("127.0.0.1:1".into()),
            ..RunContext::default()
        };
        let v = judge(&open(), &busy(3000), &child(), false, &ctx);
        assert!(v.reasons[0].contains("--target-pid"), "{v:?}");
        // A slipped schedule on a quiet host is the generator's.
        let v = judge(
            &open(),
            &summary(3000, 0.1),
            &child(),
            false,
            &RunContext::default(),
        );
        assert!(
            v.reasons[0].contains("the load generator fell behind"),
            "{v:?}"
        );
    }

    #[test]
    fn lag_over_the_threshold_invalidates_an_open_loop() {
        let ctx = RunContext::default();
        let v = judge(&open(), &summary(100, 0.1), &child(), false, &ctx);
        assert!(v.valid, "{v:?}");
        let v = judge(&open(), &summary(5000, 0.1), &child(), false, &ctx);
        assert!(!v.valid);
        assert!(v.reasons[0].contains("generator lag p99"), "{v:?}");
    }

    #[test]
    fn a_saturated_client_invalidates_a_closed_loop_only() {
        let ctx = RunContext::default();
        let closed = LoadSpec::default();
        let mut s = summary(0, 0.99);
        s.generator_lag = None;
        let v = judge(&closed, &s, &child(), false, &ctx);
        assert!(!v.valid);
        assert!(v.reasons[0].contains("saturated"), "{v:?}");
        // In-process servers share the client's threads: noted, not judged.
        let v = judge(&closed, &s, &child(), true, &ctx);
        assert!(v.valid && !v.notes.is_empty(), "{v:?}");
        // Open loops are judged by their lag (busy time includes pacing).
        let v = judge(&open(), &summary(10, 0.99), &child(), false, &ctx);
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn unanswered_calls_and_interruptions_invalidate() {
        let ctx = RunContext::default();
        let mut s = summary(10, 0.1);
        s.incomplete = 3;
        let v = judge(&open(), &s, &child(), false, &ctx);
        assert!(!v.valid && v.reasons[0].contains("3 calls"), "{v:?}");
        ctx.interrupted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let v = judge(&open(), &summary(10, 0.1), &child(), false, &ctx);
        assert!(!v.valid && v.reasons[0].contains("interrupted"), "{v:?}");
        let mut s = summary(10, 0.1);
        s.calls = 0;
        let v = judge(&open(), &s, &child(), false, &RunContext::default());
        assert!(!v.valid && v.reasons.iter().any(|r| r.contains("no call")));
    }
}
