//! Fault runs: one suite `[[fault]]` plan against one transport. The server runs in a child
//! process, the fault proxy sits in front of its network hop, and the load engine's open
//! loop runs through the proxy across the plan's phases while a controller thread switches
//! the proxy's faults live at each phase boundary and applies process faults (kill -9 and a
//! restart on the same port, or SIGSTOP/SIGCONT) to the server child.
//!
//! The plan's first phase is clean and runs through the same proxy: it is the clean run
//! every fault phase is compared with (docs/ARCHITECTURE.md: "every fault run is compared with
//! a clean run through the same proxy"), so the proxy's own cost is in both sides of every
//! comparison.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wirebench_policy::{PolicyConfig, ReconnectConfig};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use wirebench_core::{Capability, ClientConfig, Code, Transport, WireProtocol};
use wirebench_reports::histogram::{decode, encode, latency_histogram, summarize};
use wirebench_reports::results::{
    Accounting, FaultEvent, FaultPhaseRecord, FaultRunRecord, IntervalRecord, RecoveryRecord,
    ServerInfo, Validity,
};
use wirebench_scenarios::faultplan::{FaultPlan, Phase, ProcessFault, ProcessTarget};
use wirebench_transports::AnyTransport;

use crate::child::{ChildServer, ServerCommand};
use crate::exit::bad_input;
use crate::load::{self, EngineOptions, FaultMode, Hooks, Target};
use crate::proxy::{Protocol, Proxy};
use crate::runner::{RunContext, params};

/// Interval of a fault run's time series: fine enough to time detection and recovery.
pub const FAULT_INTERVAL: Duration = Duration::from_millis(100);
/// The rolling window whose p99 decides that latency recovered.
pub const RECOVERY_WINDOW: Duration = Duration::from_millis(500);

/// What became of one plan against one transport.
#[derive(Debug)]
pub enum PlanOutcome {
    /// It ran.
    Ran(Box<FaultRunRecord>),
    /// It cannot run against this transport, and why.
    Skipped(String),
}

/// The resilience policy a plan's `policy` table describes (`transports::policy`), checked.
/// A policy without `reconnect` gets the default one: the run without a policy re-dials broken
/// connections too, so the comparison shows what retries, breakers and limits add, not what
/// reconnecting does.
pub fn policy_layer(config: &toml::Table) -> Result<PolicyConfig, String> {
    let mut policy = PolicyConfig::deserialize(toml::Value::Table(config.clone()))
        .map_err(|e| format!("policy: {e}"))?;
    if policy.reconnect.is_none() {
        policy.reconnect = Some(ReconnectConfig::default());
    }
    policy.validate().map_err(|e| format!("policy: {e}"))?;
    Ok(policy)
}

/// Why `plan` cannot run against `transport` before anything starts, if it cannot.
pub fn precheck(transport: AnyTransport, plan: &FaultPlan, ctx: &RunContext) -> Option<String> {
    if let Some(reason) = transport.capabilities().gap(Capability::OutOfProcess) {
        return Some(format!("no network path to put a proxy on: {reason}"));
    }
    if ctx.target.is_some() || ctx.server_cmd.is_some() {
        return Some(
            "fault runs start their own server child (not with --target or --server-cmd)".into(),
        );
    }
    let has_process = plan.phases.iter().any(|p| p.process.is_some());
    if has_process && (transport.broker().is_some() || plan.target == ProcessTarget::Broker) {
        return Some(
            "process faults on brokers (and on broker transports' servers) are not built yet"
                .into(),
        );
    }
    None
}

/// The server child and how to start it again on the same address.
struct ServerSlot {
    child: Option<ChildServer>,
    respawn: ServerCommand,
    ready_timeout: Duration,
}

impl ServerSlot {
    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.pid() as i32)
    }

    /// Starts the server again; the port may linger a moment after a kill, so retry briefly.
    fn restart(&mut self) -> Result<u32, String> {
        let mut last = String::new();
        for _ in 0..20 {
            match ChildServer::spawn(&self.respawn, self.ready_timeout) {
                Ok(c) => {
                    let pid = c.pid();
                    self.child = Some(c);
                    return Ok(pid);
                }
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last)
    }
}

