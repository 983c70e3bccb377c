//! One MQTT 5 connection to a broker (rumqttc), as every part of the `mqtt` transport uses it:
//! a task polls rumqttc's event loop and hands each incoming PUBLISH to an [`Inbound`]
//! synchronously; subscriptions return once the broker acknowledged them; the connection
//! comes back by itself after the broker went away (subscriptions restored); and messages can be
//! published from the polling task itself without awaiting ([`Link::publish_now`]).
//!
//! Never `publish().await` on the polling task: rumqttc's request channel is bounded and only
//! that task drains it, so a full channel would wait forever for itself. The polling task uses
//! `try_publish` and, when the channel is full, hands the message to a task of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::Request;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Packet, Publish, PublishProperties, SubAck, SubscribeReasonCode, UnsubAck,
    UnsubAckReason,
};
use rumqttc::v5::{AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use wirebench_core::broker::BrokerError;

/// Requests rumqttc buffers between callers and its event loop.
const REQUEST_CAPACITY: usize = 1024;
/// QoS 1 publishes a connection keeps in flight at most (rumqttc sizes a table by it).
const MAX_INFLIGHT: u16 = 1024;
/// Pause between attempts to reach a broker that went away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How long `close` waits for the polling task to send what is queued and the DISCONNECT.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// How long a subscription (or an unsubscription) may wait for the broker's acknowledgement.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet the MQTT protocol can carry (its remaining length is at most 268,435,455).
pub const PROTOCOL_MAX_PACKET: u32 = 268_435_455;

/// What the polling task tells its owner, synchronously (it must not block or await).
pub trait Inbound: Send + Sync + 'static {
    /// An incoming PUBLISH.
    fn publish(&self, link: &LinkHandle, p: Publish);
    /// The connection to the broker broke (`up = false`, with why) or is back with its
    /// subscriptions restored (`up = true`).
    fn connection(&self, up: bool, why: &str);
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The MQTT client identifier (unique per connection).
    pub client_id: String,
    /// Largest packet this client accepts (announced to the broker, which then drops larger
    /// ones instead of sending them: announce generously and enforce limits above).
    pub max_incoming: u32,
    /// Dead-peer detection interval (MQTT keep-alive: PINGREQ when idle, the link drops when
    /// no PINGRESP came by the next one); `None` keeps 30 s. MQTT counts it in whole seconds,
    /// and rumqttc accepts no less than 5.
    pub keepalive: Option<Duration>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// Subscription bookkeeping: SUBACKs and UNSUBACKs are matched to callers by packet id, learnt
/// from the event loop's `Outgoing::Subscribe(pkid)` and `Outgoing::Unsubscribe(pkid)` events,
/// which come in the order the requests were queued (queueing is serialized by
/// `Shared::subscribing`; SUBSCRIBE and UNSUBSCRIBE share one packet id space).
#[derive(Default)]
struct Subs {
    /// Callers whose SUBSCRIBE or UNSUBSCRIBE is queued but has no packet id yet, in queue
    /// order.
    queued: VecDeque<oneshot::Sender<Result<(), Refused>>>,
    /// Callers waiting for the SUBACK or UNSUBACK of a packet id.
    sent: HashMap<u16, oneshot::Sender<Result<(), Refused>>>,
    /// Filters to restore after reconnecting to a broker that forgot them.
    filters: Vec<(String, QoS)>,
}

struct Shared {
    subs: Mutex<Subs>,
    /// Serializes queueing SUBSCRIBE requests (see [`Subs`]).
    subscribing: tokio::sync::Mutex<()>,
    /// The broker's maximum packet size (from its CONNACK).
    broker_max_packet: AtomicU32,
    /// True while connected with every subscription in place.
    up: watch::Sender<bool>,
    /// Set by `close`: the polling task ends instead of reconnecting.
    closing: AtomicBool,
}

impl Shared {
    fn subs(&self) -> MutexGuard<'_, Subs> {
        // A panic while holding this lock would be a bug; the table stays usable.
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the polling task and [`Inbound`] handlers can do: publish without awaiting.
#[derive(Clone)]
pub struct LinkHandle {
    client: AsyncClient,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle").finish_non_exhaustive()
    }
}

/// A connection to a broker. Dropping it ends the polling task (and so the connection).
#[derive(Debug)]
pub struct Link {
    handle: LinkHandle,
    /// The polling task; taken by `close`, which waits for it to end.
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// An outgoing message.
#[derive(Debug)]
pub struct Out {
    /// Topic.
    pub topic: String,
    /// QoS.
    pub qos: QoS,
    /// Payload.
    pub payload: Bytes,
    /// Properties.
    pub properties: PublishProperties,
}

impl Out {
    /// A message with user properties only.
    pub fn new(topic: String, qos: QoS, payload: Bytes, user: Vec<(String, String)>) -> Out {
        Out {
            topic,
            qos,
            payload,
            properties: PublishProperties {
                user_properties: user,
                ..PublishProperties::default()
            },
        }
    }

    /// Its encoded size, near enough to refuse what the broker would refuse.
    pub fn packet_len(&self) -> usize {
        super::wire::packet_len(
            &self.topic,
            self.payload.len(),
            &self.properties.user_properties,
            self.properties.response_topic.as_deref(),
            self.properties
                .correlation_data
                .as_ref()
                .map_or(0, Bytes::len),
        )
    }
}

/// Why a publish did not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Larger than the broker accepts (nothing was sent; the connection is unharmed).
    TooLarge {
        /// The message's size.
        size: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The connection is closed.
    Closed,
}

impl LinkHandle {
    /// Fails a message the broker would refuse: rumqttc would otherwise drop the whole
    /// connection when asked to send a packet larger than the broker's maximum.
    fn check(&self, out: &Out) -> Result<(), PublishError> {
        let max = self.shared.broker_max_packet.load(Ordering::Relaxed);
        let size = out.packet_len();
        if size > max as usize {
            return Err(PublishError::TooLarge { size, max });
        }
        Ok(())
    }

    /// Publishes, waiting for room in rumqttc's request channel. Never call this on the
    /// polling task (use [`publish_now`](Self::publish_now) there).
    pub async fn publish(&self, out: Out) -> Result<(), PublishError> {
        self.check(&out)?;
        self.client
            .publish_with_properties(out.topic, out.qos, false, out.payload, out.properties)
            .await
            .map_err(|_| PublishError::Closed)
    }

    /// Publishes without waiting: when rumqttc's channel is full, a task of its own waits for
    /// room. For the polling task, and for synchronous contexts (drop, cancel) under a runtime.
    pub fn publish_now(&self, out: Out) -> Result<(), PublishError> {
        self.check(&out)?;
        match self.client.try_publish_with_properties(
            out.topic,
            out.qos,
            false,
            out.payload,
            out.properties,
        ) {
            Ok(()) => Ok(()),
            Err(ClientError::TryRequest(Request::Publish(p)))
            | Err(ClientError::Request(Request::Publish(p))) => {
                let client = self.client.clone();
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return Err(PublishError::Closed);
                };
                rt.spawn(async move {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let props = p.properties.unwrap_or_default();
                    let _ = client
                        .publish_with_properties(topic, p.qos, false, p.payload, props)
                        .await;
                });
                Ok(())
            }
            Err(_) => Err(PublishError::Closed),
        }
    }
}

/// rumqttc refuses (panics on) a keep-alive under 5 s.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// MQTT's keep-alive is whole seconds, and rumqttc's at least 5: round up to that.
fn keep_alive_secs(keepalive: Option<Duration>) -> Duration {
    match keepalive {
        None => Duration::from_secs(30),
        Some(k) => Duration::from_secs(k.as_secs_f64().ceil() as u64).max(MIN_KEEP_ALIVE),
    }
}

impl Link {
    /// Connects to the broker and starts polling; returns once the broker accepted the
    /// connection. `make` builds what incoming messages go to, given the handle it may publish
    /// with (before anything can arrive).
    pub async fn connect<I: Inbound>(
        config: &LinkConfig,
        make: impl FnOnce(&LinkHandle) -> Arc<I>,
    ) -> Result<(Link, Arc<I>), BrokerError> {
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options
            .set_clean_start(true)
            .set_keep_alive(keep_alive_secs(config.keepalive))
            .set_max_packet_size(Some(config.max_incoming))
            .set_outgoing_inflight_upper_limit(MAX_INFLIGHT)
            .set_receive_maximum(Some(MAX_INFLIGHT))
            .set_connection_timeout(config.connect_timeout.as_secs().max(1));
        let mut network = NetworkOptions::new();
        // rumqttc's default is off: every small message would then wait for delayed ACKs.
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(config.connect_timeout.as_secs().max(1));
        options.set_network_options(network);
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let shared = Arc::new(Shared {
            subs: Mutex::new(Subs::default()),
            subscribing: tokio::sync::Mutex::new(()),
            broker_max_packet: AtomicU32::new(PROTOCOL_MAX_PACKET),
            up: watch::Sender::new(false),
            closing: AtomicBool::new(false),
        });
        let handle = LinkHandle { client, shared };
        let inbound = make(&handle);
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(poll(eventloop, handle.clone(), inbound.clone(), first_tx));
        let url = format!("mqtt://{}:{}", config.host, config.port);
        let connected =
            tokio::time::timeout(config.connect_timeout + Duration::from_secs(1), first_rx)
                .await
                .map_err(|_| BrokerError::Connect {
                    url: url.clone(),
                    reason: format!("no CONNACK within {:?}", config.connect_timeout),
                })?
                .map_err(|_| BrokerError::Connect {
                    url: url.clone(),
                    reason: "the connection task ended".into(),
                })?;
        if let Err(refused) = connected {
            task.abort();
            return Err(BrokerError::Connect {
                url,
                reason: refused.to_string(),
            });
        }
        Ok((
            Link {
                handle,
                task: std::sync::Mutex::new(Some(task)),
            },
            inbound,
        ))
    }

    /// What publishes.
    pub fn handle(&self) -> &LinkHandle {
        &self.handle
    }

    /// Subscribes to `filter` and returns once the broker acknowledged it; the subscription
    /// is restored whenever the connection comes back.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), BrokerError> {
        subscribe(&self.handle, filter, qos, true).await
    }

    /// Unsubscribes from `filter` and returns once the broker acknowledged it: from then on
    /// it routes nothing for `filter` here (what it sent before has arrived: one connection's
    /// packets come in order). The filter is no longer restored after a reconnection.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), BrokerError> {
        let handle = &self.handle;
        handle.shared.subs().filters.retain(|(f, _)| f != filter);
        let (tx, rx) = oneshot::channel();
        {
            let _queueing = handle.shared.subscribing.lock().await;
            handle.shared.subs().queued.push_back(tx);
            if handle.client.unsubscribe(filter).await.is_err() {
                handle.shared.subs().queued.pop_back();
                return Err(BrokerError::op(
                    "unsubscribe",
                    "the MQTT connection is closed",
                ));
            }
        }
        acknowledged(rx, "unsubscribe", "UNSUBACK", filter).await
    }

    /// Returns once every message this connection published before the call has been taken
    /// by the broker: brokers handle one connection's packets in order, so the SUBACK of a
    /// later SUBSCRIBE (to a topic of this connection's own) comes after them.
    pub async fn barrier(&self, topic: &str) -> Result<(), BrokerError> {
        subscribe(&self.handle, topic, QoS::AtMostOnce, false).await
    }

    /// Disconnects cleanly and ends the polling task. Waits (up to [`CLOSE_FLUSH`]) for the
    /// task to put the DISCONNECT on the wire: rumqttc writes requests in order, so what was
    /// published before (a draining server's last answers) reaches the broker first. Ending
    /// the task at once instead lost such answers whenever it had not run yet.
    pub async fn close(&self) {
        self.handle.shared.closing.store(true, Ordering::Release);
        let _ = self.handle.shared.up.send_replace(false);
        let task = self.take_task();
        if self.handle.client.try_disconnect().is_err() {
            if let Some(t) = task {
                t.abort();
            }
            return;
        }
        if let Some(mut t) = task
            && tokio::time::timeout(CLOSE_FLUSH, &mut t).await.is_err()
        {
            tracing::debug!("mqtt: the connection did not close within {CLOSE_FLUSH:?}");
            t.abort();
        }
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.handle.shared.closing.store(true, Ordering::Release);
        let _ = self.handle.client.try_disconnect();
        if let Some(t) = self.take_task() {
            t.abort();
        }
    }
}

