//! The contract every transport implements: `Transport`, `Connection`, streaming call halves,
//! `Server`, configuration and declared `Capabilities`.
//!
//! Futures are returned as `impl Future + Send` (static dispatch): a call costs no boxing;
//! runtime selection by name goes through the enums of the facade crate's registry.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::broker::{Broker, BrokerError};
use crate::drain::DrainReport;
use crate::echo::Echo;
use crate::message::{EchoRequest, EchoResponse, Method};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::tls::{ClientTls, ServerTls};
use crate::yardstick::{Yardstick, YardstickConfig};

/// Errors setting up a transport (serving, connecting, configuring).
#[derive(Debug, Error)]
pub enum TransportError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value or option was invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The endpoint string could not be understood by this transport.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// The peer broke the protocol during setup.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Connecting or serving timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The transport cannot do what was asked (a declared limitation).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The transport's broker could not be started or reached (see
    /// [`BrokerError::is_not_installed`] for a missing broker program).
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// The TLS handshake failed or TLS settings were refused (wrong CA, name mismatch, missing
    /// client certificate, a peer that does not speak TLS).
    #[error("TLS with {endpoint}: {reason}")]
    Tls {
        /// The endpoint being connected to or served.
        endpoint: String,
        /// What failed.
        reason: String,
    },
}

impl TransportError {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> TransportError {
        TransportError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Free-form `key = value` options for one transport (its knobs), validated by the transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<String, String>);

impl Options {
    /// No options.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets an option.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Options {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The raw value of an option.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Parses an option, naming the key and value on error.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<Option<T>, TransportError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|e| TransportError::Config(format!("option {key} = {v:?}: {e}"))),
        }
    }

    /// Fails on any option not in `known` (a typo must not be silently ignored).
    pub fn check_known(&self, transport: &str, known: &[&str]) -> Result<(), TransportError> {
        for key in self.0.keys() {
            if !known.contains(&key.as_str()) {
                return Err(TransportError::Config(format!(
                    "unknown option {key:?} for transport {transport} (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// Iterates over the options.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Default maximum message size (as gRPC's default receive limit): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` binds an ephemeral port).
    pub listen: String,
    /// Transport knobs.
    pub options: Options,
    /// TLS 1.3 (mutual when it requires client certificates); `None` serves plaintext where
    /// the transport has a plaintext mode.
    pub tls: Option<ServerTls>,
}

impl ServerConfig {
    /// Loopback on an ephemeral port, no options, no TLS.
    pub fn loopback() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".to_owned(),
            options: Options::new(),
            tls: None,
        }
    }
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Largest message payload the client accepts; larger ones fail the call with
    /// `RESOURCE_EXHAUSTED`.
    pub max_message_size: usize,
    /// How long connecting (TLS handshake included) may take.
    pub connect_timeout: Duration,
    /// Transport knobs.
    pub options: Options,
    /// TLS 1.3 settings (mutual when they carry a client certificate); `None` connects in
    /// plaintext where the transport has a plaintext mode.
    pub tls: Option<ClientTls>,
    /// Dead-peer detection: the client probes its connection at this interval (HTTP/2 PING,
    /// QUIC keep-alive, NATS PING, MQTT PINGREQ) and, when the peer stays silent for about two
    /// intervals (a few for some clients), closes the connection and fails its calls —
    /// calls without a deadline included. A transport rounds the interval up to what its
    /// client allows (MQTT via rumqttc: whole seconds, at least 5). `None` keeps the transport's own default (often minutes, or
    /// never). Transports without a probe on their wire declare no
    /// [`Capability::DeadPeerDetection`] and ignore it.
    pub keepalive: Option<Duration>,
    /// Run the connection's own tasks (reader, writer) on the current thread's
    /// [`tokio::task::LocalSet`] rather than on the runtime. For single-threaded drivers whose
    /// callers are `LocalSet` tasks (the load engine's workers): a runtime task waking a
    /// `LocalSet` task makes the current-thread scheduler poll its driver once more (one more
    /// `epoll_wait`) per call. Honoured by transports whose connection tasks are our own (`tcp`'s
    /// reader and writer, `grpc`'s h2 connection); others (quinn's drivers, the broker
    /// clients' tasks) ignore it. Connect inside a `LocalSet` when it is set (tokio panics otherwise).
    pub local_tasks: bool,
}

/// Spawns one of a client connection's own tasks: on the runtime, or on the current
/// `LocalSet` (see [`ClientConfig::local_tasks`]).
pub fn spawn_connection_task(
    local: bool,
    task: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::AbortHandle {
    if local {
        tokio::task::spawn_local(task).abort_handle()
    } else {
        tokio::spawn(task).abort_handle()
    }
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(5),
            options: Options::new(),
            tls: None,
            keepalive: None,
            local_tasks: false,
        }
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Request metadata.
    pub metadata: Metadata,
    /// The call's deadline, relative to its start; the server sees it and honours it.
    pub timeout: Option<Duration>,
    /// The call is idempotent: a replay does no harm, so a transport may send it as 0-RTT
    /// early data (which an attacker can replay). Calls not marked wait for the handshake.
    pub replay_safe: bool,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn with_timeout(timeout: Duration) -> CallOptions {
        CallOptions {
            metadata: Metadata::new(),
            timeout: Some(timeout),
            replay_safe: false,
        }
    }

    /// The absolute deadline of a call starting now.
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }
}

/// A completed unary call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnaryReply {
    /// Initial metadata from the server.
    pub headers: Metadata,
    /// The response.
    pub message: EchoResponse,
    /// Trailing metadata from the server.
    pub trailers: Metadata,
}

/// One connection to a server; calls on it may run concurrently (`&self`).
pub trait Connection: Send + Sync + 'static {
    /// The sending half of a streaming call.
    type Sender: CallSender;
    /// The receiving half of a streaming call.
    type Receiver: CallReceiver;

    /// A unary call. Dropping the future before it completes cancels the call.
    fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> impl Future<Output = Result<UnaryReply, Status>> + Send;

    /// Opens a call of any method as a pair of halves (the server sees it at once where the
    /// wire allows). Dropping the receiver before the call ends cancels it.
    fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> impl Future<Output = Result<(Self::Sender, Self::Receiver), Status>> + Send;

    /// Closes the connection; calls still in flight fail with `UNAVAILABLE`.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Bytes this connection has written to and read from the network so far (at the
    /// transport's socket, including framing and handshakes), or `None` when the transport
    /// cannot see its own bytes.
    fn wire_bytes(&self) -> Option<WireBytes> {
        None
    }
}

