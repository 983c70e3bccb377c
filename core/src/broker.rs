//! The broker-level API that broker transports implement beside the RPC contract: start or
//! attach to a broker, publish and subscribe, queue groups, acknowledged durable publishing
//! and restarting the broker — what the broker-semantics conformance cases and the
//! event-streaming scenarios need, without naming any broker's types.
//!
//! `nats` implements it over core NATS and JetStream; `mqtt` over MQTT 5 publish/subscribe with
//! shared subscriptions as queue groups (it declares no durable log: see its capabilities). Topics are the
//! broker's own subject/topic strings; callers keep them to `[A-Za-z0-9_.-]` tokens separated
//! by `.` so that every broker accepts them. Static dispatch throughout, as in the facade's
//! registry: the event-streaming load path pays no box per message. A transport without a
//! broker names [`NoBroker`], which cannot be constructed.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

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

    /// The URL scheme of this broker's addresses (`nats`, `mqtt`): how the harness tells which
    /// transport an external broker's URL (`--broker-url`) is for.
    fn scheme(&self) -> &'static str;
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

/// The broker of a transport that has none: an empty enum, so no value of it (nor of its
/// handle, client, subscription, consumer or delivery) can exist, and each method is an
/// exhaustive `match` on nothing.
#[derive(Clone, Copy, Debug)]
pub enum NoBroker {}

impl Broker for NoBroker {
    type Handle = NoBroker;
    type Client = NoBroker;

    async fn start(&self, _: &BrokerTarget) -> Result<NoBroker, BrokerError> {
        match *self {}
    }

    async fn connect(&self, _: &str, _: &BrokerClientConfig) -> Result<NoBroker, BrokerError> {
        match *self {}
    }

    fn check_available(&self) -> Result<(), BrokerError> {
        match *self {}
    }

    fn scheme(&self) -> &'static str {
        match *self {}
    }
}

impl BrokerHandle for NoBroker {
    fn url(&self) -> String {
        match *self {}
    }

    fn can_restart(&self) -> bool {
        match *self {}
    }

    async fn restart(&mut self, _: RestartMode) -> Result<(), BrokerError> {
        match *self {}
    }

    async fn stop(self) {
        match self {}
    }
}

impl BrokerClient for NoBroker {
    type Subscription = NoBroker;
    type Consumer = NoBroker;

    async fn publish(&self, _: &str, _: Bytes) -> Result<(), BrokerError> {
        match *self {}
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        match *self {}
    }

    async fn subscribe(&self, _: &str, _: Option<&str>) -> Result<NoBroker, BrokerError> {
        match *self {}
    }

    fn overflowed(&self) -> u64 {
        match *self {}
    }

    async fn await_overflow(&self, _: u64, _: Duration) -> u64 {
        match *self {}
    }

    async fn create_durable(&self, _: &DurableSpec) -> Result<(), BrokerError> {
        match *self {}
    }

    async fn publish_durable(
        &self,
        _: &str,
        _: Bytes,
        _: Option<&str>,
    ) -> Result<DurableAck, BrokerError> {
        match *self {}
    }

    async fn delete_durable(&self, _: &str) -> Result<(), BrokerError> {
        match *self {}
    }

    async fn durable_len(&self, _: &str) -> Result<u64, BrokerError> {
        match *self {}
    }

    async fn consume(&self, _: &str, _: &str) -> Result<NoBroker, BrokerError> {
        match *self {}
    }

    async fn close(&self) {
        match *self {}
    }
}

impl Subscription for NoBroker {
    async fn next(&mut self) -> Option<Bytes> {
        match *self {}
    }

    fn try_next(&mut self) -> Option<Bytes> {
        match *self {}
    }
}

impl DurableConsumer for NoBroker {
    type Delivery = NoBroker;

    async fn next(&mut self) -> Result<NoBroker, BrokerError> {
        match *self {}
    }
}

impl Delivery for NoBroker {
    fn payload(&self) -> &Bytes {
        match *self {}
    }

    fn redelivered(&self) -> bool {
        match *self {}
    }

    async fn ack(self) -> Result<(), BrokerError> {
        match self {}
    }
}