async fn subscribe(
    handle: &LinkHandle,
    filter: &str,
    qos: QoS,
    remember: bool,
) -> Result<(), BrokerError> {
    let (tx, rx) = oneshot::channel();
    {
        let _queueing = handle.shared.subscribing.lock().await;
        handle.shared.subs().queued.push_back(tx);
        if handle.client.subscribe(filter, qos).await.is_err() {
            handle.shared.subs().queued.pop_back();
            return Err(BrokerError::op(
                "subscribe",
                "the MQTT connection is closed",
            ));
        }
    }
    acknowledged(rx, "subscribe", "SUBACK", filter).await?;
    if remember {
        let mut subs = handle.shared.subs();
        if !subs.filters.iter().any(|(f, _)| f == filter) {
            subs.filters.push((filter.to_owned(), qos));
        }
    }
    Ok(())
}

/// Waits for the broker's acknowledgement (`ack`) of an `op` on `filter`.
async fn acknowledged(
    rx: oneshot::Receiver<Result<(), Refused>>,
    op: &'static str,
    ack: &str,
    filter: &str,
) -> Result<(), BrokerError> {
    tokio::time::timeout(SUBACK_TIMEOUT, rx)
        .await
        .map_err(|_| {
            BrokerError::Timeout(format!("no {ack} for {filter} within {SUBACK_TIMEOUT:?}"))
        })?
        .map_err(|_| BrokerError::op(op, "the MQTT connection broke"))?
        .map_err(|reason| BrokerError::op(op, format!("{filter}: {reason}")))
}

