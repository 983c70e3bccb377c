//! The reporters of a run: on a terminal a bar with an ETA and, beneath it, the running
//! point's live figures ([`Terminal`], indicatif, as k6 and oha show them); elsewhere one
//! plain line per step and per interval ([`Plain`]); and the results sink, which keeps
//! `results.json` saved after every step and renders the reports at the end ([`ResultsSink`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use wirebench_reports::Rendered;
use wirebench_reports::results::{Results, RunRecord};

use super::events::{Reporter, RunEvent, StepResult};
use crate::environment;

/// The progress reporter for how stderr is attached: a bar on a terminal unless `plain`.
pub fn progress(plain: bool) -> Arc<dyn Reporter> {
    if !plain && std::io::stderr().is_terminal() {
        Arc::new(Terminal::new())
    } else {
        Arc::new(Plain::default())
    }
}

/// One line per step and per interval on stderr (logs, CI).
#[derive(Debug, Default)]
pub struct Plain {
    steps: AtomicU64,
}

impl Reporter for Plain {
    fn event(&self, event: &RunEvent) -> Result<()> {
        match event {
            RunEvent::Started { steps, .. } => {
                self.steps.store(*steps as u64, Ordering::Relaxed);
                eprintln!("{}", started_line(event));
            }
            RunEvent::StepStarted { index, label, .. } => {
                let total = self.steps.load(Ordering::Relaxed);
                eprintln!("[{}/{total}] {label} ...", index + 1);
            }
            RunEvent::Interval(f) => eprintln!("      {}", f.line()),
            RunEvent::StepFinished { label, result, .. } => {
                eprintln!("      {}", result.line(label));
            }
            RunEvent::Note(n) => eprintln!("      {n}"),
            RunEvent::Finished { .. } => {}
        }
        Ok(())
    }
}

fn started_line(event: &RunEvent) -> String {
    match event {
        RunEvent::Started {
            suite,
            transports,
            eta,
            out,
            ..
        } => format!(
            "wirebench: {suite}, transports {}, about {} s{}",
            transports.join(", "),
            eta.as_secs(),
            out.as_ref()
                .map_or(String::new(), |o| format!("; output in {}", o.display()))
        ),
        _ => String::new(),
    }
}

/// Time through the plan: the bar advances through each step's estimate.
#[derive(Debug)]
struct Clock {
    /// Estimated milliseconds of the steps already done.
    base_ms: AtomicU64,
    /// The current step's estimate.
    step_ms: AtomicU64,
    step_start: Mutex<Instant>,
}

/// A bar with an ETA and the running point's live figures beneath it.
pub struct Terminal {
    multi: MultiProgress,
    bar: Mutex<Option<ProgressBar>>,
    live: ProgressBar,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
    steps: AtomicU64,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

impl Terminal {
    fn new() -> Terminal {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let live = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("  {msg}") {
            live.set_style(style);
        }
        Terminal {
            multi,
            bar: Mutex::new(None),
            live,
            clock: Arc::new(Clock {
                base_ms: AtomicU64::new(0),
                step_ms: AtomicU64::new(0),
                step_start: Mutex::new(Instant::now()),
            }),
            stop: Arc::new(AtomicBool::new(false)),
            ticker: Mutex::new(None),
            steps: AtomicU64::new(0),
        }
    }

    fn bar(&self) -> Option<ProgressBar> {
        self.bar.lock().ok().and_then(|b| b.clone())
    }

    /// A line above the bar.
    fn println(&self, line: &str) {
        let _ = self.multi.println(format!("  {line}"));
    }

    fn start(&self, total: Duration) {
        let bar = self
            .multi
            .insert(0, ProgressBar::new(total.as_millis() as u64));
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed:>4} [{wide_bar}] {percent:>3}% ETA {eta:<4} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let (clock, stop, ticking) = (self.clock.clone(), self.stop.clone(), bar.clone());
        let ticker = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = clock
                    .step_start
                    .lock()
                    .map(|s| *s)
                    .unwrap_or_else(|_| Instant::now());
                let within = (started.elapsed().as_millis() as u64)
                    .min(clock.step_ms.load(Ordering::Relaxed));
                ticking.set_position(clock.base_ms.load(Ordering::Relaxed) + within);
                std::thread::park_timeout(Duration::from_millis(200));
            }
        });
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
        if let Ok(mut t) = self.ticker.lock() {
            *t = Some(ticker);
        }
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            t.thread().unpark();
            let _ = t.join();
        }
        self.live.finish_and_clear();
        if let Some(bar) = self.bar() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Reporter for Terminal {
    fn event(&self, event: &RunEvent) -> Result<()> {
        match event {
            RunEvent::Started { steps, eta, .. } => {
                self.steps.store(*steps as u64, Ordering::Relaxed);
                self.println(&started_line(event));
                self.start(*eta);
            }
            RunEvent::StepStarted {
                index,
                label,
                estimate,
            } => {
                if let Ok(mut s) = self.clock.step_start.lock() {
                    *s = Instant::now();
                }
                self.clock
                    .step_ms
                    .store(estimate.as_millis() as u64, Ordering::Relaxed);
                let total = self.steps.load(Ordering::Relaxed);
                if let Some(bar) = self.bar() {
                    bar.set_message(format!("[{}/{total}] {label}", index + 1));
                }
                self.live.set_message("");
            }
            RunEvent::Interval(f) => self.live.set_message(f.line()),
            RunEvent::StepFinished { label, result, .. } => {
                let est = self.clock.step_ms.swap(0, Ordering::Relaxed);
                self.clock.base_ms.fetch_add(est, Ordering::Relaxed);
                self.live.set_message("");
                self.println(&result.line(label));
            }
            RunEvent::Note(n) => self.println(n),
            RunEvent::Finished { .. } => self.shutdown(),
        }
        Ok(())
    }
}

