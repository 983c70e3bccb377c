//! The embedded MQTT broker: rmqtt running inside this process on a thread and runtime of its
//! own, on an ephemeral loopback port, stopped by ending that runtime.
//!
//! # Why rmqtt
//!
//! The `mqtt` transport must run with nothing installed, so the broker is a library. Measured
//! here (2-core machine, loopback) before choosing:
//!
//! - **rmqtt 0.24** (`default-features = false` plus `shared-subscription`): its listener
//!   builder sets `TCP_NODELAY` when asked (`nodelay(true)`; the default is off, and then QoS 1
//!   round trips stall ~44 ms on delayed ACKs), binds port 0 and reports the bound address
//!   (`Listener::local_addr`), and everything it runs lives on the runtime that runs it, so
//!   dropping that runtime closes every connection and frees the port. About 71 µs p50 at 1 in
//!   flight and ~68k requests/s at 64 were measured through it.
//! - **rumqttd 0.20**: never sets `TCP_NODELAY` on accepted sockets (QoS 1 round trips stall
//!   ~44 ms), cannot bind port 0 (the port must be known up front, a bind race in parallel
//!   tests), and has no way to stop it short of ending the process.
//!
//! rmqtt's default shared-subscription strategy picks no member at all (its round-robin lives
//! in a separate plugin): a message to `$share/<group>/<topic>` would reach nobody. The broker
//! here installs [`RoundRobin`], which hands each message to the next member of the group
//! that is online.
//!
//! rmqtt's overload guard (refuse connections while the machine's load average is high) is
//! turned off: a benchmark machine is loaded on purpose. Its per-listener limits are raised to
//! fit the suite: packets up to [`MAX_PACKET`], 1024 QoS 1 messages in flight per session and
//! 100,000 queued per session.
//!
//! Everything rmqtt keeps (sessions, subscriptions, queued messages) lives in memory: a
//! restart ([`EmbeddedBroker::restart`]) starts from nothing, as a crashed broker would.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};
use tokio::sync::oneshot;

use wirebench_core::broker::BrokerError;

/// Largest MQTT packet the embedded broker accepts and sends: 16 MiB, room for the RPC
/// model's default 4 MiB message limit with its properties, and for larger configured limits.
pub const MAX_PACKET: u32 = 16 << 20;
/// QoS 1 messages in flight per session (rmqtt's default, 16, throttles 64 calls in flight).
const MAX_INFLIGHT: u16 = 1024;
/// Messages queued per session behind a full in-flight window (rmqtt's default is 1000).
const MAX_QUEUE: usize = 100_000;
/// How long starting may take.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running embedded broker. Dropping it stops the broker (without waiting);
/// [`stop`](EmbeddedBroker::stop) waits until every connection is closed.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    /// Ends the broker's runtime when sent (or dropped).
    stop: oneshot::Sender<()>,
    /// Fires once the runtime is gone: every connection closed, the port free.
    stopped: oneshot::Receiver<()>,
}

