//! The live figures of a running load point: each worker sends its finished intervals
//! ([`IntervalSnapshot`], once an interval, when its recorder rotates); a thread of its own
//! merges them and, once an interval is over, hands its figures (calls/s, p50, p99, errors by
//! code, generator lag) to a [`LiveSink`] — a progress display, a plain log. Nothing here runs
//! on a worker's path: the workers only send what their recorders already keep.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use wirebench_core::Code;
use wirebench_reports::histogram::latency_histogram;

use super::recorder::IntervalSnapshot;

/// How long after an interval's end its figures wait for late workers: a worker closes an
/// interval when its first call of the next one completes.
const SLACK: Duration = Duration::from_millis(300);

/// The figures of one finished interval of the measured phase.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalFigures {
    /// Interval number (0 = the first of the measured phase).
    pub index: u64,
    /// Its length.
    pub length: Duration,
    /// Calls completed in it.
    pub calls: u64,
    /// Median latency, ns (0 without calls).
    pub p50_ns: u64,
    /// 99th percentile latency, ns.
    pub p99_ns: u64,
    /// Failed calls by status code.
    pub errors: Vec<(Code, u64)>,
    /// Open loop: the generator's lag, 99th percentile, ns.
    pub lag_p99_ns: Option<u64>,
}

impl IntervalFigures {
    /// Calls per second over the interval.
    pub fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.length.as_secs_f64().max(1e-9)
    }

    /// One line: `12.0s  48123 calls/s  p50 19.8 µs  p99 61.2 µs  errors UNAVAILABLE 3  lag p99 88 µs`.
    pub fn line(&self) -> String {
        let at = (self.index + 1) as f64 * self.length.as_secs_f64();
        let mut s = format!(
            "{at:>6.1}s {:>9.0} calls/s  p50 {}  p99 {}",
            self.calls_per_s(),
            micros(self.p50_ns),
            micros(self.p99_ns)
        );
        if self.errors.is_empty() {
            s.push_str("  no errors");
        } else {
            s.push_str("  errors");
            for (code, n) in &self.errors {
                s.push_str(&format!(" {} {n}", code.as_str()));
            }
        }
        if let Some(lag) = self.lag_p99_ns {
            s.push_str(&format!("  lag p99 {}", micros(lag)));
        }
        s
    }
}

fn micros(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// Where live figures go.
pub trait LiveSink: Send + Sync {
    /// An interval of the measured phase is over.
    fn interval(&self, figures: &IntervalFigures);
}

/// One interval being merged.
struct Partial {
    status: [u64; 17],
    latency: Histogram<u64>,
    lag: Option<Histogram<u64>>,
}

impl Partial {
    fn new() -> Partial {
        Partial {
            status: [0; 17],
            latency: latency_histogram(),
            lag: None,
        }
    }

    fn add(&mut self, s: IntervalSnapshot, de: &mut Deserializer) {
        for (a, b) in self.status.iter_mut().zip(s.status) {
            *a += b;
        }
        if let Ok(h) = de.deserialize::<u64, _>(&mut &s.latency[..]) {
            let _ = self.latency.add(&h);
        }
        if let Some(bytes) = s.lag
            && let Ok(h) = de.deserialize::<u64, _>(&mut &bytes[..])
        {
            let lag = self.lag.get_or_insert_with(latency_histogram);
            let _ = lag.add(&h);
        }
    }

    fn figures(&self, index: u64, length: Duration) -> IntervalFigures {
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        IntervalFigures {
            index,
            length,
            calls: self.status.iter().sum(),
            p50_ns: q(&self.latency, 0.5),
            p99_ns: q(&self.latency, 0.99),
            errors: self
                .status
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (Code::from_u32(c as u32), *n))
                .collect(),
            lag_p99_ns: self.lag.as_ref().map(|h| q(h, 0.99)),
        }
    }
}

/// The thread that merges the workers' intervals and reports each once it is over.
#[derive(Debug)]
pub struct Feed {
    thread: JoinHandle<()>,
}

