//! The load engine: runs a [`LoadSpec`] against an endpoint with worker threads (each a
//! single-threaded runtime), then merges what they measured.
//!
//! The coordinator connects every worker first (so a bad target fails before anything is
//! measured), starts them on a common clock, calls the caller's hooks at the start and end of
//! the measured phase (to snapshot process CPU and memory), and merges the recorders.

pub mod live;
pub mod recorder;
pub mod schedule;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use thiserror::Error;
use wirebench_core::{ClientConfig, WireBytes};
use wirebench_scenarios::load::{Length, LoadSpec};
use wirebench_transports::AnyTransport;

use crate::affinity::CpusSeen;
use recorder::{Merged, merge};
use worker::{Start, WorkerPlan, run_worker};

/// Why a load run could not run.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The parameters are invalid.
    #[error("invalid load parameters: {0}")]
    Invalid(#[from] wirebench_scenarios::load::InvalidLoad),
    /// A worker could not connect to the endpoint.
    #[error("{0}")]
    Connect(String),
    /// A worker failed or panicked.
    #[error("load worker failed: {0}")]
    Worker(String),
    /// The coordinated start was missed by more than its grace: nothing ran.
    #[error("{0}")]
    Late(String),
}

/// What to load.
#[derive(Clone, Debug)]
pub struct Target {
    /// The transport.
    pub transport: AnyTransport,
    /// The server's endpoint.
    pub endpoint: String,
    /// Client configuration (options from the suite or the command line).
    pub client: ClientConfig,
}

/// How to run the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// CPUs to pin worker threads to, round-robin (`None`: unpinned).
    pub cpus: Option<Vec<usize>>,
    /// Set on Ctrl-C: stop starting calls, finish, report.
    pub interrupted: Arc<AtomicBool>,
    /// How long to wait for calls still in flight after the run ends.
    pub drain: Duration,
    /// Set for fault runs (see [`FaultMode`]).
    pub fault: Option<FaultMode>,
    /// Where the live figures of each finished interval go while the run goes on.
    pub live: Option<Arc<dyn live::LiveSink>>,
    /// A coordinated start (wall clock) and how late it may be met: the warm-up starts then,
    /// or the run does not start at all.
    pub start_at: Option<(std::time::SystemTime, Duration)>,
}

impl std::fmt::Debug for dyn live::LiveSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveSink")
    }
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            cpus: None,
            interrupted: Arc::new(AtomicBool::new(false)),
            drain: Duration::from_secs(5),
            fault: None,
            live: None,
            start_at: None,
        }
    }
}

/// How a fault run differs from a load run: requests are accounted per phase (the phase
/// they were sent in), the time series is finer (to time detection and recovery), the
/// per-call deadline is enforced by the engine, and connections that report `UNAVAILABLE`
/// are re-dialed (a reset or a killed server breaks them; without a re-dial every later
/// call would fail and nothing could recover).
#[derive(Clone, Debug)]
pub struct FaultMode {
    /// Phase start offsets from the start of the measured time (the first is zero).
    pub phases: Vec<Duration>,
    /// Length of one interval of the time series.
    pub interval: Duration,
    /// The resilience policy every connection is wrapped in (`None`: plain connections,
    /// re-dialed by the engine when they break).
    pub policy: Option<wirebench_policy::PolicyConfig>,
}

/// Called by the coordinator at the edges of the measured phase.
pub trait Hooks {
    /// The measured phase starts now (warm-up over).
    fn measure_start(&mut self) {}
    /// Every worker finished.
    fn measure_end(&mut self) {}
}

/// No hooks.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// What a load run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Merged recorders.
    pub merged: Merged,
    /// Measured calls left unanswered, and in an open loop those due but never sent because
    /// every caller was stuck until the drain ran out.
    pub incomplete: u64,
    /// Bytes on the wire during the measured phase (when every connection counts them).
    pub wire: Option<WireBytes>,
    /// Busy fraction of each worker thread.
    pub worker_busy: Vec<f64>,
    /// CPUs the workers ran on.
    pub client_cpus: CpusSeen,
    /// The measured time: from the start of the measured phase to the last answer (at least
    /// the asked duration in a duration run).
    pub elapsed: Duration,
    /// With a coordinated start: how far from it the warm-up began, ms (positive: late).
    pub start_skew_ms: Option<f64>,
}

fn split(total: u64, parts: u32, i: u32) -> u64 {
    let parts = u64::from(parts);
    total / parts + u64::from(u64::from(i) < total % parts)
}