/// Restores every remembered subscription after a reconnection, then says the link is up.
async fn restore<I: Inbound>(handle: LinkHandle, inbound: Arc<I>) {
    let filters = handle.shared.subs().filters.clone();
    for (filter, qos) in filters {
        if let Err(e) = subscribe(&handle, &filter, qos, false).await {
            tracing::warn!("mqtt: restoring the subscription to {filter} failed: {e}");
            return;
        }
    }
    let _ = handle.shared.up.send_replace(true);
    inbound.connection(true, "reconnected");
}

fn on_connack(handle: &LinkHandle, ack: &ConnAck) {
    let max = ack
        .properties
        .as_ref()
        .and_then(|p| p.max_packet_size)
        .unwrap_or(PROTOCOL_MAX_PACKET);
    handle
        .shared
        .broker_max_packet
        .store(max, Ordering::Relaxed);
}

fn on_suback(handle: &LinkHandle, ack: &SubAck) {
    let Some(waiter) = handle.shared.subs().sent.remove(&ack.pkid) else {
        return;
    };
    let refused = ack
        .return_codes
        .iter()
        .find(|c| !matches!(c, SubscribeReasonCode::Success(_)));
    let _ = waiter.send(match refused {
        None => Ok(()),
        Some(code) => Err(Refused::Subscription(*code)),
    });
}

