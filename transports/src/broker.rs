//! The broker-level API that broker transports implement beside the RPC contract: start or
//! attach to a broker, publish and subscribe, queue groups, acknowledged durable publishing
//! and restarting the broker — what the broker-semantics conformance cases and the
//! event-streaming scenarios need, without naming any broker's types.
//!
//! `nats` implements it over core NATS and JetStream; `mqtt` over MQTT 5 publish/subscribe with
//! shared subscriptions as queue groups (it declares no durable log: see its capabilities). Topics are the
//! broker's own subject/topic strings; callers keep them to `[A-Za-z0-9_.-]` tokens separated
//! by `.` so that every broker accepts them. Static dispatch throughout, as in
//! [`crate::registry`]: the event-streaming load path pays no box per message.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::registry::AnyTransport;
use crate::{mqtt, nats};

/// Errors of broker operations and of running a broker.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The broker's server program is not installed here (with how to get it).
    #[error("{program} not found ({looked}); {hint}")]
    NotInstalled {
        /// The program looked for.
        program: &'static str,
        /// Where it was looked for.
        looked: String,
        /// How to install it or what to use instead.
        hint: &'static str,
    },
    /// The broker process did not start or did not become ready.
    #[error("{reason}{}", log_suffix(.log))]
    Start {
        /// What went wrong.
        reason: String,
        /// The last lines the broker logged.
        log: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the broker failed.
    #[error("connecting to the broker at {url}: {reason}")]
    Connect {
        /// The broker's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A broker operation (publish, subscribe, acknowledge, ...) failed.
    #[error("{op}: {reason}")]
    Op {
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// An operation did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// This broker, or this way of running it, cannot do that (a declared limitation).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A broker address or option is invalid.
    #[error("invalid broker configuration: {0}")]
    Config(String),
}

fn log_suffix(log: &str) -> String {
    if log.trim().is_empty() {
        String::new()
    } else {
        format!("; the broker's last log lines:\n{}", log.trim_end())
    }
}

impl BrokerError {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            context: context.into(),
            source,
        }
    }

    /// A failed operation.
    pub fn op(op: &'static str, reason: impl std::fmt::Display) -> BrokerError {
        BrokerError::Op {
            op,
            reason: reason.to_string(),
        }
    }

    /// True when the broker's program is missing (the transport is then *skipped*, with the
    /// install hint, rather than failed — except where a run demands it, as CI does).
    pub fn is_not_installed(&self) -> bool {
        matches!(self, BrokerError::NotInstalled { .. })
    }
}

/// Where a broker comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerTarget {
    /// Start a private broker on an ephemeral loopback port; it stops with its handle.
    Private,
    /// Attach to a broker already running at this URL; it is never stopped or restarted.
    External(String),
}

/// How to restart a broker this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartMode {
    /// Ask it to shut down cleanly (SIGTERM), then start it again.
    Graceful,
    /// Kill it (SIGKILL, as a crash), then start it again.
    Kill,
}

/// Client-side settings of a broker connection.
#[derive(Clone, Debug)]
pub struct BrokerClientConfig {
    /// Messages a subscription buffers in the client; past that the client drops messages
    /// and counts them in [`BrokerClient::overflowed`].
    pub subscription_buffer: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for BrokerClientConfig {
    fn default() -> BrokerClientConfig {
        BrokerClientConfig {
            subscription_buffer: 65_536,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A durable, acknowledged log of one topic's messages (a JetStream stream, an MQTT
/// persistent session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableSpec {
    /// The log's name (`[A-Za-z0-9_-]`).
    pub name: String,
    /// The topic whose messages it stores.
    pub topic: String,
    /// A publish repeating a dedup id seen within this window is stored once.
    pub dedup_window: Duration,
}

/// The broker's answer to a durable publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableAck {
    /// The stored message's position in the log, where the broker says.
    pub sequence: Option<u64>,
    /// The broker recognised the dedup id and did not store the message again.
    pub duplicate: bool,
}

/// A broker technology: starts (or attaches to) brokers and connects broker clients.
pub trait Broker: Send + Sync + 'static {
    /// A running broker.
    type Handle: BrokerHandle;
    /// A client connection to a broker.
    type Client: BrokerClient;

    /// Starts a private broker or attaches to an external one.
    fn start(
        &self,
        target: &BrokerTarget,
    ) -> impl Future<Output = Result<Self::Handle, BrokerError>> + Send;

    /// Connects a client to the broker at `url`.
    fn connect(
        &self,
        url: &str,
        config: &BrokerClientConfig,
    ) -> impl Future<Output = Result<Self::Client, BrokerError>> + Send;

    /// Whether a private broker can be started here, or why not (its program is missing).
    fn check_available(&self) -> Result<(), BrokerError>;
}

/// A running broker (private or attached).
pub trait BrokerHandle: Send + Sync + 'static {
    /// Where clients connect.
    fn url(&self) -> String;

    /// Whether [`restart`](Self::restart) is possible (a private broker: yes; an external one: no).
    fn can_restart(&self) -> bool;