/// Bytes a connection has moved, counted at its socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireBytes {
    /// Bytes written.
    pub sent: u64,
    /// Bytes read.
    pub received: u64,
}

/// The sending half of a call.
pub trait CallSender: Send + 'static {
    /// Sends one request message. Fails with the call's status when the call has ended.
    fn send(&mut self, request: EchoRequest) -> impl Future<Output = Result<(), Status>> + Send;

    /// Half-closes: no more requests. Dropping the sender half-closes too.
    fn close_send(&mut self) -> impl Future<Output = Result<(), Status>> + Send;
}

/// The receiving half of a call.
pub trait CallReceiver: Send + 'static {
    /// Waits for the initial metadata (empty when the server sent none) and returns it;
    /// responses that arrive meanwhile are kept for [`recv`](Self::recv).
    fn headers(&mut self) -> impl Future<Output = Result<Metadata, Status>> + Send;

    /// The next response; `Ok(None)` when the call ended with `OK`, `Err` with its status
    /// (carrying the trailing metadata) when it failed.
    fn recv(&mut self) -> impl Future<Output = Result<Option<EchoResponse>, Status>> + Send;

    /// Trailing metadata, once the call has ended.
    fn trailers(&self) -> &Metadata;

    /// Cancels the call: the server is told where the wire can say so.
    fn cancel(&mut self);
}

/// A running server.
pub trait Server: Send + Sync + 'static {
    /// What a client passes to `connect` to reach this server.
    fn endpoint(&self) -> String;

    /// Stops at once: stops accepting, cancels the handlers of calls in flight (their clients
    /// see `UNAVAILABLE`) and closes every connection.
    fn shutdown(self) -> impl Future<Output = ()> + Send;

    /// Stops gracefully: from now on the server admits no new connection or call (its clients
    /// learn so in the transport's own idiom, fail new calls with `UNAVAILABLE` and connect
    /// again), lets the calls already in flight finish for up to `grace`, then closes as
    /// [`shutdown`](Self::shutdown) does, cutting whatever still runs. With
    /// [`Capability::GracefulDrain`] declared, calls that finish within the grace reach their
    /// clients intact.
    fn drain(self, grace: Duration) -> impl Future<Output = DrainReport> + Send;
}

