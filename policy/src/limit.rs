//! The concurrency limit: at most `max_in_flight` calls through the layer at once, the rest
//! wait in FIFO order (tokio's fair semaphore), optionally in a bounded queue beyond which a
//! call fails at once with `RESOURCE_EXHAUSTED` — shedding load at the client instead of
//! letting latency grow without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::config::LimitConfig;
use super::stats::{Counters, bump};
use wirebench_core::status::Status;

#[derive(Debug)]
pub(crate) struct Limiter {
    slots: Arc<Semaphore>,
    max_queued: Option<u32>,
    waiting: AtomicU32,
}

/// Takes back a queue place when the waiting call gets its slot or gives up.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    pub(crate) fn new(c: &LimitConfig) -> Limiter {
        Limiter {
            slots: Arc::new(Semaphore::new(c.max_in_flight as usize)),
            max_queued: c.max_queued,
            waiting: AtomicU32::new(0),
        }
    }

    /// Joins the queue, or refuses when it is full.
    fn enqueue<'a>(&'a self, stats: &Counters) -> Result<Waiting<'a>, Status> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = Waiting(&self.waiting);
        if self.max_queued.is_some_and(|max| before >= max) {
            bump(&stats.limiter_rejected);
            return Err(Status::resource_exhausted(
                "concurrency limit reached and its queue is full",
            ));
        }
        bump(&stats.limiter_queued);
        Ok(guard)
    }

    /// A slot for a unary call (released when the permit drops).
    pub(crate) async fn acquire(&self, stats: &Counters) -> Result<SemaphorePermit<'_>, Status> {
        if let Ok(p) = self.slots.try_acquire() {
            return Ok(p);
        }
        let _queued = self.enqueue(stats)?;
        self.slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the connection was closed"))
    }

    /// A slot for a stream, owned by its receiver until the call ends.
    pub(crate) async fn acquire_owned(
        &self,
        stats: &Counters,
    ) -> Result<OwnedSemaphorePermit, Status> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        let _queued = self.enqueue(stats)?;
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the connection was closed"))
    }

    /// Fails every waiting and future call (the connection was closed).
    pub(crate) fn close(&self) {
        self.slots.close();
    }

    /// Calls now holding a slot (for tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self, max: usize) -> usize {
        max - self.slots.available_permits()
    }
}