    /// Stops the broker and starts it again on the same address with the same storage;
    /// returns once it accepts connections again.
    fn restart(
        &mut self,
        mode: RestartMode,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Stops a private broker (an external one is left alone).
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// A client connection to a broker.
pub trait BrokerClient: Send + Sync + 'static {
    /// A subscription.
    type Subscription: Subscription;
    /// A consumer of a durable log.
    type Consumer: DurableConsumer;

    /// Publishes one message, fire and forget (no acknowledgement).
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Returns once everything published so far on this client has reached the broker.
    fn flush(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Subscribes to `topic`, as a member of the queue `group` when given (each message then
    /// reaches one member of the group). Returns once the broker has registered the
    /// subscription, so a message published afterwards by anyone reaches it.
    fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> impl Future<Output = Result<Self::Subscription, BrokerError>> + Send;

    /// Messages this client discarded because a subscription's buffer was full, as the client
    /// library reported them (a lower bound where the library's own report can overflow).
    fn overflowed(&self) -> u64;

    /// Waits until [`overflowed`](Self::overflowed) reaches `at_least` or `within` passes
    /// (libraries report overflow asynchronously), and returns it.
    fn await_overflow(&self, at_least: u64, within: Duration) -> impl Future<Output = u64> + Send;

    /// Creates (or reuses) a durable log.
    fn create_durable(
        &self,
        spec: &DurableSpec,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Publishes to a durable log and waits for the broker's acknowledgement; with a dedup
    /// id, a repeat within the log's window is acknowledged as a duplicate and not stored.
    fn publish_durable(
        &self,
        topic: &str,
        payload: Bytes,
        dedup_id: Option<&str>,
    ) -> impl Future<Output = Result<DurableAck, BrokerError>> + Send;

    /// Deletes a durable log and everything in it (cases clean up after themselves on shared
    /// brokers).
    fn delete_durable(&self, name: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Messages stored in a durable log.
    fn durable_len(&self, name: &str) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// A durable consumer `consumer` of the log `durable`, from its first message; messages
    /// not acknowledged are delivered again.
    fn consume(
        &self,
        durable: &str,
        consumer: &str,
    ) -> impl Future<Output = Result<Self::Consumer, BrokerError>> + Send;

    /// Closes the connection.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Messages of one subscription, in the order the broker delivered them.
pub trait Subscription: Send + 'static {
    /// The next message's payload; `None` once the subscription or its client closed.
    fn next(&mut self) -> impl Future<Output = Option<Bytes>> + Send;

    /// A message the client has already received, without waiting; `None` when there is none.
    fn try_next(&mut self) -> Option<Bytes>;
}

/// A consumer of a durable log.
pub trait DurableConsumer: Send + 'static {
    /// One delivered message.
    type Delivery: Delivery;

    /// The next delivery (survives broker restarts: it waits and resumes).
    fn next(&mut self) -> impl Future<Output = Result<Self::Delivery, BrokerError>> + Send;
}

/// A message delivered from a durable log, to be acknowledged.
pub trait Delivery: Send + 'static {
    /// The payload.
    fn payload(&self) -> &Bytes;
    /// True when the broker delivered this message before (it was not acknowledged in time).
    fn redelivered(&self) -> bool;
    /// Acknowledges it: the broker will not deliver it to this consumer again.
    fn ack(self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

macro_rules! brokers {
    ($($variant:ident => $ty:path),+ $(,)?) => {
        /// A broker technology, selected at run time.
        #[derive(Clone, Copy, Debug)]
        pub enum AnyBroker {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant($ty),
            )+
        }

        /// A running broker of any technology.
        // One per broker, not per message: its size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyBrokerHandle {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<$ty as Broker>::Handle),
            )+
        }

        /// A broker client of any technology.
        // One per connection, not per message: its size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyBrokerClient {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<$ty as Broker>::Client),
            )+
        }

        /// A subscription of any technology.
        #[derive(Debug)]
        pub enum AnySubscription {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<$ty as Broker>::Client as BrokerClient>::Subscription),
            )+
        }

        /// A durable consumer of any technology.
        // One per durable consumer; a transport without durable logs has an empty variant.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyConsumer {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<$ty as Broker>::Client as BrokerClient>::Consumer),
            )+
        }

        /// A durable delivery of any technology.
        // Moved, never copied in bulk; a transport without durable logs has an empty variant,
        // and boxing would cost an allocation per delivery.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyDelivery {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<<$ty as Broker>::Client as BrokerClient>::Consumer as DurableConsumer>::Delivery),
            )+
        }

        impl Broker for AnyBroker {
            type Handle = AnyBrokerHandle;
            type Client = AnyBrokerClient;

            async fn start(&self, target: &BrokerTarget) -> Result<AnyBrokerHandle, BrokerError> {
                match self { $(AnyBroker::$variant(b) => b.start(target).await.map(AnyBrokerHandle::$variant),)+ }
            }

            async fn connect(
                &self,
                url: &str,
                config: &BrokerClientConfig,
            ) -> Result<AnyBrokerClient, BrokerError> {
                match self { $(AnyBroker::$variant(b) => b.connect(url, config).await.map(AnyBrokerClient::$variant),)+ }
            }

            fn check_available(&self) -> Result<(), BrokerError> {
                match self { $(AnyBroker::$variant(b) => b.check_available(),)+ }
            }
        }

        impl BrokerHandle for AnyBrokerHandle {
            fn url(&self) -> String {
                match self { $(AnyBrokerHandle::$variant(h) => h.url(),)+ }
            }

            fn can_restart(&self) -> bool {
                match self { $(AnyBrokerHandle::$variant(h) => h.can_restart(),)+ }
            }

            async fn restart(&mut self, mode: RestartMode) -> Result<(), BrokerError> {
                match self { $(AnyBrokerHandle::$variant(h) => h.restart(mode).await,)+ }
            }

            async fn stop(self) {
                match self { $(AnyBrokerHandle::$variant(h) => h.stop().await,)+ }
            }
        }

        impl BrokerClient for AnyBrokerClient {
            type Subscription = AnySubscription;
            type Consumer = AnyConsumer;

            async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.publish(topic, payload).await,)+ }
            }

            async fn flush(&self) -> Result<(), BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.flush().await,)+ }
            }

            async fn subscribe(
                &self,
                topic: &str,
                group: Option<&str>,
            ) -> Result<AnySubscription, BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.subscribe(topic, group).await.map(AnySubscription::$variant),)+ }
            }

            fn overflowed(&self) -> u64 {
                match self { $(AnyBrokerClient::$variant(c) => c.overflowed(),)+ }
            }

            async fn await_overflow(&self, at_least: u64, within: Duration) -> u64 {
                match self { $(AnyBrokerClient::$variant(c) => c.await_overflow(at_least, within).await,)+ }
            }

            async fn create_durable(&self, spec: &DurableSpec) -> Result<(), BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.create_durable(spec).await,)+ }
            }

            async fn publish_durable(
                &self,
                topic: &str,
                payload: Bytes,
                dedup_id: Option<&str>,
            ) -> Result<DurableAck, BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.publish_durable(topic, payload, dedup_id).await,)+ }
            }

            async fn delete_durable(&self, name: &str) -> Result<(), BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.delete_durable(name).await,)+ }
            }

            async fn durable_len(&self, name: &str) -> Result<u64, BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.durable_len(name).await,)+ }
            }

            async fn consume(&self, durable: &str, consumer: &str) -> Result<AnyConsumer, BrokerError> {
                match self { $(AnyBrokerClient::$variant(c) => c.consume(durable, consumer).await.map(AnyConsumer::$variant),)+ }
            }

            async fn close(&self) {
                match self { $(AnyBrokerClient::$variant(c) => c.close().await,)+ }
            }
        }

        impl Subscription for AnySubscription {
            async fn next(&mut self) -> Option<Bytes> {
                match self { $(AnySubscription::$variant(s) => s.next().await,)+ }
            }

            fn try_next(&mut self) -> Option<Bytes> {
                match self { $(AnySubscription::$variant(s) => s.try_next(),)+ }
            }
        }

        impl DurableConsumer for AnyConsumer {
            type Delivery = AnyDelivery;

            async fn next(&mut self) -> Result<AnyDelivery, BrokerError> {
                match self { $(AnyConsumer::$variant(c) => c.next().await.map(AnyDelivery::$variant),)+ }
            }
        }

        impl Delivery for AnyDelivery {
            fn payload(&self) -> &Bytes {
                match self { $(AnyDelivery::$variant(d) => d.payload(),)+ }
            }

            fn redelivered(&self) -> bool {
                match self { $(AnyDelivery::$variant(d) => d.redelivered(),)+ }
            }

            async fn ack(self) -> Result<(), BrokerError> {
                match self { $(AnyDelivery::$variant(d) => d.ack().await,)+ }
            }
        }
    };
}

brokers! {
    Nats => nats::Nats,
    Mqtt => mqtt::Mqtt,
}

impl AnyTransport {
    /// The broker-level API of a broker transport; `None` for point-to-point transports.
    pub fn broker(&self) -> Option<AnyBroker> {
        match self {
            AnyTransport::Nats(n) => Some(AnyBroker::Nats(*n)),
            AnyTransport::Mqtt(m) => Some(AnyBroker::Mqtt(*m)),
            _ => None,
        }
    }
}

/// Checks a broker service prefix: tokens of `[A-Za-z0-9_-]` separated by `sep` (`.` for NATS
/// subjects, `/` for MQTT topics), so no token is empty or a wildcard. `what` names the token
/// kind in the error (`subject prefix`, `topic prefix`).
pub(crate) fn check_prefix(p: &str, sep: char, what: &str) -> Result<(), String> {
    let ok = p.split(sep).all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {p:?} must be tokens of [A-Za-z0-9_-] separated by '{sep}'"
        ))
    }
}