/// A transport: a way to serve the `Echo` service and to call it.
pub trait Transport: Send + Sync + 'static {
    /// A client connection.
    type Connection: Connection;
    /// A running server.
    type Server: Server;
    /// The broker-level API of a broker transport ([`crate::NoBroker`] for the others).
    type Broker: Broker;
    /// The transport's yardstick ([`crate::NoYardstick`] when it has none).
    type Yardstick: Yardstick;

    /// The transport's name (`tcp`, `grpc`, ...).
    fn name(&self) -> &'static str;

    /// What this transport can do, and why not where it cannot.
    fn capabilities(&self) -> Capabilities;

    /// Serves `echo` as configured.
    fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> impl Future<Output = Result<Self::Server, TransportError>> + Send;

    /// Connects to a server's endpoint.
    fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> impl Future<Output = Result<Self::Connection, TransportError>> + Send;

    /// The network hop a client's connection to `endpoint` takes: the socket its bytes go to
    /// (the server, or for a broker transport the broker) and the protocol carrying them. This
    /// is where a fault proxy goes. `Unsupported`, with the reason, when there is no network
    /// path to impair (in-process channels).
    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError>;

    /// `endpoint` as a client reaches it through `via`: a proxy listening in front of
    /// [`Transport::network_path`]'s address. Everything else in the endpoint (a broker's
    /// subject prefix, a QUIC certificate pin) is kept.
    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError>;

    /// The broker-level API, for a broker transport; `None` for point-to-point transports.
    fn broker(&self) -> Option<Self::Broker> {
        None
    }

    /// The transport's yardstick for this measurement (see [`crate::yardstick`]), if it has
    /// one that applies.
    fn yardstick(&self, config: &YardstickConfig) -> Option<Self::Yardstick> {
        let _ = config;
        None
    }
}

/// The protocol that carries a transport's bytes on its network hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireProtocol {
    /// A TCP byte stream (tcp, grpc, and the broker transports' client links).
    Tcp,
    /// UDP datagrams (quic).
    Udp,
}

/// Where a client's connection goes: see [`Transport::network_path`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkPath {
    /// The socket the client's bytes are sent to.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: WireProtocol,
}

impl NetworkPath {
    /// A TCP hop to `endpoint`, which must be `IP:PORT` (names are not resolved: endpoints
    /// are the addresses servers report).
    pub fn tcp(endpoint: &str) -> Result<NetworkPath, TransportError> {
        Ok(NetworkPath {
            addr: parse_socket_addr(endpoint)?,
            protocol: WireProtocol::Tcp,
        })
    }

    /// A UDP hop to `endpoint` (`IP:PORT`).
    pub fn udp(endpoint: &str) -> Result<NetworkPath, TransportError> {
        Ok(NetworkPath {
            addr: parse_socket_addr(endpoint)?,
            protocol: WireProtocol::Udp,
        })
    }
}

/// Parses `IP:PORT`, naming the endpoint when it is not one.
pub fn parse_socket_addr(endpoint: &str) -> Result<SocketAddr, TransportError> {
    endpoint.parse().map_err(|_| TransportError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: "expected IP:PORT".into(),
    })
}

