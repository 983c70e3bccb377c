//! Counters of what the policy layers did, kept in relaxed atomics (no lock on the call path)
//! and read as one [`PolicyStats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What the policy layers did so far, per layer. A snapshot: each counter is read atomically,
/// the set is not one instant (counters move while it is taken).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStats {
    /// Calls (unary calls and stream opens) that entered the layer.
    pub calls: u64,
    /// Limiter: calls that had to wait for a slot.
    pub limiter_queued: u64,
    /// Limiter: calls refused with `RESOURCE_EXHAUSTED` because the queue was full.
    pub limiter_rejected: u64,
    /// Breaker: times the circuit opened.
    pub breaker_opens: u64,
    /// Breaker: calls failed fast (`UNAVAILABLE`, "circuit open") without being made.
    pub short_circuited: u64,
    /// Retry: attempts after the first.
    pub retries: u64,
    /// Retry: retries the budget refused (the call failed with its last status).
    pub retries_refused_by_budget: u64,
    /// Timeout: attempts whose deadline the policy set or shortened.
    pub deadlines_applied: u64,
    /// Reconnect: new connections dialled and swapped in.
    pub reconnects: u64,
    /// Reconnect: dials that failed (each is followed by a backoff).
    pub reconnect_failures: u64,
}

/// The live counters behind [`PolicyStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) limiter_queued: AtomicU64,
    pub(crate) limiter_rejected: AtomicU64,
    pub(crate) breaker_opens: AtomicU64,
    pub(crate) short_circuited: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) retries_refused_by_budget: AtomicU64,
    pub(crate) deadlines_applied: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) reconnect_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> PolicyStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PolicyStats {
            calls: r(&self.calls),
            limiter_queued: r(&self.limiter_queued),
            limiter_rejected: r(&self.limiter_rejected),
            breaker_opens: r(&self.breaker_opens),
            short_circuited: r(&self.short_circuited),
            retries: r(&self.retries),
            retries_refused_by_budget: r(&self.retries_refused_by_budget),
            deadlines_applied: r(&self.deadlines_applied),
            reconnects: r(&self.reconnects),
            reconnect_failures: r(&self.reconnect_failures),
        }
    }
}

/// Adds one to a counter (relaxed: counters order nothing).
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
