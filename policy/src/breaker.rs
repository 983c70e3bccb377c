//! The circuit breaker: after enough failures it *opens* and calls fail fast with
//! `UNAVAILABLE` ("circuit open") without touching the connection, so a sick peer is not
//! hammered and callers do not queue behind it; after `open_for` it turns *half-open* and lets
//! `half_open_probes` calls through — all succeed: closed again; any fails: open again.
//!
//! The state lives in atomics (state, counters, the time it opened): admitting and recording
//! a call take no lock. Races between concurrent calls at a transition are resolved by
//! compare-and-swap on the state, so exactly one caller opens, half-opens or closes it.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use tokio::time::Instant;

use super::config::{BreakerConfig, code_mask};
use super::stats::Counters;
use wirebench_core::status::{Code, Status};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Debug)]
pub(crate) struct Breaker {
    consecutive_limit: Option<u32>,
    rate: Option<(f64, u64, u32)>,
    open_for_ns: u64,
    probes: u32,
    failure_codes: u32,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// When the circuit last opened, in ns since `epoch`.
    opened_at: AtomicU64,
    /// Probe slots still free while half-open.
    probes_left: AtomicU32,
    /// Probes that succeeded in this half-open spell.
    probe_successes: AtomicU32,
    /// The tumbling failure-rate window: its start (ns since `epoch`), calls and failures.
    window_start: AtomicU64,
    window_calls: AtomicU32,
    window_failures: AtomicU32,
    epoch: Instant,
}

/// A call let through the breaker. A probe that is dropped without an outcome (its caller
/// gave up) hands its slot back, so a cancelled probe cannot wedge the circuit half-open.
#[derive(Debug)]
pub(crate) struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            self.breaker.probes_left.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Admission<'_> {
    /// Records the call's outcome (`None` = OK).
    pub(crate) fn record(mut self, code: Option<Code>, stats: &Counters) {
        self.done = true;
        self.breaker.record(self.probe, code, stats);
    }
}

