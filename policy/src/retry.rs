//! The retry layer's parts: exponential backoff with full jitter, the retry budget (a token
//! bucket in the manner of Finagle's `RetryBudget` and gRPC's retry throttling), and the rule
//! for which calls may be retried at all.
//!
//! Everything here is lock-free: the budget is one atomic balance plus one atomic refill
//! clock, the jitter RNG one atomic counter.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{RetryConfig, code_mask};
use wirebench_core::status::Code;
use wirebench_core::transport::CallOptions;

/// Fixed-point unit of the budget: balances are kept in hundredths of a retry, so a 20 %
/// deposit is exactly 20 units and a retry costs 100.
const UNITS_PER_RETRY: i64 = 100;

/// A lock-free, seeded source of jitter: SplitMix64 over an atomic counter. Concurrent calls
/// draw distinct values; a single caller sees the same sequence for the same seed.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform duration in `[0, ceiling]` ("full jitter", as in the AWS architecture
    /// blog's analysis: it spreads a thundering herd best).
    pub(crate) fn full(&self, ceiling: Duration) -> Duration {
        let ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if ns == 0 {
            return Duration::ZERO;
        }
        // Multiply-shift maps 64 random bits onto [0, ns] without modulo bias worth a name.
        let r = ((u128::from(self.next_u64()) * (u128::from(ns) + 1)) >> 64) as u64;
        Duration::from_nanos(r)
    }
}

/// Exponential backoff ceilings: `initial * multiplier^(n-1)`, capped at `max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
}

impl Backoff {
    /// The ceiling before retry number `n` (1-based).
    pub(crate) fn ceiling(&self, n: u32) -> Duration {
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// The retry budget: a token bucket shared by every call through one layer.
///
/// - every call's first attempt deposits `budget_percent / 100` of a retry;
/// - `budget_min_per_sec` retries are added per second of elapsed time (the floor, so a
///   quiet client can still retry), and the bucket starts with one second's floor;
/// - a retry withdraws 1; when the balance is below 1 the retry is refused and the call
///   fails with its last status;
/// - the balance is capped at `10 * budget_min_per_sec + budget_percent` retries (ten
///   seconds of floor plus what 100 calls earn), so a long healthy spell cannot bank an
///   unbounded burst of retries for the next outage.
///
/// So over any stretch of time `t` with `n` calls, retries ≤ `n * budget_percent / 100 +
/// budget_min_per_sec * t + cap`: retries cannot multiply the load on a struggling server.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Balance in hundredths of a retry.
    balance: AtomicI64,
    cap: i64,
    deposit: i64,
    /// Floor in hundredths of a retry per second; 0 disables the refill clock.
    floor_per_sec: i64,
    /// Nanoseconds since `epoch` up to which the floor has been credited.
    refilled_to: AtomicU64,
    epoch: Instant,
}

impl Budget {
    pub(crate) fn new(percent: f64, min_per_sec: f64) -> Budget {
        let deposit = (percent * UNITS_PER_RETRY as f64 / 100.0).round() as i64;
        let floor_per_sec = (min_per_sec * UNITS_PER_RETRY as f64).round() as i64;
        let cap = floor_per_sec
            .saturating_mul(10)
            .saturating_add(deposit * 100);
        Budget {
            balance: AtomicI64::new(floor_per_sec.min(cap)),
            cap,
            deposit,
            floor_per_sec,
            refilled_to: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn credit(&self, units: i64) {
        let cap = self.cap;
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_add(units).min(cap))
            });
    }

    /// A call's first attempt: deposits its share.
    pub(crate) fn deposit(&self) {
        if self.deposit > 0 {
            self.credit(self.deposit);
        }
    }

    /// Credits the floor for the time elapsed since the last credit. Only whole units are
    /// credited and the clock advances by exactly the time they stand for, so frequent
    /// calls do not lose the fractions.
    fn refill(&self) {
        if self.floor_per_sec <= 0 {
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.refilled_to.load(Ordering::Acquire);
        let elapsed = u128::from(now.saturating_sub(last));
        let floor = self.floor_per_sec as u128;
        let units = elapsed * floor / 1_000_000_000;
        if units == 0 {
            return;
        }
        let spent = u64::try_from(units * 1_000_000_000 / floor).unwrap_or(u64::MAX);
        // Whoever wins the clock credits the interval; a loser's interval is the winner's.
        if self
            .refilled_to
            .compare_exchange(last, last + spent, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.credit(i64::try_from(units).unwrap_or(i64::MAX));
        }
    }

    /// Takes one retry from the bucket; false when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.refill();
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= UNITS_PER_RETRY).then_some(b - UNITS_PER_RETRY)
            })
            .is_ok()
    }
}