/// Keeps `results.json` saved after every step — so an error or Ctrl-C keeps what finished —
/// and renders `report.html`, `summary.md` and `junit.xml` when the run is over.
pub struct ResultsSink {
    path: PathBuf,
    dir: PathBuf,
    state: Mutex<SinkState>,
}

struct SinkState {
    results: Results,
    /// Where the folded load records start in `results.runs`.
    first_slot: usize,
    /// Each plan point's repeats so far.
    repeats: Vec<Vec<RunRecord>>,
    /// The capacity searches' step runs, kept after the folded load records.
    steps: Vec<RunRecord>,
    rendered: Option<Rendered>,
}

impl std::fmt::Debug for ResultsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultsSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ResultsSink {
    /// A sink writing `results` (already holding what was known before the run) into `dir`,
    /// for a plan of `points` load points; saves it at once.
    pub fn new(results: Results, dir: &Path, points: usize) -> Result<ResultsSink> {
        let sink = ResultsSink {
            path: dir.join("results.json"),
            dir: dir.to_owned(),
            state: Mutex::new(SinkState {
                first_slot: results.runs.len(),
                steps: Vec::new(),
                results,
                repeats: vec![Vec::new(); points],
                rendered: None,
            }),
        };
        sink.save(&sink.lock())?;
        Ok(sink)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, s: &SinkState) -> Result<()> {
        s.results
            .save(&self.path)
            .with_context(|| format!("saving {}", self.path.display()))
    }

    /// Where the results are saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rendered reports, once the run is over.
    pub fn rendered(&self) -> Option<Rendered> {
        self.lock().rendered.clone()
    }

    /// Steps that could not run (recorded as errors).
    pub fn errors(&self) -> usize {
        self.lock().results.errors.len()
    }

    /// Thresholds breached, each `transport/point: threshold (measured)`.
    pub fn breaches(&self) -> Vec<String> {
        let s = self.lock();
        s.results
            .runs
            .iter()
            .flat_map(|r| {
                r.breaches().map(move |b| {
                    format!(
                        "{}/{}: {} (measured {})",
                        r.transport, r.point, b.threshold, b.measured
                    )
                })
            })
            .chain(
                s.results
                    .capacity
                    .iter()
                    .filter_map(crate::capacity::below_min),
            )
            .collect()
    }

    fn record(s: &mut SinkState, result: &StepResult) {
        let r = &mut s.results;
        match result {
            StepResult::Floor(f) => r.floor = Some((**f).clone()),
            StepResult::Conformance { outcomes, .. } => r.conformance.extend(outcomes.clone()),
            StepResult::Load { point, record } => {
                if let Some(done) = s.repeats.get_mut(*point) {
                    done.push((**record).clone());
                }
                // A point's repeats fold into one record (see `RunRecord::from_repeats`),
                // rebuilt after every repeat so an interrupted run keeps what it measured.
                r.runs.truncate(s.first_slot);
                r.runs.extend(
                    s.repeats
                        .iter()
                        .filter_map(|d| RunRecord::from_repeats(d.clone())),
                );
                r.runs.extend(s.steps.iter().cloned());
            }
            StepResult::Capacity { record, runs } => {
                s.steps.extend(runs.iter().cloned());
                r.runs.extend(runs.iter().cloned());
                r.capacity.push((**record).clone());
            }
            StepResult::Fault(f) => r.fault_runs.push((**f).clone()),
            StepResult::Skipped(k) => r.skipped.push(k.clone()),
            StepResult::Failed(e) => r.errors.push(e.clone()),
        }
    }
}

impl Reporter for ResultsSink {
    fn event(&self, event: &RunEvent) -> Result<()> {
        match event {
            RunEvent::StepFinished { result, .. } => {
                let mut s = self.lock();
                ResultsSink::record(&mut s, result);
                self.save(&s)
            }
            RunEvent::Finished {
                complete,
                interrupted,
            } => {
                let mut s = self.lock();
                s.results.finished_at = Some(environment::now_rfc3339());
                s.results.complete = *complete;
                s.results.interrupted = *interrupted;
                self.save(&s)?;
                let rendered = wirebench_reports::render_all(&s.results, &self.dir)
                    .context("rendering the reports")?;
                s.rendered = Some(rendered);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