impl Breaker {
    pub(crate) fn new(c: &BreakerConfig) -> Breaker {
        Breaker {
            consecutive_limit: c.consecutive_failures,
            rate: c.failure_rate.as_ref().map(|r| {
                (
                    r.threshold,
                    u64::try_from(r.window.as_nanos()).unwrap_or(u64::MAX),
                    r.min_calls.max(1),
                )
            }),
            open_for_ns: u64::try_from(c.open_for.as_nanos()).unwrap_or(u64::MAX),
            probes: c.half_open_probes,
            failure_codes: code_mask(&c.failure_codes),
            state: AtomicU8::new(CLOSED),
            consecutive: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probes_left: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            window_start: AtomicU64::new(0),
            window_calls: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Lets a call through, or fails it fast while the circuit is open.
    pub(crate) fn admit(&self, stats: &Counters) -> Result<Admission<'_>, Status> {
        let mut state = self.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Ok(Admission {
                breaker: self,
                probe: false,
                done: false,
            });
        }
        if state == OPEN {
            let opened = self.opened_at.load(Ordering::Acquire);
            if self.now_ns().saturating_sub(opened) >= self.open_for_ns {
                // One caller wins the move to half-open and hands out the probe slots.
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.probe_successes.store(0, Ordering::Release);
                    self.probes_left.store(self.probes, Ordering::Release);
                }
                state = HALF_OPEN;
            }
        }
        if state == HALF_OPEN
            && self
                .probes_left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            return Ok(Admission {
                breaker: self,
                probe: true,
                done: false,
            });
        }
        stats.short_circuited.fetch_add(1, Ordering::Relaxed);
        Err(Status::unavailable("circuit open"))
    }

    fn is_failure(&self, code: Option<Code>) -> bool {
        code.is_some_and(|c| self.failure_codes & (1 << c.as_u32()) != 0)
    }

    fn trip(&self, from: u8, stats: &Counters) {
        // Store the time first: whoever sees OPEN must see when it opened. Two callers
        // tripping at once store nearly the same time, so the loser's store is harmless.
        self.opened_at.store(self.now_ns(), Ordering::Release);
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.probes_left.store(0, Ordering::Release);
            stats.breaker_opens.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record(&self, probe: bool, code: Option<Code>, stats: &Counters) {
        let failed = self.is_failure(code);
        if probe {
            if self.state.load(Ordering::Acquire) != HALF_OPEN {
                return;
            }
            if failed {
                self.trip(HALF_OPEN, stats);
            } else if self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1 >= self.probes
                && self
                    .state
                    .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.consecutive.store(0, Ordering::Release);
                self.reset_window(self.now_ns());
            }
            return;
        }
        let mut trip = false;
        if failed {
            let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
            trip |= self.consecutive_limit.is_some_and(|limit| n >= limit);
        } else {
            self.consecutive.store(0, Ordering::Release);
        }
        if let Some((threshold, window, min_calls)) = self.rate {
            let now = self.now_ns();
            let start = self.window_start.load(Ordering::Acquire);
            if now.saturating_sub(start) >= window
                && self
                    .window_start
                    .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.window_calls.store(0, Ordering::Release);
                self.window_failures.store(0, Ordering::Release);
            }
            let calls = self.window_calls.fetch_add(1, Ordering::AcqRel) + 1;
            let failures = if failed {
                self.window_failures.fetch_add(1, Ordering::AcqRel) + 1
            } else {
                self.window_failures.load(Ordering::Acquire)
            };
            trip |= calls >= min_calls && f64::from(failures) >= threshold * f64::from(calls);
        }
        if trip && self.state.load(Ordering::Acquire) == CLOSED {
            self.trip(CLOSED, stats);
        }
    }

    fn reset_window(&self, now: u64) {
        self.window_start.store(now, Ordering::Release);
        self.window_calls.store(0, Ordering::Release);
        self.window_failures.store(0, Ordering::Release);
    }

    /// True while calls are failed fast (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    /// How long the circuit stays open.
    #[cfg(test)]
    pub(crate) fn open_for(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.open_for_ns)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::FailureRate;

    fn breaker(consecutive: Option<u32>, rate: Option<FailureRate>, probes: u32) -> Breaker {
        Breaker::new(&BreakerConfig {
            consecutive_failures: consecutive,
            failure_rate: rate,
            open_for: Duration::from_secs(1),
            half_open_probes: probes,
            ..BreakerConfig::default()
        })
    }

    fn call(b: &Breaker, s: &Counters, code: Option<Code>) -> Result<(), Status> {
        b.admit(s)?.record(code, s);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let s = Counters::default();
        let b = breaker(Some(3), None, 2);
        // Application errors and successes reset the run.
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        call(&b, &s, Some(Code::InvalidArgument)).unwrap();
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        call(&b, &s, Some(Code::DeadlineExceeded)).unwrap();
        assert!(!b.is_open());
        call(&b, &s, Some(Code::Internal)).unwrap();
        assert!(b.is_open());
        assert_eq!(s.snapshot().breaker_opens, 1);

        // Open: fail fast.
        let e = call(&b, &s, None).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.message(), "circuit open");
        assert_eq!(s.snapshot().short_circuited, 1);

        // Half-open after `open_for`: two probes, a third call is still refused.
        tokio::time::advance(b.open_for()).await;
        let p1 = b.admit(&s).unwrap();
        let p2 = b.admit(&s).unwrap();
        assert!(b.admit(&s).is_err());
        p1.record(None, &s);
        assert!(b.admit(&s).is_err(), "still half-open after one success");
        p2.record(None, &s);
        // Closed: everything passes again.
        for _ in 0..10 {
            call(&b, &s, None).unwrap();
        }
        assert_eq!(s.snapshot().short_circuited, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_a_dropped_probe_frees_its_slot() {
        let s = Counters::default();
        let b = breaker(Some(1), None, 1);
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        assert!(b.is_open());
        tokio::time::advance(b.open_for()).await;
        drop(b.admit(&s).unwrap()); // the caller gave up: the slot comes back
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        assert!(b.is_open(), "a failed probe re-opens");
        assert_eq!(s.snapshot().breaker_opens, 2);
        tokio::time::advance(b.open_for() / 2).await;
        assert!(call(&b, &s, None).is_err(), "open again for a full spell");
        tokio::time::advance(b.open_for() / 2).await;
        call(&b, &s, None).unwrap();
        assert!(!b.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_needs_min_calls_in_the_window() {
        let s = Counters::default();
        let rate = FailureRate {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_calls: 10,
        };
        let b = breaker(None, Some(rate), 1);
        // Alternating outcomes: 50 % failures, never 5 in a row.
        for i in 0..9 {
            let code = (i % 2 == 0).then_some(Code::Unavailable);
            call(&b, &s, code).unwrap();
        }
        assert!(!b.is_open(), "below min_calls");
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        assert!(b.is_open(), "6 of 10 failed");

        // A new window forgets old failures.
        let b = breaker(
            None,
            Some(FailureRate {
                threshold: 0.5,
                window: Duration::from_secs(10),
                min_calls: 4,
            }),
            1,
        );
        for _ in 0..3 {
            call(&b, &s, Some(Code::Unavailable)).unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..3 {
            call(&b, &s, None).unwrap();
        }
        call(&b, &s, Some(Code::Unavailable)).unwrap();
        assert!(!b.is_open(), "1 of 4 in the new window");
    }
}
