//! What a run tells the world while it runs: typed [`RunEvent`]s that the executor emits and
//! reporters consume (the progress display, the plain log, the results sink), through one
//! [`EventBus`]. The bus is also the load engine's live sink, so a running point's interval
//! figures reach the same reporters.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use wirebench_reports::conformance::{CaseOutcome, Verdict};
use wirebench_reports::results::{
    CapacityRecord, FaultRunRecord, FloorRecord, RunFailure, RunRecord, Skipped, Validity,
};

use crate::load::live::{IntervalFigures, LiveSink};

/// Something that happened during a run.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// The run starts.
    Started {
        /// The suite's name and where it came from.
        suite: String,
        /// The transports it runs.
        transports: Vec<String>,
        /// Steps planned.
        steps: usize,
        /// What they are expected to take.
        eta: Duration,
        /// Where the results go, if anywhere.
        out: Option<PathBuf>,
    },
    /// A step starts.
    StepStarted {
        /// Its place in the plan (0-based).
        index: usize,
        /// Its label.
        label: String,
        /// What it is expected to take.
        estimate: Duration,
    },
    /// An interval of the running load point is over.
    Interval(IntervalFigures),
    /// A step ended.
    StepFinished {
        /// Its place in the plan.
        index: usize,
        /// Its label.
        label: String,
        /// What it produced.
        result: StepResult,
    },
    /// Something worth saying between steps.
    Note(String),
    /// The run is over (finished, interrupted, or stopped by an error).
    Finished {
        /// Every planned step ran.
        complete: bool,
        /// Ctrl-C stopped it.
        interrupted: bool,
    },
}

/// What a step produced.
#[derive(Clone, Debug)]
pub enum StepResult {
    /// The floor was measured.
    Floor(Box<FloorRecord>),
    /// The cases of one transport ran.
    Conformance {
        /// The transport.
        transport: String,
        /// Every case's outcome.
        outcomes: Vec<CaseOutcome>,
    },
    /// One repeat of a load point ran.
    Load {
        /// The plan's point it belongs to.
        point: usize,
        /// The repeat's record.
        record: Box<RunRecord>,
    },
    /// A capacity search ran on one transport: its knee and every step's run.
    Capacity {
        /// The knee and the steps' verdicts.
        record: Box<CapacityRecord>,
        /// Every step's run.
        runs: Vec<RunRecord>,
    },
    /// A fault plan ran.
    Fault(Box<FaultRunRecord>),
    /// Not run here, and why (recorded, not a failure).
    Skipped(Skipped),
    /// The step could not run (recorded; the run goes on).
    Failed(RunFailure),
}

impl StepResult {
    /// The line a log shows for it.
    pub fn line(&self, label: &str) -> String {
        let us = |ns: u64| ns as f64 / 1e3;
        match self {
            StepResult::Floor(f) => format!(
                "floor: p50 {:.1} µs, p99 {:.1} µs",
                us(f.latency.p50_ns),
                us(f.latency.p99_ns)
            ),
            StepResult::Conformance {
                transport,
                outcomes,
            } => {
                let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
                let mut s = format!(
                    "{transport} conformance: {} pass, {} fail, {} unsupported",
                    count(Verdict::Pass),
                    count(Verdict::Fail),
                    count(Verdict::Unsupported)
                );
                for o in outcomes.iter().filter(|o| o.verdict == Verdict::Fail) {
                    s.push_str(&format!(
                        "\n    FAIL {}: {}",
                        o.case,
                        o.detail.as_deref().unwrap_or("")
                    ));
                }
                s
            }
            StepResult::Load { record, .. } => {
                let s = &record.summary;
                format!(
                    "{label}: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs{}",
                    s.throughput_per_s,
                    us(s.latency.p50_ns),
                    us(s.latency.p99_ns),
                    invalid(&record.validity)
                )
            }
            StepResult::Fault(r) => {
                let worst = r
                    .phases
                    .iter()
                    .skip(1)
                    .map(|p| p.error_rate)
                    .fold(0.0, f64::max);
                let recovered = r
                    .recovery
                    .iter()
                    .filter_map(|x| x.p99_recovered_ms)
                    .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
                format!(
                    "{label}: {} sent, worst phase error rate {:.1}%, p99 recovered {}{}",
                    r.accounting.sent,
                    worst * 100.0,
                    recovered.map_or("—".into(), |ms| format!("after {ms:.0} ms")),
                    invalid(&r.validity)
                )
            }
            StepResult::Capacity { record, runs } => {
                format!("{label}: {} ({} steps)", record.verdict, runs.len())
            }
            StepResult::Skipped(s) => format!("{label}: skipped ({})", s.reason),
            StepResult::Failed(f) => format!("{label}: FAILED: {}", f.error),
        }
    }
}

fn invalid(v: &Validity) -> String {
    if v.valid {
        String::new()
    } else {
        format!(" — {}: {}", v.label(), v.why())
    }
}

/// A consumer of run events. Called from the executor's thread, and from the load engine's
/// live feed while a point runs (hence `&self` and `Sync`).
pub trait Reporter: Send + Sync {
    /// One event. An error stops the run (the results sink could not save).
    fn event(&self, event: &RunEvent) -> Result<()>;
}

/// Delivers every event to every reporter, in order.
#[derive(Default)]
pub struct EventBus {
    reporters: Mutex<Vec<std::sync::Arc<dyn Reporter>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventBus")
    }
}

impl EventBus {
    /// A bus delivering to `reporters`.
    pub fn new(reporters: Vec<std::sync::Arc<dyn Reporter>>) -> EventBus {
        EventBus {
            reporters: Mutex::new(reporters),
        }
    }

    /// Delivers `event` to every reporter; the first error is returned after all had it.
    pub fn emit(&self, event: RunEvent) -> Result<()> {
        // A reporter that panicked while holding the lock must not silence the others.
        let reporters = self.reporters.lock().unwrap_or_else(|e| e.into_inner());
        let mut first = None;
        for r in reporters.iter() {
            if let Err(e) = r.event(&event) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl LiveSink for EventBus {
    fn interval(&self, figures: &IntervalFigures) {
        // Live figures are for people; a reporter failing on one must not stop the run.
        let _ = self.emit(RunEvent::Interval(figures.clone()));
    }
}
