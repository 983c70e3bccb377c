//! Recording: one [`Recorder`] per worker thread (no lock, no sample stored — HdrHistograms
//! only), a 1 s interval histogram rotated as time passes, and a lossless merge of the
//! workers' recorders once the run is over.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use wirebench_core::Code;
use wirebench_reports::histogram::{encode, latency_histogram, summarize};
use wirebench_reports::results::LatencySummary;

/// Length of one interval of the time series.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A finished interval of one worker, kept serialized (a few kilobytes) so that a long run
/// costs no more memory than a short one beyond this series. Plain V2, not V2 deflate: a
/// deflate compressor costs about half a millisecond per use, a stall on the worker's thread
/// that would show in the open loop's lag; the merged series is compressed after the run.
#[derive(Debug)]
pub struct SavedInterval {
    /// Interval number (0 = the first second of the measured phase).
    pub index: u64,
    /// Calls completed in it.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    /// Its histogram, V2 (uncompressed).
    pub histogram: Vec<u8>,
}

/// One finished interval of one worker, for a live view of the run: sent once an interval
/// (when the worker's recorder rotates), never per call.
#[derive(Debug)]
pub struct IntervalSnapshot {
    /// Interval number (0 = the first interval of the measured phase).
    pub index: u64,
    /// Its calls by status code (gRPC numbering).
    pub status: [u64; 17],
    /// Its latency histogram, V2 (uncompressed), as saved in the series.
    pub latency: Vec<u8>,
    /// Open loop: the generator's lag over the interval, V2.
    pub lag: Option<Vec<u8>>,
}

/// Where a worker sends its finished intervals while the run goes on.
pub type LiveSender = std::sync::mpsc::Sender<IntervalSnapshot>;

/// One phase of a fault run, as one worker saw it: requests are charged to the phase they
/// were *sent* in (their intended start), so each phase's counts add up on their own.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    /// Offset of the phase start from the start of the measured time.
    pub start: Duration,
    /// Measured requests sent in it.
    pub sent: u64,
    /// Latency of its successful calls (failures are counted by code, not timed).
    pub latency: Histogram<u64>,
    /// Its calls by status code.
    pub status: [u64; 17],
    /// First failed call to *complete* in the phase (offset from the measured start).
    pub first_error: Option<Duration>,
    /// First successful call to complete in the phase (offset from the measured start).
    pub first_ok: Option<Duration>,
    /// Open loop: the generator's lag of the requests sent in the phase.
    pub lag: Histogram<u64>,
    /// Open loop: requests due in the phase but never sent.
    pub unsent: u64,
}

impl PhaseRecord {
    fn new(start: Duration) -> PhaseRecord {
        PhaseRecord {
            start,
            sent: 0,
            latency: latency_histogram(),
            status: [0; 17],
            first_error: None,
            first_ok: None,
            lag: latency_histogram(),
            unsent: 0,
        }
    }