/// The retry layer's configuration, resolved for the call path.
#[derive(Debug)]
pub(crate) struct Retry {
    pub(crate) max_attempts: u32,
    retryable: u32,
    non_idempotent: bool,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Budget,
    pub(crate) jitter: Jitter,
}

impl Retry {
    pub(crate) fn new(c: &RetryConfig, seed: u64) -> Retry {
        Retry {
            max_attempts: c.max_attempts,
            retryable: code_mask(&c.retryable_codes),
            non_idempotent: c.retry_non_idempotent,
            backoff: Backoff {
                initial: c.initial_backoff,
                max: c.max_backoff,
                multiplier: c.multiplier,
            },
            budget: Budget::new(c.budget_percent, c.budget_min_per_sec),
            jitter: Jitter::new(seed),
        }
    }

    /// May this call be replayed at all? Only calls marked replay-safe, unless the config
    /// says non-idempotent calls may be retried too.
    pub(crate) fn eligible(&self, options: &CallOptions) -> bool {
        self.max_attempts > 1 && (options.replay_safe || self.non_idempotent)
    }

    /// Is a failure with `code` worth another attempt?
    pub(crate) fn retryable(&self, code: Code) -> bool {
        self.retryable & (1 << code.as_u32()) != 0
    }

    /// The jittered pause before retry number `n` (1-based).
    pub(crate) fn pause(&self, n: u32) -> Duration {
        self.jitter.full(self.backoff.ceiling(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_jitter_stays_within() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            multiplier: 2.0,
        };
        let ceilings: Vec<_> = (1..=7).map(|n| b.ceiling(n)).collect();
        assert_eq!(ceilings[0], Duration::from_millis(10));
        assert_eq!(ceilings[1], Duration::from_millis(20));
        assert_eq!(ceilings[4], Duration::from_millis(160));
        assert_eq!(ceilings[5], Duration::from_millis(200));
        assert_eq!(ceilings[6], Duration::from_millis(200));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(200));

        let j = Jitter::new(7);
        let mut means = Vec::new();
        for n in 1..=5 {
            let c = b.ceiling(n);
            let samples: Vec<_> = (0..2000).map(|_| j.full(c)).collect();
            assert!(samples.iter().all(|s| *s <= c), "above the ceiling");
            let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
            assert!(distinct.len() > 1000, "jittered");
            let mean = samples.iter().sum::<Duration>() / 2000;
            // Full jitter: uniform on [0, c], so the mean is near c / 2.
            assert!(mean > c * 4 / 10 && mean < c * 6 / 10, "{mean:?} vs {c:?}");
            means.push(mean);
        }
        assert!(means.windows(2).all(|w| w[0] < w[1]), "grows: {means:?}");
    }

    #[test]
    fn jitter_is_reproducible_from_its_seed() {
        let (a, b) = (Jitter::new(42), Jitter::new(42));
        let c = Duration::from_secs(1);
        for _ in 0..100 {
            assert_eq!(a.full(c), b.full(c));
        }
        assert_ne!(Jitter::new(1).full(c), Jitter::new(2).full(c));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_its_percentage_and_floor_only() {
        // 20 %, no floor: 10 calls earn exactly 2 retries.
        let b = Budget::new(20.0, 0.0);
        assert!(!b.withdraw(), "nothing earned yet");
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());

        // Floor of 2 per second: one second's worth at start, then 2 more per second.
        let b = Budget::new(0.0, 2.0);
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.withdraw());
        assert!(!b.withdraw());
        // Long idle: capped at ten seconds of floor.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_floor_does_not_lose_fractions() {
        // 10 per second credited over many tiny steps adds up to the same as one big step.
        let b = Budget::new(0.0, 10.0);
        for _ in 0..10 {
            assert!(b.withdraw());
        }
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_millis(1)).await;
            b.refill();
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 10);
    }
}