/// Something a conformance case may need from a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Unary calls.
    Unary,
    /// Server-streaming calls.
    ServerStream,
    /// Client-streaming calls.
    ClientStream,
    /// Bidirectional streaming calls.
    Bidi,
    /// The server's handler observes a client's cancellation.
    ServerCancel,
    /// The call's deadline reaches the server, which honours it.
    DeadlinePropagation,
    /// ASCII metadata, initial and trailing.
    AsciiMetadata,
    /// Binary (`-bin`) metadata.
    BinaryMetadata,
    /// A configurable maximum message size, enforced without closing the connection.
    MaxMessageSize,
    /// The wire is a byte stream over TCP that a raw socket can write to (fragmented and
    /// malformed input can be fed to the server).
    ByteStreamWire,
    /// TLS 1.3.
    Tls,
    /// Mutual TLS.
    MutualTls,
    /// `authorization` bearer tokens checked by the server.
    TokenAuth,
    /// The transport can run without TLS (so a plaintext client can meet a TLS server).
    Plaintext,
    /// The server option `max_concurrent_streams` limits the calls open at once on one
    /// connection, and the client queues calls beyond the limit instead of failing them.
    MaxConcurrentStreams,
    /// Broker semantics (fanout, queue groups, per-publisher order, overflow reporting).
    Broker,
    /// Acknowledged publishes to a durable log survive a broker restart (meaningful with
    /// `Broker`; cases needing it also need `Broker`).
    BrokerDurable,
    /// A durable publish repeated with the same dedup id inside the window is stored once
    /// (meaningful with `Broker`).
    BrokerDedup,
    /// The server can run in another process (`wirebench serve`) and be reached through its
    /// endpoint; load runs then account client and server CPU and memory separately.
    OutOfProcess,
    /// The client's connection crosses a network hop ([`Transport::network_path`]) where the
    /// harness's fault proxy can sit: resets, data limits and blackholes reach it.
    NetworkFaults,
    /// The client's network hop is a TCP byte stream, which a proxy can cut at any byte (a
    /// data limit mid-frame) or reset (RST); meaningful with `NetworkFaults`.
    StreamHop,
    /// The transport's bytes travel in UDP datagrams, so datagram loss, duplication and
    /// reordering apply to it (and its own recovery must repair them).
    Datagrams,
    /// With [`ClientConfig::keepalive`] set, a connection whose peer has gone silent fails its
    /// calls in flight with an error within a few keepalive intervals, even calls without a
    /// deadline (the conformance case asks a 1 s keepalive and allows 12 s, room for clients
    /// with a keepalive floor: MQTT's is 5 s).
    DeadPeerDetection,
    /// A connection re-establishes its link by itself after the server (or the broker) it
    /// talks to restarts: the same connection works again without the caller re-dialling.
    Reconnect,
    /// [`Server::drain`] lets the calls already in flight finish (within its grace) before it
    /// closes their connections, and a client's new calls fail fast with `UNAVAILABLE` so it
    /// connects again.
    GracefulDrain,
    /// The connection counts the bytes it moves at its socket ([`Connection::wire_bytes`]),
    /// so load runs report wire bytes per call.
    WireBytes,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 26] = [
        Capability::Unary,
        Capability::ServerStream,
        Capability::ClientStream,
        Capability::Bidi,
        Capability::ServerCancel,
        Capability::DeadlinePropagation,
        Capability::AsciiMetadata,
        Capability::BinaryMetadata,
        Capability::MaxMessageSize,
        Capability::ByteStreamWire,
        Capability::Tls,
        Capability::MutualTls,
        Capability::TokenAuth,
        Capability::Plaintext,
        Capability::MaxConcurrentStreams,
        Capability::Broker,
        Capability::BrokerDurable,
        Capability::BrokerDedup,
        Capability::OutOfProcess,
        Capability::NetworkFaults,
        Capability::StreamHop,
        Capability::Datagrams,
        Capability::DeadPeerDetection,
        Capability::Reconnect,
        Capability::GracefulDrain,
        Capability::WireBytes,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Unary => "unary",
            Capability::ServerStream => "server-stream",
            Capability::ClientStream => "client-stream",
            Capability::Bidi => "bidi",
            Capability::ServerCancel => "server-observed-cancel",
            Capability::DeadlinePropagation => "deadline-propagation",
            Capability::AsciiMetadata => "ascii-metadata",
            Capability::BinaryMetadata => "binary-metadata",
            Capability::MaxMessageSize => "max-message-size",
            Capability::ByteStreamWire => "byte-stream-wire",
            Capability::Tls => "tls",
            Capability::MutualTls => "mtls",
            Capability::TokenAuth => "token-auth",
            Capability::Plaintext => "plaintext",
            Capability::MaxConcurrentStreams => "max-concurrent-streams",
            Capability::Broker => "broker",
            Capability::BrokerDurable => "broker-durable",
            Capability::BrokerDedup => "broker-dedup",
            Capability::OutOfProcess => "out-of-process",
            Capability::NetworkFaults => "network-faults",
            Capability::StreamHop => "stream-hop",
            Capability::Datagrams => "datagrams",
            Capability::DeadPeerDetection => "dead-peer-detection",
            Capability::Reconnect => "reconnect",
            Capability::GracefulDrain => "graceful-drain",
            Capability::WireBytes => "wire-bytes",
        }
    }
}

/// What a transport declares: every capability is supported except those listed with the
/// reason they are not. A gap without a reason cannot be expressed.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    gaps: &'static [(Capability, &'static str)],
}

impl Capabilities {
    /// Everything except `gaps`, each with its reason.
    pub const fn all_except(gaps: &'static [(Capability, &'static str)]) -> Capabilities {
        Capabilities { gaps }
    }

    /// True when `cap` is declared.
    pub fn supports(&self, cap: Capability) -> bool {
        self.gap(cap).is_none()
    }

    /// Why `cap` is not supported, or `None` when it is.
    pub fn gap(&self, cap: Capability) -> Option<&'static str> {
        self.gaps.iter().find(|(c, _)| *c == cap).map(|(_, r)| *r)
    }

    /// The first capability in `needs` that is missing, with its reason.
    pub fn first_missing(&self, needs: &[Capability]) -> Option<(Capability, &'static str)> {
        needs
            .iter()
            .find_map(|c| self.gap(*c).map(|reason| (*c, reason)))
    }
}

/// Runs `fut` until `deadline`, mapping expiry to `DEADLINE_EXCEEDED`: the client side of
/// every transport enforces the deadline itself, so the error arrives on time even when the
/// server or the network is stuck.
pub async fn until_deadline<T>(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => fut.await,
        Some(d) => match tokio::time::timeout_at(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded("deadline exceeded (client)")),
        },
    }
}
