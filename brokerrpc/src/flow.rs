//! Per-call flow control for streams over a broker (`nats`, `mqtt`): brokers have none per
//! call (a subscriber that falls behind loses messages or stalls everyone on its connection),
//! so each direction of a stream runs a message-count window. The
//! receiver grants credit (`credit` frames carrying the sequence number consumed so far) every
//! half window; a sender may send message `n` once `n <= acked + window`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// Messages a receiver buffers per call and direction (its window), unless it says otherwise.
pub const DEFAULT_WINDOW: u64 = 128;
/// The largest window a peer may announce (bounds what we would have to buffer for it).
pub const MAX_WINDOW: u64 = 4096;

/// The sending side: how far the peer lets us go.
#[derive(Debug)]
pub struct Credit {
    acked: AtomicU64,
    window: AtomicU64,
    closed: AtomicBool,
    notify: Notify,
}

impl Credit {
    /// Credit for a peer with `window`, nothing acknowledged yet.
    pub fn new(window: u64) -> Credit {
        Credit {
            acked: AtomicU64::new(0),
            window: AtomicU64::new(window.clamp(1, MAX_WINDOW)),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Sets the peer's window (from its `accept` or `open`).
    pub fn set_window(&self, window: u64) {
        self.window
            .store(window.clamp(1, MAX_WINDOW), Ordering::Release);
        self.notify.notify_waiters();
    }

    /// The peer has consumed up to `acked`.
    pub fn grant(&self, acked: u64) {
        self.acked.fetch_max(acked, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The call ended: senders waiting for credit give up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// True once the call ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn allows(&self, seq: u64) -> bool {
        seq <= self.acked.load(Ordering::Acquire) + self.window.load(Ordering::Acquire)
    }

    /// Waits until message `seq` may be sent; `false` when the call ended meanwhile.
    pub async fn acquire(&self, seq: u64) -> bool {
        loop {
            // Registered before checking, so a grant between the check and the wait is seen.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return false;
            }
            if self.allows(seq) {
                return true;
            }
            notified.await;
        }
    }
}

/// The receiving side: when to grant more credit.
#[derive(Clone, Copy, Debug)]
pub struct Grants {
    consumed: u64,
    granted: u64,
    window: u64,
}

impl Grants {
    /// Grants for our receive `window`.
    pub fn new(window: u64) -> Grants {
        Grants {
            consumed: 0,
            granted: 0,
            window: window.max(2),
        }
    }

    /// Counts one consumed message; returns the sequence number to acknowledge when a
    /// `credit` frame is due (every half window).
    pub fn consumed(&mut self) -> Option<u64> {
        self.consumed += 1;
        if self.consumed - self.granted >= self.window / 2 {
            self.granted = self.consumed;
            Some(self.consumed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn senders_wait_for_credit_and_wake_on_grant_or_close() {
        let c = Arc::new(Credit::new(2));
        assert!(c.acquire(1).await);
        assert!(c.acquire(2).await);
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.acquire(3).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        c.grant(1);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .unwrap()
                .unwrap()
        );
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.acquire(10).await }
        });
        c.close();
        assert!(
            !tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .unwrap()
                .unwrap()
        );
    }

    #[test]
    fn grants_every_half_window() {
        let mut g = Grants::new(4);
        assert_eq!(g.consumed(), None);
        assert_eq!(g.consumed(), Some(2));
        assert_eq!(g.consumed(), None);
        assert_eq!(g.consumed(), Some(4));
    }
}
