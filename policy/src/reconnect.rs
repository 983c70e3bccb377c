//! The reconnect layer: when a call on the connection fails with `UNAVAILABLE` (the transport's
//! way of saying the connection broke or could not carry the call), a new connection is
//! dialled through a [`Connector`] and swapped in, so a layered connection outlives a server
//! restart.
//!
//! - The live connection sits in an [`ArcSwap`]: a call loads it with one atomic operation and
//!   no lock; only the dial swaps it.
//! - Reconnects are coalesced: the first failure on connection generation `g` starts one
//!   background dial task; other failures on `g`, or failures on an older generation, start
//!   nothing.
//! - The dial task retries with exponential backoff and full jitter until a dial succeeds,
//!   the layer is closed, or the layer is dropped (it holds only a weak reference between
//!   dials).
//! - A call that arrives while a dial is under way waits for the dial's next outcome (bounded
//!   by its deadline): a new connection — the call uses it; a failed dial — the call fails
//!   with `UNAVAILABLE` ("reconnecting: ..."), which the retry layer above may retry.
//! - The failed call itself is never replayed here: whether a replay is safe is the retry
//!   layer's decision. The old connection is not closed (a server-sent `UNAVAILABLE` does not
//!   mean the connection is dead, and calls may still be running on it); it is dropped when
//!   the last call using it ends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::ReconnectConfig;
use super::retry::{Backoff, Jitter};
use super::stats::{Counters, bump};
use wirebench_core::status::Status;
use wirebench_core::transport::{ClientConfig, Connection, Transport, TransportError, WireBytes};

/// Dials a new connection: what the reconnect layer calls after a connection broke.
///
/// Implemented for any `Fn() -> impl Future<Output = Result<C, TransportError>>` closure and
/// by [`TransportConnector`].
pub trait Connector<C>: Send + Sync + 'static {
    /// Dials once.
    fn connect(&self) -> impl Future<Output = Result<C, TransportError>> + Send;
}

impl<C, F, Fut> Connector<C> for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C, TransportError>> + Send,
{
    fn connect(&self) -> impl Future<Output = Result<C, TransportError>> + Send {
        self()
    }
}

/// Dials `endpoint` with a transport and a client config: the usual [`Connector`].
#[derive(Clone, Debug)]
pub struct TransportConnector<T> {
    transport: T,
    config: ClientConfig,
    endpoint: String,
}

impl<T: Transport> TransportConnector<T> {
    /// A connector that calls `transport.connect(&config, &endpoint)`.
    pub fn new(transport: T, config: ClientConfig, endpoint: impl Into<String>) -> Self {
        TransportConnector {
            transport,
            config,
            endpoint: endpoint.into(),
        }
    }
}

impl<T: Transport> Connector<T::Connection> for TransportConnector<T> {
    fn connect(&self) -> impl Future<Output = Result<T::Connection, TransportError>> + Send {
        self.transport.connect(&self.config, &self.endpoint)
    }
}

type BoxedDial<'a, C> = Pin<Box<dyn Future<Output = Result<C, TransportError>> + Send + 'a>>;

/// [`Connector`] made object-safe, so `Layered<C>` need not name the connector's type. The box
/// is paid per dial, never per call.
trait DynConnector<C>: Send + Sync + 'static {
    fn dial(&self) -> BoxedDial<'_, C>;
}

impl<C: Send + 'static, K: Connector<C>> DynConnector<C> for K {
    fn dial(&self) -> BoxedDial<'_, C> {
        Box::pin(self.connect())
    }
}

/// A connection and its generation (how many reconnects came before it).
pub(crate) struct Slot<C> {
    pub(crate) conn: C,
    pub(crate) generation: u64,
}

/// The outcome of the latest dial, broadcast to calls waiting for it.
#[derive(Clone, Debug, Default)]
struct DialEvent {
    /// Why the latest dial failed, `None` after a success.
    error: Option<Arc<str>>,
}

pub(crate) struct Reconnector<C> {
    current: ArcSwap<Slot<C>>,
    connector: Box<dyn DynConnector<C>>,
    backoff: Backoff,
    jitter: Jitter,
    /// True from the moment a dial task starts until it swaps a connection in or stops.
    dialing: AtomicBool,
    closed: AtomicBool,
    events: watch::Sender<DialEvent>,
    /// Wire bytes of connections already replaced.
    retired_sent: AtomicU64,
    retired_received: AtomicU64,
    stats: Arc<Counters>,
}