    fn merge(&mut self, o: &PhaseRecord) {
        self.sent += o.sent;
        let _ = self.latency.add(&o.latency);
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        self.first_error = min_opt(self.first_error, o.first_error);
        self.first_ok = min_opt(self.first_ok, o.first_ok);
        let _ = self.lag.add(&o.lag);
        self.unsent += o.unsent;
    }
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The phase containing `offset`, among phases starting at `phases[i].start` (ascending).
fn phase_of(phases: &[PhaseRecord], offset: Duration) -> usize {
    phases.iter().rposition(|p| p.start <= offset).unwrap_or(0)
}

/// What one worker measured.
#[derive(Debug)]
pub struct Recorder {
    measure_start: Instant,
    /// Length of one interval of the time series.
    interval: Duration,
    /// Measured requests sent (open loop; fault runs account every one of them).
    pub sent: u64,
    /// Fault runs: one record per phase (empty otherwise).
    pub phases: Vec<PhaseRecord>,
    /// Call latency (closed: from start; open: from intended start).
    pub latency: Histogram<u64>,
    /// Open loop: service time.
    pub service: Option<Histogram<u64>>,
    /// Open loop: generator lag.
    pub lag: Option<Histogram<u64>>,
    /// Streams: per-message latency.
    pub message: Option<Histogram<u64>>,
    /// Completed calls by status code (gRPC numbering).
    pub status: [u64; 17],
    /// Stream messages sent.
    pub messages_sent: u64,
    /// Stream messages received.
    pub messages_received: u64,
    /// Open loop: calls that waited for a free caller.
    pub backpressured: u64,
    /// Open loop: measured requests that were due (intended start before the run closed) but
    /// never sent: no caller became free for them in time.
    pub unsent: u64,
    /// Open loop: how long each unsent request had waited when the run closed — a lower
    /// bound of the latency it would have had.
    pub unsent_wait: Option<Histogram<u64>>,
    /// When the last measured call completed.
    pub last_done: Option<Instant>,
    current: Histogram<u64>,
    current_index: u64,
    current_calls: u64,
    current_status: [u64; 17],
    /// With a live view: the interval's lag (open loop) and where finished intervals go.
    current_lag: Option<Histogram<u64>>,
    live: Option<LiveSender>,
    /// Finished intervals.
    pub intervals: Vec<SavedInterval>,
}

impl Recorder {
    /// A recorder for a run whose measured phase starts at `measure_start`.
    pub fn new(measure_start: Instant, open_loop: bool, streams: bool) -> Recorder {
        Recorder {
            measure_start,
            interval: INTERVAL,
            sent: 0,
            phases: Vec::new(),
            latency: latency_histogram(),
            service: open_loop.then(latency_histogram),
            lag: open_loop.then(latency_histogram),
            message: streams.then(latency_histogram),
            status: [0; 17],
            messages_sent: 0,
            messages_received: 0,
            backpressured: 0,
            unsent: 0,
            unsent_wait: open_loop.then(latency_histogram),
            last_done: None,
            current: latency_histogram(),
            current_index: 0,
            current_calls: 0,
            current_status: [0; 17],
            current_lag: None,
            live: None,
            intervals: Vec::new(),
        }
    }

    /// Also sends every finished interval to `live` (a live view of the run; the lag of an
    /// open loop is then kept per interval too).
    pub fn with_live(mut self, live: Option<LiveSender>) -> Recorder {
        self.current_lag = live
            .as_ref()
            .and(self.lag.as_ref())
            .map(|_| latency_histogram());
        self.live = live;
        self
    }

    /// A recorder for a fault run: intervals of `interval`, and one [`PhaseRecord`] per
    /// phase starting at the given offsets (allocated here, never while calls run).
    pub fn with_phases(mut self, interval: Duration, phase_starts: &[Duration]) -> Recorder {
        self.interval = interval.max(Duration::from_millis(1));
        self.phases = phase_starts.iter().map(|s| PhaseRecord::new(*s)).collect();
        self
    }

    /// A measured request was sent (handed to a caller) at its `intended` start.
    pub fn sent(&mut self, intended: Instant) {
        self.sent += 1;
        if !self.phases.is_empty() {
            let i = phase_of(
                &self.phases,
                intended.saturating_duration_since(self.measure_start),
            );
            self.phases[i].sent += 1;
        }
    }

    /// A measured request intended at `intended` was due but never sent; it had waited
    /// `waited` when the run closed.
    pub fn never_sent(&mut self, intended: Instant, waited: Duration) {
        self.unsent += 1;
        if !self.phases.is_empty() {
            let i = phase_of(
                &self.phases,
                intended.saturating_duration_since(self.measure_start),
            );
            self.phases[i].unsent += 1;
        }
        if let Some(h) = &mut self.unsent_wait {
            h.saturating_record(Self::ns(waited));
        }
    }

    /// Fault runs: charges a completed call to the phase it was sent in, and notes the first
    /// error and success to complete in each phase.
    pub fn phase_call(&mut self, intended: Instant, latency: Duration, code: Code, done: Instant) {
        if self.phases.is_empty() {
            return;
        }
        let sent_in = phase_of(
            &self.phases,
            intended.saturating_duration_since(self.measure_start),
        );
        let p = &mut self.phases[sent_in];
        p.status[code.as_u32() as usize] += 1;
        if code == Code::Ok {
            p.latency.saturating_record(Self::ns(latency));
        }
        let at = done.saturating_duration_since(self.measure_start);
        let done_in = phase_of(&self.phases, at);
        let p = &mut self.phases[done_in];
        let first = if code == Code::Ok {
            &mut p.first_ok
        } else {
            &mut p.first_error
        };
        if first.is_none() {
            *first = Some(at);
        }
    }