fn on_unsuback(handle: &LinkHandle, ack: &UnsubAck) {
    let Some(waiter) = handle.shared.subs().sent.remove(&ack.pkid) else {
        return;
    };
    // Nothing to unsubscribe from is as good as done.
    let refused = ack.reasons.iter().find(|r| {
        !matches!(
            r,
            UnsubAckReason::Success | UnsubAckReason::NoSubscriptionExisted
        )
    });
    let _ = waiter.send(match refused {
        None => Ok(()),
        Some(code) => Err(Refused::Unsubscribe(*code)),
    });
}

/// Fails every subscription waiting for an acknowledgement (the connection broke).
fn fail_subscriptions(handle: &LinkHandle) {
    let mut subs = handle.shared.subs();
    subs.queued.clear();
    subs.sent.clear();
}

/// Why the broker did not do what a link asked (the reason the waiting call reports).
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// The first connection failed (how rumqttc described it).
    #[error("{0}")]
    Connection(String),
    /// A SUBACK carried a failure code.
    #[error("the broker refused the subscription: {0:?}")]
    Subscription(SubscribeReasonCode),
    /// An UNSUBACK carried a failure reason.
    #[error("the broker refused to unsubscribe: {0:?}")]
    Unsubscribe(UnsubAckReason),
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused: {code:?}"),
        other => other.to_string(),
    }
}

/// The polling task: the only place rumqttc's event loop runs.
async fn poll<I: Inbound>(
    mut eventloop: EventLoop,
    handle: LinkHandle,
    inbound: Arc<I>,
    first: oneshot::Sender<Result<(), Refused>>,
) {
    let mut first = Some(first);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => inbound.publish(&handle, p),
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                on_connack(&handle, &ack);
                match first.take() {
                    Some(f) => {
                        let _ = handle.shared.up.send_replace(true);
                        let _ = f.send(Ok(()));
                    }
                    // A broker that kept our session kept our subscriptions too.
                    None if ack.session_present => {
                        let _ = handle.shared.up.send_replace(true);
                        inbound.connection(true, "reconnected");
                    }
                    None => {
                        tokio::spawn(restore(handle.clone(), inbound.clone()));
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid) | Outgoing::Unsubscribe(pkid))) => {
                let mut subs = handle.shared.subs();
                if let Some(w) = subs.queued.pop_front() {
                    subs.sent.insert(pkid, w);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => on_suback(&handle, &ack),
            Ok(Event::Incoming(Packet::UnsubAck(ack))) => on_unsuback(&handle, &ack),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                if handle.shared.closing.load(Ordering::Acquire) {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = describe(&e);
                if let Some(f) = first.take() {
                    let _ = f.send(Err(Refused::Connection(why)));
                    return;
                }
                let was_up = handle.shared.up.send_replace(false);
                fail_subscriptions(&handle);
                if handle.shared.closing.load(Ordering::Acquire)
                    || matches!(e, ConnectionError::RequestsDone)
                {
                    break;
                }
                if was_up {
                    inbound.connection(false, &why);
                }
                // The next poll reconnects; a broker that is down refuses at once, so pause.
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
    let _ = handle.shared.up.send_replace(false);
}