/// State the controller shares with the run.
struct Control {
    proxy: Arc<Proxy>,
    server: Arc<Mutex<ServerSlot>>,
    phases: Vec<Phase>,
    events: Arc<Mutex<Vec<FaultEvent>>>,
}

fn note(events: &Mutex<Vec<FaultEvent>>, origin: Instant, what: String) {
    tracing::info!("fault run: {what}");
    if let Ok(mut e) = events.lock() {
        e.push(FaultEvent {
            at_s: origin.elapsed().as_secs_f64(),
            what,
        });
    }
}

fn signal(pid: Option<i32>, sig: Signal) -> String {
    match pid {
        Some(p) => match kill(Pid::from_raw(p), sig) {
            Ok(()) => format!("{sig} to pid {p}"),
            Err(e) => format!("{sig} to pid {p} failed: {e}"),
        },
        None => format!("{sig}: no server process"),
    }
}

fn begin_process(c: &Control, f: ProcessFault, origin: Instant) {
    let Ok(mut slot) = c.server.lock() else {
        return;
    };
    match f {
        ProcessFault::Kill => {
            let what = signal(slot.pid(), Signal::SIGKILL);
            // Reap it (its process group is already gone: stop() finds it exited).
            if let Some(child) = slot.child.take() {
                child.stop();
            }
            note(&c.events, origin, what);
        }
        ProcessFault::Pause => note(&c.events, origin, signal(slot.pid(), Signal::SIGSTOP)),
    }
}

fn end_process(c: &Control, f: ProcessFault, origin: Instant) {
    let Ok(mut slot) = c.server.lock() else {
        return;
    };
    match f {
        ProcessFault::Kill => {
            let what = match slot.restart() {
                Ok(pid) => format!("server restarted on the same address, pid {pid}"),
                Err(e) => format!("server restart failed: {e}"),
            };
            note(&c.events, origin, what);
        }
        ProcessFault::Pause => note(&c.events, origin, signal(slot.pid(), Signal::SIGCONT)),
    }
}