    fn ns(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a completed call.
    pub fn call(
        &mut self,
        latency: Duration,
        service: Option<Duration>,
        code: Code,
        done: Instant,
    ) {
        let since = done.saturating_duration_since(self.measure_start);
        let index = u64::try_from(since.as_nanos() / self.interval.as_nanos()).unwrap_or(u64::MAX);
        if index != self.current_index {
            self.rotate(index);
        }
        let ns = Self::ns(latency);
        self.latency.saturating_record(ns);
        self.current.saturating_record(ns);
        if let (Some(h), Some(s)) = (&mut self.service, service) {
            h.saturating_record(Self::ns(s));
        }
        self.status[code.as_u32() as usize] += 1;
        self.current_status[code.as_u32() as usize] += 1;
        self.current_calls += 1;
        if self.last_done.is_none_or(|l| done > l) {
            self.last_done = Some(done);
        }
    }

    /// Records the generator's lag for one request intended at `intended`.
    pub fn lag(&mut self, intended: Instant, lag: Duration) {
        if !self.phases.is_empty() {
            let i = phase_of(
                &self.phases,
                intended.saturating_duration_since(self.measure_start),
            );
            self.phases[i].lag.saturating_record(Self::ns(lag));
        }
        if let Some(h) = &mut self.lag {
            h.saturating_record(Self::ns(lag));
        }
        if let Some(h) = &mut self.current_lag {
            h.saturating_record(Self::ns(lag));
        }
    }

    /// Records one stream message's latency.
    pub fn message(&mut self, latency: Duration) {
        if let Some(h) = &mut self.message {
            h.saturating_record(Self::ns(latency));
        }
    }

    /// Closes the current interval and starts `index` (intervals with no completion are
    /// simply absent from the series).
    fn rotate(&mut self, index: u64) {
        self.flush_current();
        self.current_index = index;
    }

    fn flush_current(&mut self) {
        if self.current_calls == 0 {
            return;
        }
        let mut bytes = Vec::new();
        // Serializing an in-range u64 histogram into a Vec cannot fail; if it ever did, the
        // interval would be kept without its histogram rather than abort the run.
        let _ = V2Serializer::new().serialize(&self.current, &mut bytes);
        if let Some(live) = &self.live {
            let lag = self.current_lag.as_mut().map(|h| {
                let mut b = Vec::new();
                let _ = V2Serializer::new().serialize(h, &mut b);
                h.reset();
                b
            });
            // A live view that went away stops receiving; the run goes on.
            let _ = live.send(IntervalSnapshot {
                index: self.current_index,
                status: self.current_status,
                latency: bytes.clone(),
                lag,
            });
        }
        self.intervals.push(SavedInterval {
            index: self.current_index,
            calls: self.current_calls,
            errors: self.current_calls - self.current_status[0],
            histogram: bytes,
        });
        self.current.reset();
        self.current_calls = 0;
        self.current_status = [0; 17];
    }

    /// Ends recording: the interval in progress is saved (not shown live: it is partial), and
    /// the live view is let go (its feed ends once every worker's recorder has finished).
    pub fn finish(&mut self) {
        self.live = None;
        self.flush_current();
    }
}

/// One interval of the merged series, already summarized and encoded: merging holds one
/// interval histogram at a time, so memory does not grow with the run's length.
#[derive(Debug)]
pub struct MergedInterval {
    /// Interval number.
    pub index: u64,
    /// Calls completed.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    /// Latency percentiles over every worker.
    pub latency: LatencySummary,
    /// The merged histogram, base64 V2 deflate (empty if it could not be encoded).
    pub histogram: String,
}

/// The workers' recorders merged.
#[derive(Debug)]
pub struct Merged {
    /// Call latency.
    pub latency: Histogram<u64>,
    /// Service time (open loop).
    pub service: Option<Histogram<u64>>,
    /// Generator lag (open loop).
    pub lag: Option<Histogram<u64>>,
    /// Per-message latency (streams).
    pub message: Option<Histogram<u64>>,
    /// Completed calls by status code.
    pub status: [u64; 17],
    /// Stream messages sent.
    pub messages_sent: u64,
    /// Stream messages received.
    pub messages_received: u64,
    /// Calls that waited for a free caller.
    pub backpressured: u64,
    /// Open loop: requests due but never sent.
    pub unsent: u64,
    /// Open loop: the unsent requests' waits when the run closed (latency lower bounds).
    pub unsent_wait: Option<Histogram<u64>>,
    /// When the last call completed.
    pub last_done: Option<Instant>,
    /// The interval series, in order.
    pub intervals: Vec<MergedInterval>,
    /// Measured requests sent (open loop).
    pub sent: u64,
    /// Fault runs: the phases, merged over the workers.
    pub phases: Vec<PhaseRecord>,
}

fn add(into: &mut Option<Histogram<u64>>, from: Option<Histogram<u64>>) {
    match (into.as_mut(), from) {
        // Same bounds on both sides: `add` cannot fail.
        (Some(a), Some(b)) => {
            let _ = a.add(&b);
        }
        (None, Some(b)) => *into = Some(b),
        _ => {}
    }
}

/// Merges recorders without loss (histograms added bucket by bucket).
pub fn merge(recorders: Vec<Recorder>) -> Merged {
    let mut m = Merged {
        latency: latency_histogram(),
        service: None,
        lag: None,
        message: None,
        status: [0; 17],
        messages_sent: 0,
        messages_received: 0,
        backpressured: 0,
        unsent: 0,
        unsent_wait: None,
        last_done: None,
        intervals: Vec::new(),
        sent: 0,
        phases: Vec::new(),
    };
    let mut saved: Vec<SavedInterval> = Vec::new();
    for mut r in recorders {
        r.finish();
        let _ = m.latency.add(&r.latency);
        add(&mut m.service, r.service);
        add(&mut m.lag, r.lag);
        add(&mut m.message, r.message);
        for (a, b) in m.status.iter_mut().zip(r.status) {
            *a += b;
        }
        m.messages_sent += r.messages_sent;
        m.messages_received += r.messages_received;
        m.backpressured += r.backpressured;
        m.unsent += r.unsent;
        add(&mut m.unsent_wait, r.unsent_wait);
        m.last_done = m.last_done.max(r.last_done);
        m.sent += r.sent;
        if m.phases.is_empty() {
            m.phases = r.phases;
        } else {
            for (a, b) in m.phases.iter_mut().zip(&r.phases) {
                a.merge(b);
            }
        }
        saved.append(&mut r.intervals);
    }
    // One interval at a time: every worker's piece of it added into one reused histogram.
    saved.sort_by_key(|iv| iv.index);
    let mut de = Deserializer::new();
    let mut current = latency_histogram();
    let mut i = 0;
    while i < saved.len() {
        let index = saved[i].index;
        let (mut calls, mut errors) = (0, 0);
        current.reset();
        while i < saved.len() && saved[i].index == index {
            let iv = &saved[i];
            calls += iv.calls;
            errors += iv.errors;
            if let Ok(h) = de.deserialize::<u64, _>(&mut iv.histogram.as_slice()) {
                let _ = current.add(&h);
            }
            i += 1;
        }
        m.intervals.push(MergedInterval {
            index,
            calls,
            errors,
            latency: summarize(&current),
            histogram: encode(&current).unwrap_or_default(),
        });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_lossless_and_intervals_line_up() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, true, false);
        let mut b = Recorder::new(t0, true, false);
        for i in 0..3000u64 {
            let done = t0 + Duration::from_millis(i);
            a.call(
                Duration::from_micros(i),
                Some(Duration::from_micros(1)),
                Code::Ok,
                done,
            );
            b.call(Duration::from_micros(7), None, Code::Unavailable, done);
            a.lag(done, Duration::from_nanos(i));
        }
        let m = merge(vec![a, b]);
        assert_eq!(m.latency.len(), 6000);
        assert_eq!(m.status[0], 3000);
        assert_eq!(m.status[Code::Unavailable.as_u32() as usize], 3000);
        assert_eq!(m.service.as_ref().unwrap().len(), 3000);
        assert_eq!(m.lag.as_ref().unwrap().len(), 3000);
        assert_eq!(m.intervals.len(), 3);
        for (i, iv) in m.intervals.iter().enumerate() {
            assert_eq!(iv.index, i as u64);
            assert_eq!(iv.calls, 2000);
            assert_eq!(iv.errors, 1000);
            assert_eq!(iv.latency.count, 2000);
            assert!(!iv.histogram.is_empty());
        }
        // The whole is the sum of the intervals.
        let total: u64 = m.intervals.iter().map(|i| i.latency.count).sum();
        assert_eq!(total, m.latency.len());
    }
}
