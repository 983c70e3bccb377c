//! Graceful drain, the part every transport shares: the grace deadline, waiting for the calls
//! in flight within it, and the [`DrainReport`].
//!
//! A transport drains in three steps, each in its own protocol's idiom (see
//! [`Server::drain`](crate::transport::Server::drain)): it stops admitting new calls, waits
//! here for the calls it already admitted, then closes like `shutdown` once they ended or the
//! grace ran out. Calls are counted by the [`TaskTracker`] their handler tasks run in: a call
//! answered inline (no waiting, no task) is never in flight across an await, so it needs no
//! counting.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::status::{Code, Status};

/// What a drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Calls in flight (running a handler) when the drain began.
    pub in_flight: usize,
    /// Calls still running when the grace ran out, ended as `shutdown` ends them. Calls that
    /// reached the server during the drain (sent before the client learnt of it) count here
    /// when they were cut, though not in `in_flight`.
    pub cut: usize,
    /// From the start of the drain until the server was closed.
    pub took: Duration,
}

impl DrainReport {
    /// Calls in flight at the start that finished within the grace (at least this many: a
    /// call admitted during the drain and cut is counted against them).
    pub fn finished(&self) -> usize {
        self.in_flight.saturating_sub(self.cut)
    }

    /// True when nothing had to be cut.
    pub fn is_clean(&self) -> bool {
        self.cut == 0
    }
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drained in {:.0?}: {} calls in flight, {} finished, {} cut",
            self.took,
            self.in_flight,
            self.finished(),
            self.cut
        )
    }
}

/// The status of a call whose handler ended with `status`: a cancellation that came from the
/// server stopping (`stopping` cancelled), not from the client, is `UNAVAILABLE` — the call was
/// cut, its caller may try again elsewhere — as every transport reports a call cut by a stop.
pub fn cut_status(status: Status, stopping: &CancellationToken) -> Status {
    if status.code() == Code::Cancelled && stopping.is_cancelled() {
        return Status::unavailable("server shutting down: the call was cut");
    }
    status
}

/// One drain under way: when it began, when its grace runs out, and what was in flight.
#[derive(Debug)]
pub struct Grace {
    began: Instant,
    until: Instant,
    in_flight: usize,
}

impl Grace {
    /// Starts the clock on a drain of the calls running in `calls`.
    pub fn begin(grace: Duration, calls: &TaskTracker) -> Grace {
        let began = Instant::now();
        Grace {
            began,
            // A grace too large to add (Duration::MAX: "wait for ever") waits for ever.
            until: began
                .checked_add(grace)
                .unwrap_or_else(|| began + Duration::from_secs(86_400 * 365)),
            in_flight: calls.len(),
        }
    }

    /// Runs `fut` until the grace runs out; `None` when it did first.
    pub async fn within<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.until, fut).await.ok()
    }

    /// Waits, within the grace, until every task of `tracker` has ended; true when they did.
    /// Closes the tracker (a task spawned later is still tracked, and waited for when it
    /// starts before the others ended).
    pub async fn settle(&self, tracker: &TaskTracker) -> bool {
        tracker.close();
        self.within(tracker.wait()).await.is_some()
    }

    /// The report, `cut` being the calls still running now (call it just before cutting them).
    pub fn report(&self, calls: &TaskTracker) -> DrainReport {
        DrainReport {
            in_flight: self.in_flight,
            cut: calls.len(),
            took: self.began.elapsed(),
        }
    }
}

/// The tasks of a server that accepts connections itself and runs waiting calls in tasks
/// (`tcp`, `grpc`, `quic`), and how such a server stops: at once, or drained (`quic` closes its
/// endpoint around `shutdown` and drains by its own rule, see its module).
#[derive(Debug)]
pub struct ServerTasks {
    /// Stops at once: handlers are cancelled, connections closed.
    pub shutdown: CancellationToken,
    /// Stops admitting: the accept loop ends (closing the listener) and each connection tells
    /// its client so in its protocol's terms (GOAWAY), then ends once its calls have. A child
    /// of `shutdown`, which implies it.
    pub draining: CancellationToken,
    pub accept: JoinHandle<()>,
    /// Connection tasks.
    pub conns: TaskTracker,
    /// Handler tasks: the calls in flight that wait or stream (inline answers never wait).
    pub calls: TaskTracker,
}

impl ServerTasks {
    /// Cancels everything and waits until every task has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.accept.await;
        self.conns.close();
        self.calls.close();
        self.conns.wait().await;
        self.calls.wait().await;
    }

    /// Stops admitting, lets the calls in flight end within `grace`, then stops at once.
    pub async fn drain(self, grace: Duration) -> DrainReport {
        let g = Grace::begin(grace, &self.calls);
        self.draining.cancel();
        let ServerTasks {
            shutdown,
            accept,
            conns,
            calls,
            ..
        } = self;
        // The listener closes with the accept loop: new connections are refused from here.
        let _ = accept.await;
        // A connection ends once its calls have; the handler tasks end just after they answer.
        let _ = g.settle(&conns).await && g.settle(&calls).await;
        let report = g.report(&calls);
        // Whatever still runs is cut, as by `shutdown`.
        shutdown.cancel();
        conns.close();
        calls.close();
        conns.wait().await;
        calls.wait().await;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_the_tasks_within_the_grace() {
        let calls = TaskTracker::new();
        for ms in [10u64, 20] {
            calls.spawn(tokio::time::sleep(Duration::from_millis(ms)));
        }
        let grace = Grace::begin(Duration::from_secs(1), &calls);
        assert!(grace.settle(&calls).await);
        let r = grace.report(&calls);
        assert_eq!((r.in_flight, r.cut, r.finished()), (2, 0, 2));
        assert!(r.is_clean());
        assert_eq!(r.took, Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn settle_gives_up_when_the_grace_runs_out() {
        let calls = TaskTracker::new();
        calls.spawn(tokio::time::sleep(Duration::from_millis(10)));
        calls.spawn(tokio::time::sleep(Duration::from_secs(60)));
        let grace = Grace::begin(Duration::from_millis(100), &calls);
        assert!(!grace.settle(&calls).await);
        let r = grace.report(&calls);
        assert_eq!((r.in_flight, r.cut, r.finished()), (2, 1, 1));
        assert_eq!(r.took, Duration::from_millis(100));
        assert_eq!(
            r.to_string(),
            "drained in 100ms: 2 calls in flight, 1 finished, 1 cut"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_grace_does_not_overflow() {
        let calls = TaskTracker::new();
        calls.spawn(tokio::time::sleep(Duration::from_secs(3600)));
        let grace = Grace::begin(Duration::MAX, &calls);
        assert!(grace.settle(&calls).await);
        assert!(grace.report(&calls).is_clean());
    }
}