impl Feed {
    /// Starts merging what `rx` brings (from `workers` workers, whose measured phase starts at
    /// `measure_start`, in intervals of `length`) into `sink`. Ends when every worker's sender
    /// is gone.
    pub fn start(
        rx: Receiver<IntervalSnapshot>,
        sink: Arc<dyn LiveSink>,
        measure_start: Instant,
        length: Duration,
        workers: u32,
    ) -> Feed {
        let thread = std::thread::spawn(move || {
            feed(rx, sink.as_ref(), measure_start, length, workers);
        });
        Feed { thread }
    }

    /// Waits for the feed to end (the workers are done).
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

fn feed(
    rx: Receiver<IntervalSnapshot>,
    sink: &dyn LiveSink,
    measure_start: Instant,
    length: Duration,
    workers: u32,
) {
    let mut pending: BTreeMap<u64, (Partial, u32)> = BTreeMap::new();
    let mut next = 0u64;
    let mut de = Deserializer::new();
    let due = |i: u64| measure_start + length * u32::try_from(i + 1).unwrap_or(u32::MAX) + SLACK;
    loop {
        let wait = due(next).saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(s) if s.index >= next => {
                let entry = pending
                    .entry(s.index)
                    .or_insert_with(|| (Partial::new(), 0));
                entry.0.add(s, &mut de);
                entry.1 += 1;
            }
            // An interval already reported: the saved results have it, the view moved on.
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            // Every worker finished: the run's summary follows, not a partial last interval.
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Report, in order, every interval that is over (or that every worker has closed).
        while Instant::now() >= due(next) || pending.get(&next).is_some_and(|(_, n)| *n >= workers)
        {
            let figures = match pending.remove(&next) {
                Some((p, _)) => p.figures(next, length),
                None => Partial::new().figures(next, length),
            };
            sink.interval(&figures);
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::channel;

    use hdrhistogram::serialization::{Serializer, V2Serializer};

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<IntervalFigures>>);

    impl LiveSink for Collect {
        fn interval(&self, f: &IntervalFigures) {
            self.0.lock().unwrap().push(f.clone());
        }
    }

    fn snapshot(index: u64, latencies_us: &[u64], failed: u64) -> IntervalSnapshot {
        let mut h = latency_histogram();
        for us in latencies_us {
            h.record(us * 1000).unwrap();
        }
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        let mut status = [0u64; 17];
        status[0] = latencies_us.len() as u64 - failed;
        status[Code::Unavailable.as_u32() as usize] = failed;
        IntervalSnapshot {
            index,
            status,
            latency: bytes,
            lag: None,
        }
    }

    #[test]
    fn workers_intervals_merge_and_report_in_order() {
        let (tx, rx) = channel();
        let sink = Arc::new(Collect::default());
        let length = Duration::from_millis(50);
        let feed = Feed::start(rx, sink.clone(), Instant::now(), length, 2);
        // Both workers close interval 0; only one closes interval 1 before the run ends.
        tx.send(snapshot(0, &[10, 20], 0)).unwrap();
        tx.send(snapshot(0, &[30, 40], 1)).unwrap();
        tx.send(snapshot(1, &[100], 0)).unwrap();
        std::thread::sleep(length * 3 + SLACK);
        drop(tx);
        feed.finish();
        let got = sink.0.lock().unwrap().clone();
        assert!(got.len() >= 2, "{got:?}");
        assert_eq!((got[0].index, got[0].calls), (0, 4));
        assert_eq!(got[0].errors, vec![(Code::Unavailable, 1)]);
        assert!(
            got[0].p99_ns >= 39_000 && got[0].p99_ns <= 41_000,
            "{:?}",
            got[0]
        );
        assert_eq!((got[1].index, got[1].calls), (1, 1));
        assert!(got.windows(2).all(|w| w[0].index + 1 == w[1].index));
        assert!(got[1].line().contains("calls/s"));
    }
}