impl EmbeddedBroker {
    /// Starts a broker listening on `addr` (port 0: any free port).
    pub async fn start(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        let (addr, running) = launch(addr).await?;
        Ok(EmbeddedBroker {
            addr,
            running: Some(running),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, `mqtt://IP:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops the broker and starts a fresh one on the same address. Nothing survives: sessions,
    /// subscriptions and queued messages are in memory only.
    pub async fn restart(&mut self) -> Result<(), BrokerError> {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let (addr, running) = launch(self.addr).await?;
        self.addr = addr;
        self.running = Some(running);
        Ok(())
    }

    /// Stops the broker and waits until its connections are closed.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        // The thread says so after dropping its runtime; a lost thread reads as stopped too.
        let _ = self.stopped.await;
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Dropping `Running` drops the stop sender: the broker's thread ends its runtime.
        self.running.take();
    }
}

fn start_error(reason: impl std::fmt::Display) -> BrokerError {
    BrokerError::Start {
        reason: format!("embedded MQTT broker (rmqtt): {reason}"),
        log: String::new(),
    }
}

/// Starts the broker's thread and waits until it listens.
async fn launch(addr: SocketAddr) -> Result<(SocketAddr, Running), BrokerError> {
    let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr, BrokerError>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("wb-mqtt-broker".into())
        .spawn(move || {
            // One thread is the broker's whole budget: on a 2-core machine the client and the
            // server need the other core, and a single-threaded runtime never migrates tasks.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(start_error(format!("runtime: {e}"))));
                    return;
                }
            };
            rt.block_on(serve(addr, ready_tx, stop_rx));
            // Ends every connection task still running: their sockets close here.
            drop(rt);
            let _ = stopped_tx.send(());
        })
        .map_err(|e| BrokerError::io("starting the embedded MQTT broker's thread", e))?;
    let bound = tokio::time::timeout(START_TIMEOUT, ready_rx)
        .await
        .map_err(|_| start_error(format!("not listening within {START_TIMEOUT:?}")))?
        .map_err(|_| start_error("its thread ended before it listened"))??;
    Ok((
        bound,
        Running {
            stop: stop_tx,
            stopped: stopped_rx,
        },
    ))
}

/// Shared subscriptions: each message to a group goes to its next member, preferring members
/// that are online (an offline member's session would only queue it).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

/// One candidate of a shared-subscription group, as rmqtt lists them.
type Candidate = (
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
);

impl RoundRobin {
    /// The index of the member to deliver to, and whether it is online.
    pub fn pick(&self, online: impl Fn(usize) -> bool, members: usize) -> Option<(usize, bool)> {
        if members == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % members;
        (0..members)
            .map(|k| (start + k) % members)
            .find(|i| online(*i))
            .map(|i| (i, true))
            .or(Some((start, false)))
    }
}

#[async_trait::async_trait]
impl SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher: &Id,
        _topic: &TopicName,
        members: &[Candidate],
    ) -> Option<(usize, IsOnline)> {
        self.pick(
            |i| members.get(i).is_some_and(|m| m.4.unwrap_or(true)),
            members.len(),
        )
    }
}

/// Runs the broker until `stop` fires (or its sender is dropped).
async fn serve(
    addr: SocketAddr,
    ready: oneshot::Sender<Result<SocketAddr, BrokerError>>,
    stop: oneshot::Receiver<()>,
) {
    let scx = ServerContext::new()
        // rmqtt refuses connections while the load average is high: a benchmark loads the
        // machine on purpose.
        .busy_check_enable(false)
        .build()
        .await;
    *scx.extends.shared_subscription_mut().await = Box::new(RoundRobin::default());
    let listener = Builder::new()
        .name("wirebench")
        .laddr(addr)
        .nodelay(true)
        // A restart binds the port its predecessor just released.
        .reuseaddr(Some(true))
        .max_packet_size(MAX_PACKET)
        .max_inflight(NonZeroU16::new(MAX_INFLIGHT).unwrap_or(NonZeroU16::MIN))
        .max_mqueue_len(MAX_QUEUE)
        .mqueue_rate_limit(NonZeroU32::MAX, Duration::from_secs(1))
        .bind()
        .and_then(|l| l.tcp());
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(start_error(format!("binding {addr}: {e}"))));
            return;
        }
    };
    let bound = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(start_error(format!("reading the bound address: {e}"))));
            return;
        }
    };
    // Keyed by the bound port: port 0 would be the same key for every ephemeral listener.
    let server = MqttServer::new(scx)
        .listener_by_id(listener, bound.port())
        .build();
    if ready.send(Ok(bound)).is_err() {
        // Nobody waits for this broker any more.
        return;
    }
    tokio::select! {
        r = server.run() => {
            if let Err(e) = r {
                tracing::warn!("embedded MQTT broker on {bound} stopped: {e}");
            }
        }
        _ = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads rmqtt's CONNACK to a minimal MQTT 5 CONNECT: proof that it speaks MQTT there.
    async fn connack(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        // CONNECT: protocol "MQTT" v5, clean start, keep-alive 30 s, no properties, client id "t".
        let connect = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 0, 0, 1, b't',
        ];
        s.write_all(&connect).await?;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        let mut rest = vec![0u8; usize::from(head[1])];
        s.read_exact(&mut rest).await?;
        Ok([head.to_vec(), rest].concat())
    }

    #[test]
    fn round_robin_takes_turns_and_skips_offline_members() {
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(|_| true, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(|i| Some((i, true))).to_vec());
        assert_eq!(rr.pick(|i| i == 2, 3), Some((2, true)));
        assert_eq!(rr.pick(|_| false, 3).map(|(_, on)| on), Some(false));
        assert_eq!(rr.pick(|_| true, 0), None);
    }

    #[tokio::test]
    async fn binds_port_zero_answers_mqtt_restarts_and_stops() {
        let limit = Duration::from_secs(30);
        let mut b =
            tokio::time::timeout(limit, EmbeddedBroker::start("127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap()
                .unwrap();
        let addr = b.addr();
        assert_ne!(addr.port(), 0);
        assert!(b.url().starts_with("mqtt://127.0.0.1:"));
        let ack = tokio::time::timeout(limit, connack(addr))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack[0], 0x20, "CONNACK expected: {ack:?}");
        assert_eq!(ack[3], 0, "connection refused: {ack:?}");

        tokio::time::timeout(limit, b.restart())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.addr(), addr, "a restart keeps the address");
        tokio::time::timeout(limit, connack(addr))
            .await
            .unwrap()
            .unwrap();

        tokio::time::timeout(limit, b.stop()).await.unwrap();
        // Stopped means the port is free again.
        std::net::TcpListener::bind(addr).unwrap();
    }
}