impl<C> fmt::Debug for Reconnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnector")
            .field("generation", &self.current.load().generation)
            .field("dialing", &self.dialing.load(Ordering::Relaxed))
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<C: Connection> Reconnector<C> {
    pub(crate) fn new(
        conn: C,
        connector: impl Connector<C>,
        config: &ReconnectConfig,
        seed: u64,
        stats: Arc<Counters>,
    ) -> Reconnector<C> {
        Reconnector {
            current: ArcSwap::from_pointee(Slot {
                conn,
                generation: 0,
            }),
            connector: Box::new(connector),
            backoff: Backoff {
                initial: config.initial_backoff,
                max: config.max_backoff,
                multiplier: config.multiplier,
            },
            jitter: Jitter::new(seed),
            dialing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            events: watch::Sender::new(DialEvent::default()),
            retired_sent: AtomicU64::new(0),
            retired_received: AtomicU64::new(0),
            stats,
        }
    }

    /// The connection to call on. The fast path is one atomic flag read and one `Arc` load;
    /// while a reconnect is under way the call waits for the dial's next outcome, until
    /// `deadline` at most.
    pub(crate) async fn connection(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Arc<Slot<C>>, Status> {
        if !self.dialing.load(Ordering::Acquire) {
            return Ok(self.current.load_full());
        }
        let mut events = self.events.subscribe();
        // The dial may have finished between the flag read and the subscription.
        if !self.dialing.load(Ordering::Acquire) {
            return Ok(self.current.load_full());
        }
        let wait = async {
            events
                .changed()
                .await
                .map_err(|_| Status::unavailable("reconnecting: the connection was dropped"))
        };
        match deadline {
            None => wait.await?,
            Some(d) => tokio::time::timeout_at(d, wait)
                .await
                .map_err(|_| Status::deadline_exceeded("deadline exceeded while reconnecting"))??,
        }
        let failed = events.borrow().error.clone();
        match failed {
            Some(e) if self.dialing.load(Ordering::Acquire) => {
                Err(Status::unavailable(format!("reconnecting: {e}")))
            }
            _ => Ok(self.current.load_full()),
        }
    }

    /// A call on connection generation `seen` failed with `UNAVAILABLE`: start a dial unless
    /// that connection was already replaced or a dial is under way.
    pub(crate) fn broken(self: &Arc<Self>, seen: u64) {
        if self.closed.load(Ordering::Acquire)
            || self.current.load().generation != seen
            || self.dialing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // A dial may have swapped a new connection in just before we won the flag.
        if self.current.load().generation != seen {
            self.dialing.store(false, Ordering::Release);
            return;
        }
        tokio::spawn(dial_loop(Arc::downgrade(self)));
    }

    /// Stops reconnecting and closes the live connection.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.current.load_full().conn.close().await;
    }

    /// Bytes of the live connection plus those of every connection it replaced.
    pub(crate) fn wire_bytes(&self) -> Option<WireBytes> {
        let live = self.current.load().conn.wire_bytes()?;
        Some(WireBytes {
            sent: live.sent + self.retired_sent.load(Ordering::Relaxed),
            received: live.received + self.retired_received.load(Ordering::Relaxed),
        })
    }
}

/// Dials until a connection is swapped in, the layer is closed, or dropped.
async fn dial_loop<C: Connection>(weak: Weak<Reconnector<C>>) {
    let mut failures = 0u32;
    loop {
        let Some(this) = weak.upgrade() else { return };
        if this.closed.load(Ordering::Acquire) {
            this.dialing.store(false, Ordering::Release);
            this.events.send_replace(DialEvent {
                error: Some("the connection was closed".into()),
            });
            return;
        }
        let dialed = this.connector.dial().await;
        match dialed {
            Ok(conn) => {
                if this.closed.load(Ordering::Acquire) {
                    conn.close().await;
                    continue;
                }
                let old = this.current.load_full();
                if let Some(b) = old.conn.wire_bytes() {
                    this.retired_sent.fetch_add(b.sent, Ordering::Relaxed);
                    this.retired_received
                        .fetch_add(b.received, Ordering::Relaxed);
                }
                this.current.store(Arc::new(Slot {
                    conn,
                    generation: old.generation + 1,
                }));
                bump(&this.stats.reconnects);
                this.dialing.store(false, Ordering::Release);
                this.events.send_replace(DialEvent { error: None });
                tracing::debug!(generation = old.generation + 1, "policy: reconnected");
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                bump(&this.stats.reconnect_failures);
                tracing::debug!(failures, "policy: reconnect failed: {e}");
                this.events.send_replace(DialEvent {
                    error: Some(e.to_string().into()),
                });
                let pause = this.jitter.full(this.backoff.ceiling(failures));
                // Hold no strong reference while sleeping: dropping the layer ends the task.
                drop(this);
                tokio::time::sleep(pause).await;
            }
        }
    }
}