/// Walks the timeline from `origin` (the start of the measured time): at each boundary the
/// previous phase's process fault ends, the proxy takes the new phase's faults, and its
/// process fault begins. After the last phase everything is healed.
fn controller(c: Control, origin: Instant) {
    let mut at = origin;
    let mut active: Option<ProcessFault> = None;
    for phase in &c.phases {
        sleep_until(at);
        if let Some(f) = active.take() {
            end_process(&c, f, origin);
        }
        if let Err(e) = c.proxy.set_faults(phase.faults.clone()) {
            note(&c.events, origin, format!("setting faults failed: {e}"));
        }
        if let Some(f) = phase.process {
            begin_process(&c, f, origin);
            active = Some(f);
        }
        at += phase.duration;
    }
    sleep_until(at);
    if let Some(f) = active {
        end_process(&c, f, origin);
    }
    let _ = c.proxy.set_faults(Vec::new());
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Starts the controller when the measured time starts.
struct FaultHooks {
    control: Option<Control>,
    handle: Option<JoinHandle<()>>,
}

impl Hooks for FaultHooks {
    fn measure_start(&mut self) {
        if let Some(c) = self.control.take() {
            let origin = Instant::now();
            self.handle = std::thread::Builder::new()
                .name("wb-fault-ctl".into())
                .spawn(move || controller(c, origin))
                .ok();
        }
    }

    fn measure_end(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs `plan` against `transport`; `policy` is the policy table when this is the run with
/// a resilience policy (see [`policy_layer`]).
pub fn run_plan(
    transport: AnyTransport,
    plan: &FaultPlan,
    policy: Option<&toml::Table>,
    ctx: &RunContext,
) -> Result<PlanOutcome> {
    if let Some(reason) = precheck(transport, plan, ctx) {
        return Ok(PlanOutcome::Skipped(reason));
    }
    let policy_config = match policy.map(policy_layer).transpose() {
        Ok(p) => p,
        Err(reason) => return Err(bad_input(format!("fault plan {:?}: {reason}", plan.name))),
    };
    let name = transport.name();
    let server_options = ctx.server_options.get(name).cloned().unwrap_or_default();
    let cmd = |listen: String| ServerCommand::Serve {
        transport: name.to_owned(),
        listen,
        options: server_options.clone(),
        threads: ctx.server_threads,
        cpu: ctx.pin.cpus().map(|(_, s)| s),
        tls: None,
    };
    let child = ChildServer::spawn(&cmd("127.0.0.1:0".into()), ctx.ready_timeout)
        .map_err(|e| anyhow!(e))?;
    let endpoint = child.ready.endpoint.clone();
    let server_info = child_info(&child, &endpoint);
    let path = match transport.network_path(&endpoint) {
        Ok(p) => p,
        Err(e) => return Ok(PlanOutcome::Skipped(format!("no network path: {e}"))),
    };
    let udp = path.protocol == WireProtocol::Udp;
    if let Some(spec) = plan.inapplicable(udp) {
        return Ok(PlanOutcome::Skipped(format!(
            "fault {spec:?} does not apply to {}",
            if udp { "UDP" } else { "TCP" }
        )));
    }
    let (rt, proxy) = start_proxy(udp, path.addr, plan.load.seed)?;
    let via: SocketAddr = proxy.local_addr();
    let client_endpoint = transport
        .endpoint_via(&endpoint, via)
        .map_err(|e| anyhow!("{name}: endpoint through the proxy: {e}"))?;
    let server = Arc::new(Mutex::new(ServerSlot {
        child: Some(child),
        // A restarted server must come back where clients (through the proxy) look for it.
        respawn: cmd(path.addr.to_string()),
        ready_timeout: ctx.ready_timeout,
    }));
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut hooks = FaultHooks {
        control: Some(Control {
            proxy: proxy.clone(),
            server: server.clone(),
            phases: plan.phases.clone(),
            events: events.clone(),
        }),
        handle: None,
    };
    let target = Target {
        transport,
        endpoint: client_endpoint,
        client: ClientConfig {
            options: crate::runner::options(ctx.client_options.get(name)),
            ..ClientConfig::default()
        },
    };
    let engine = EngineOptions {
        cpus: ctx.pin.cpus().map(|(c, _)| vec![c]),
        interrupted: ctx.interrupted.clone(),
        fault: Some(FaultMode {
            phases: plan.phase_starts(),
            interval: FAULT_INTERVAL,
            policy: policy_config,
        }),
        ..EngineOptions::default()
    };
    let outcome = load::run(&plan.load, &target, &engine, &mut hooks);
    // Make sure the controller is done (it is joined at measure_end on success).
    hooks.measure_end();
    let counters = proxy.counters();
    drop(proxy);
    drop(rt);
    stop_server(&server);
    let outcome = outcome.map_err(|e| anyhow!(e))?;
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    let rig = Rig {
        udp,
        server: server_info,
        proxy: serde_json::to_value(counters)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        events,
    };
    Ok(PlanOutcome::Ran(Box::new(fault_record(
        transport, plan, policy, ctx, &outcome, rig,
    )?)))
}

/// What the record says of the server child.
fn child_info(child: &ChildServer, endpoint: &str) -> ServerInfo {
    ServerInfo {
        placement: "child".into(),
        endpoint: endpoint.to_owned(),
        pid: Some(child.pid()),
        note: Some(format!("`{}` behind the fault proxy", child.command())),
    }
}

/// The fault proxy in front of `upstream`, on its own small runtime in this process (its
/// CPU is the client's).
fn start_proxy(
    udp: bool,
    upstream: SocketAddr,
    seed: u64,
) -> Result<(tokio::runtime::Runtime, Arc<Proxy>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("wb-fault-proxy")
        .enable_all()
        .build()
        .context("starting the proxy runtime")?;
    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
    let proxy = rt
        .block_on(Proxy::start(
            protocol,
            "127.0.0.1:0",
            upstream,
            Vec::new(),
            seed,
        ))
        .context("starting the fault proxy")?;
    Ok((rt, Arc::new(proxy)))
}

/// Stops the server child (resuming it first: a server left paused would ignore SIGTERM).
fn stop_server(server: &Mutex<ServerSlot>) {
    if let Ok(mut s) = server.lock()
        && let Some(c) = s.child.take()
    {
        let _ = kill(Pid::from_raw(c.pid() as i32), Signal::SIGCONT);
        c.stop();
    }
}

/// What a fault run's record takes from its setup.
struct Rig {
    udp: bool,
    server: ServerInfo,
    /// The proxy's counters at the end.
    proxy: BTreeMap<String, u64>,
    /// Process faults applied, in order.
    events: Vec<FaultEvent>,
}

/// The saved record of a fault run: per phase, the recovery, the accounting and validity.
fn fault_record(
    transport: AnyTransport,
    plan: &FaultPlan,
    policy: Option<&toml::Table>,
    ctx: &RunContext,
    outcome: &load::Outcome,
    rig: Rig,
) -> Result<FaultRunRecord> {
    let name = transport.name();
    let m = &outcome.merged;
    let phases: Vec<FaultPhaseRecord> = plan
        .phases
        .iter()
        .zip(&m.phases)
        .map(|(p, r)| phase_record(p, r))
        .collect::<Result<_>>()?;
    let intervals = crate::runner::interval_records(&m.intervals, FAULT_INTERVAL);
    let firsts: Vec<(Option<f64>, Option<f64>)> = m
        .phases
        .iter()
        .map(|r| {
            (
                r.first_error.map(|d| d.as_secs_f64()),
                r.first_ok.map(|d| d.as_secs_f64()),
            )
        })
        .collect();
    let recovery = recovery(plan, &phases, &firsts, &intervals);
    let mut accounting = account(m.sent, &m.status, outcome.incomplete);
    accounting.unsent = m.unsent;
    let validity = fault_validity(&accounting, &phases, m.lag.as_ref(), ctx);
    Ok(FaultRunRecord {
        plan: plan.name.clone(),
        transport: name.to_owned(),
        policy: if policy.is_some() { "with" } else { "none" }.into(),
        policy_config: policy.and_then(|p| serde_json::to_value(p).ok()),
        protocol: if rig.udp { "udp" } else { "tcp" }.into(),
        target: plan.target.name().into(),
        params: params(&plan.load, ctx.pin, name, ctx),
        server: rig.server,
        interval_s: FAULT_INTERVAL.as_secs_f64(),
        phases,
        recovery,
        accounting,
        proxy: rig.proxy,
        events: rig.events,
        validity,
        intervals,
    })
}

/// A fault run is invalid when its requests do not add up; a late generator is a note (the
/// fault itself may be what delayed it).
fn fault_validity(
    accounting: &Accounting,
    phases: &[FaultPhaseRecord],
    lag: Option<&hdrhistogram::Histogram<u64>>,
    ctx: &RunContext,
) -> Validity {
    let mut validity = Validity {
        valid: true,
        reasons: Vec::new(),
        notes: vec![
            "the fault proxy runs inside the client process: client CPU includes it".into(),
        ],
        unsustained: None,
    };
    let phase_sent: u64 = phases.iter().map(|p| p.sent).sum();
    if !accounting.balanced || phase_sent != accounting.sent {
        validity.valid = false;
        validity.reasons.push(format!(
            "request accounting does not add up: sent {} (phases {phase_sent}) vs ok {} + \
             failed {} + timed out {}, {} unanswered",
            accounting.sent,
            accounting.ok,
            accounting.failed,
            accounting.timed_out,
            accounting.unanswered
        ));
    }
    if accounting.unsent > 0 {
        validity.notes.push(format!(
            "{} requests due were never sent: every caller was busy (in calls the fault held \
             up) until the run ended",
            accounting.unsent
        ));
    }
    if let Some(lag) = lag {
        let p99 = lag.value_at_quantile(0.99);
        if p99 > u64::try_from(ctx.validity.max_lag_p99.as_nanos()).unwrap_or(u64::MAX) {
            validity.notes.push(format!(
                "the generator's lag p99 was {:.1} ms (over its {:?} limit): send times under \
                 the fault may be late",
                p99 as f64 / 1e6,
                ctx.validity.max_lag_p99
            ));
        }
    }
    validity
}

/// Sums what was sent and how it ended; `balanced` when every request is accounted for.
pub fn account(sent: u64, status: &[u64; 17], unanswered: u64) -> Accounting {
    let ok = status[Code::Ok.as_u32() as usize];
    let timed_out = status[Code::DeadlineExceeded.as_u32() as usize];
    let completed: u64 = status.iter().sum();
    let failed = completed - ok - timed_out;
    Accounting {
        sent,
        ok,
        failed,
        timed_out,
        unanswered,
        balanced: unanswered == 0 && sent == completed,
        unsent: 0,
    }
}

fn phase_record(p: &Phase, r: &crate::load::recorder::PhaseRecord) -> Result<FaultPhaseRecord> {
    let completed: u64 = r.status.iter().sum();
    let a = account(r.sent, &r.status, r.sent.saturating_sub(completed));
    let mut status_counts = BTreeMap::new();
    for code in Code::ALL {
        let n = r.status[code.as_u32() as usize];
        if n > 0 {
            status_counts.insert(code.as_str().to_owned(), n);
        }
    }
    let secs = p.duration.as_secs_f64().max(1e-9);
    Ok(FaultPhaseRecord {
        name: p.name.clone(),
        start_s: r.start.as_secs_f64(),
        duration_s: p.duration.as_secs_f64(),
        faults: p.specs.clone(),
        process: p.process.map(|f| f.name().to_owned()),
        sent: r.sent,
        ok: a.ok,
        failed: a.failed,
        timed_out: a.timed_out,
        unanswered: a.unanswered,
        status_counts,
        throughput_per_s: a.ok as f64 / secs,
        error_rate: if r.sent > 0 {
            (r.sent - a.ok) as f64 / r.sent as f64
        } else {
            0.0
        },
        latency: summarize(&r.latency),
        histogram: encode(&r.latency).map_err(|e| anyhow!(e))?,
    })
}

/// Detection and recovery of every phase that is not clean, against the first (clean) one.
fn recovery(
    plan: &FaultPlan,
    phases: &[FaultPhaseRecord],
    firsts: &[(Option<f64>, Option<f64>)],
    intervals: &[IntervalRecord],
) -> Vec<RecoveryRecord> {
    // First failed (`ok == false`) or successful call to complete in phase `i`, seconds.
    let phase_first =
        |i: usize, ok: bool| firsts.get(i).and_then(|(e, o)| if ok { *o } else { *e });
    let Some(clean) = phases.first() else {
        return Vec::new();
    };
    let clean_p99 = clean.latency.p99_ns;
    let total = plan.duration().as_secs_f64();
    let step = FAULT_INTERVAL.as_secs_f64();
    let window = RECOVERY_WINDOW.as_secs_f64();
    let rise = |a: u64, b: u64| {
        i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
    };
    // Decoded once; a window merges a few of them.
    let decoded: Vec<(f64, Option<Histogram<u64>>)> = intervals
        .iter()
        .map(|iv| (iv.start_s, decode(&iv.histogram).ok()))
        .collect();
    let mut out = Vec::new();
    for (i, (p, rec)) in plan.phases.iter().zip(phases).enumerate() {
        if p.is_clean() {
            continue;
        }
        let start = rec.start_s;
        let heal = start + rec.duration_s;
        let ends_run = i + 1 >= phases.len();
        let detected_ms = phase_first(i, false).map(|t| (t - start) * 1e3);
        let first_success_ms = if ends_run {
            None
        } else {
            phase_first(i + 1, true).map(|t| (t - heal) * 1e3)
        };
        let mut p99_recovered_ms = None;
        if !ends_run {
            let mut t0 = heal;
            while t0 + window <= total + 1e-9 {
                let mut h = latency_histogram();
                for (s, hist) in &decoded {
                    if *s >= t0 - 1e-9
                        && *s < t0 + window - 1e-9
                        && let Some(hist) = hist
                    {
                        let _ = h.add(hist);
                    }
                }
                if !h.is_empty() && h.value_at_quantile(0.99) <= clean_p99.saturating_mul(2) {
                    p99_recovered_ms = Some((t0 - heal) * 1e3);
                    break;
                }
                t0 += step;
            }
        }
        out.push(RecoveryRecord {
            phase: p.name.clone(),
            detected_ms,
            first_success_ms,
            p99_recovered_ms,
            window_ms: window * 1e3,
            clean_p99_ns: clean_p99,
            p50_rise_ns: rise(rec.latency.p50_ns, clean.latency.p50_ns),
            p99_rise_ns: rise(rec.latency.p99_ns, clean.latency.p99_ns),
        });
    }
    out
}