/// Runs `spec` against `target`.
pub fn run(
    spec: &LoadSpec,
    target: &Target,
    opts: &EngineOptions,
    hooks: &mut dyn Hooks,
) -> Result<Outcome, LoadError> {
    spec.validate()?;
    let (live_tx, live_rx) = std::sync::mpsc::channel();
    let live = opts.live.is_some().then_some(live_tx);
    let workers = spawn_workers(spec, target, opts, live)?;
    if let Err(e) = workers.wait_connected() {
        workers.abandon();
        return Err(LoadError::Connect(e));
    }
    // Give every worker a moment to be waiting before the common start; with a coordinated
    // start, that start (on the wall clock, which every shard shares), or nothing if it was
    // missed by more than its grace.
    let soon = Instant::now() + Duration::from_millis(5);
    let (t0, start_skew_ms) = match opts.start_at {
        None => (soon, None),
        Some((at, grace)) => {
            let (now_wall, now) = (std::time::SystemTime::now(), Instant::now());
            match at.duration_since(now_wall) {
                Ok(ahead) => (now + ahead, Some(0.0)),
                Err(late) if late.duration() <= grace => {
                    (soon, Some(late.duration().as_secs_f64() * 1e3 + 5.0))
                }
                Err(late) => {
                    workers.abandon();
                    return Err(LoadError::Late(format!(
                        "the coordinated start was {:.0} ms ago, beyond the grace of {:.0} ms: \
                         not running late (a late shard skews the whole run's offered load)",
                        late.duration().as_secs_f64() * 1e3,
                        grace.as_secs_f64() * 1e3
                    )));
                }
            }
        }
    };
    let measure_start = t0 + spec.warmup;
    let end = match spec.length {
        Length::Duration(d) => Some(measure_start + d),
        Length::Requests(_) => None,
    };
    let start = Start {
        t0,
        measure_start,
        end,
    };
    for s in &workers.starts {
        let _ = s.send(Some(start));
    }
    // The live view merges the workers' intervals on a thread of its own, off their path.
    let feed = opts.live.clone().map(|sink| {
        live::Feed::start(
            live_rx,
            sink,
            measure_start,
            opts.fault
                .as_ref()
                .map_or(recorder::INTERVAL, |f| f.interval),
            spec.workers,
        )
    });
    let now = Instant::now();
    if measure_start > now {
        std::thread::sleep(measure_start - now);
    }
    hooks.measure_start();
    let outputs = workers.join();
    hooks.measure_end();
    if let Some(f) = feed {
        f.finish();
    }
    let mut outcome = combine(outputs?, measure_start, end);
    outcome.start_skew_ms = start_skew_ms;
    Ok(outcome)
}

/// The worker threads of a run, connecting.
struct Workers {
    handles: Vec<std::thread::JoinHandle<Result<worker::WorkerOutput, String>>>,
    starts: Vec<std::sync::mpsc::Sender<Option<Start>>>,
    ready: std::sync::mpsc::Receiver<Result<(), String>>,
}

fn spawn_workers(
    spec: &LoadSpec,
    target: &Target,
    opts: &EngineOptions,
    live: Option<recorder::LiveSender>,
) -> Result<Workers, LoadError> {
    let spec_arc = Arc::new(spec.clone());
    let workers = spec.workers;
    let mut handles = Vec::new();
    let mut starts = Vec::new();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    for i in 0..workers {
        let plan = WorkerPlan {
            index: i,
            workers,
            spec: spec_arc.clone(),
            transport: target.transport,
            endpoint: target.endpoint.clone(),
            client: target.client.clone(),
            connections: split(u64::from(spec.connections), workers, i) as u32,
            callers: split(u64::from(spec.in_flight()), workers, i) as u32,
            requests: match spec.length {
                Length::Requests(n) => Some(split(n, workers, i)),
                Length::Duration(_) => None,
            },
            pin: opts
                .cpus
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| c[i as usize % c.len()]),
            interrupted: opts.interrupted.clone(),
            drain: opts.drain,
            fault: opts.fault.clone(),
            live: live.clone(),
        };
        let (start_tx, start_rx) = std::sync::mpsc::channel();
        let ready = ready_tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("wb-load-{i}"))
            .spawn(move || run_worker(plan, ready, start_rx))
            .map_err(|e| LoadError::Worker(format!("spawning worker thread: {e}")))?;
        handles.push(h);
        starts.push(start_tx);
    }
    Ok(Workers {
        handles,
        starts,
        ready,
    })
}

impl Workers {
    /// Waits until every worker connected; the first failure otherwise.
    fn wait_connected(&self) -> Result<(), String> {
        let mut failure = None;
        for _ in 0..self.handles.len() {
            match self.ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert("a load worker exited before connecting".into());
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Tells every worker not to start, and waits for them.
    fn abandon(self) {
        for s in &self.starts {
            let _ = s.send(None);
        }
        for h in self.handles {
            let _ = h.join();
        }
    }

    /// Waits for every worker to finish; the first failure otherwise.
    fn join(self) -> Result<Vec<worker::WorkerOutput>, LoadError> {
        let mut outputs = Vec::new();
        let mut error = None;
        for h in self.handles {
            match h.join() {
                Ok(Ok(o)) => outputs.push(o),
                Ok(Err(e)) => {
                    error.get_or_insert(e);
                }
                Err(_) => {
                    error.get_or_insert("a load worker panicked".to_owned());
                }
            }
        }
        match error {
            Some(e) => Err(LoadError::Worker(e)),
            None => Ok(outputs),
        }
    }
}

/// The workers' outputs as one outcome.
fn combine(
    outputs: Vec<worker::WorkerOutput>,
    measure_start: Instant,
    end: Option<Instant>,
) -> Outcome {
    let mut incomplete = 0;
    let mut wire = Some(WireBytes::default());
    let mut worker_busy = Vec::new();
    let mut client_cpus = CpusSeen::default();
    let mut recorders = Vec::new();
    for o in outputs {
        incomplete += o.incomplete;
        wire = match (wire, o.wire) {
            (Some(a), Some(b)) => Some(WireBytes {
                sent: a.sent + b.sent,
                received: a.received + b.received,
            }),
            _ => None,
        };
        worker_busy.push(o.busy);
        for c in o.cpus.0 {
            client_cpus.note(Some(c));
        }
        recorders.push(o.recorder);
    }
    let merged = merge(recorders);
    let last = merged.last_done.unwrap_or(measure_start);
    let last = match end {
        Some(e) => last.max(e),
        None => last,
    };
    Outcome {
        elapsed: last.saturating_duration_since(measure_start),
        merged,
        incomplete,
        wire,
        worker_busy,
        client_cpus,
        start_skew_ms: None,
    }
}
