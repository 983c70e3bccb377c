//! Progress of a `wirebench run`: a bar with an ETA (indicatif) on a terminal, one plain line
//! per step otherwise (logs, CI). The bar advances through each step's time estimate.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

struct Clock {
    base_ms: AtomicU64,
    step_ms: AtomicU64,
    step_start: Mutex<Instant>,
}

/// Progress through a planned sequence of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    steps: usize,
    step: usize,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("step", &self.step)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// Progress over `steps` steps expected to take `total` in all; a bar only when stderr is
    /// a terminal and `plain` is not asked for.
    pub fn new(total: Duration, steps: usize, plain: bool) -> Progress {
        let clock = Arc::new(Clock {
            base_ms: AtomicU64::new(0),
            step_ms: AtomicU64::new(0),
            step_start: Mutex::new(Instant::now()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let bar = (!plain && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.as_millis() as u64),
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed:>4} [{wide_bar}] {percent:>3}% ETA {eta:<4} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let ticker = bar.clone().map(|bar| {
            let (clock, stop) = (clock.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = clock
                        .step_start
                        .lock()
                        .map(|s| *s)
                        .unwrap_or_else(|_| Instant::now());
                    let within = (started.elapsed().as_millis() as u64)
                        .min(clock.step_ms.load(Ordering::Relaxed));
                    bar.set_position(clock.base_ms.load(Ordering::Relaxed) + within);
                    std::thread::park_timeout(Duration::from_millis(200));
                }
            })
        });
        Progress {
            bar,
            clock,
            stop,
            ticker,
            steps,
            step: 0,
        }
    }

    /// Starts the next step, expected to take `estimate`.
    pub fn begin(&mut self, label: &str, estimate: Duration) {
        self.step += 1;
        if let Ok(mut s) = self.clock.step_start.lock() {
            *s = Instant::now();
        }
        self.clock
            .step_ms
            .store(estimate.as_millis() as u64, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.set_message(format!("[{}/{}] {label}", self.step, self.steps)),
            None => eprintln!("[{}/{}] {label} ...", self.step, self.steps),
        }
    }

    /// Ends the current step with a result line.
    pub fn end(&mut self, line: &str) {
        let est = self.clock.step_ms.load(Ordering::Relaxed);
        self.clock.base_ms.fetch_add(est, Ordering::Relaxed);
        self.clock.step_ms.store(0, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.println(format!("  {line}")),
            None => eprintln!("      {line}"),
        }
    }

    /// A line between steps (not a step of its own).
    pub fn note(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  {line}")),
            None => eprintln!("      {line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.shutdown();
    }
}
