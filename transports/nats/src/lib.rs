//! `nats`: the `Echo` service over a NATS broker (nats-server 2.9+, client async-nats) —
//! request/reply for unary calls, a small frame protocol over inbox subjects for streams, and
//! NATS headers for metadata, status and deadlines. Also the broker-level API
//! ([`wirebench_core::broker`]) over core NATS and JetStream, and running `nats-server` itself
//! ([`broker`]).
//!
//! # Calling the service from any language
//!
//! A service is a broker URL and a **subject prefix** `P` (tokens of `[A-Za-z0-9_-]` joined by
//! `.`). Its endpoint string is `nats://HOST:PORT/P`, e.g. `nats://127.0.0.1:4222/wb.echo.X`.
//! Clients need a NATS client with headers and *no responders* support (NATS 2.2+).
//!
//! ## Subjects
//!
//! | subject | subscribed by | carries |
//! |---|---|---|
//! | `P.Unary`, `P.ServerStream`, `P.ClientStream`, `P.Bidi` | every server of the service, as one subscription `P.*` in queue group `wb-echo`: each message reaches one server | unary requests; `open` frames |
//! | `P.ctl.cancel` | every server, no queue group | a unary call's cancellation (payload: the call's reply subject) |
//! | `R` = the client's reply subject of one call | the client | the unary reply; the server's frames of a stream |
//! | `S` = the server's subject of one stream (the `accept` frame's reply subject) | the server running the call | the client's frames of that stream |
//!
//! Any other last token after `P.` is an unknown method, answered with `UNIMPLEMENTED` (12).
//! This client uses one wildcard subscription `<inbox>.*` and `R = <inbox>.<call id>`; servers
//! likewise use `S = <server inbox>.<call id>`. Neither is required of other implementations:
//! `R` and `S` are opaque subjects.
//!
//! ## The protocol
//!
//! Unary request/reply, stream frames, flow control, sequence numbers, the `Wb-*` headers and
//! their encodings are the broker protocol's, the same on every broker: see
//! [`wirebench_brokerrpc`]. What NATS adds:
//!
//! - **Addresses.** `R` is the request's reply subject; `S` is the `accept` frame's reply
//!   subject. A stream's frames from the server go to `R`, the client's to `S`.
//! - **Metadata** rides in two header names, one value per entry, in order: `Wb-Md` (request
//!   and initial metadata) and `Wb-Tr` (trailing), each value `<key> <value>`. NATS clients
//!   trim header values and a header map keeps the order of one name's values but not across
//!   names: so ASCII values are percent-encoded like status messages (`%`, non-printables,
//!   spaces at either end), binary (`-bin`) values base64. Example: `Wb-Md: x-trace-bin
//!   AAoL//6A`.
//! - **Cancelling a unary call**: publish its reply subject `R` as the payload of a message to
//!   `P.ctl.cancel`.
//! - **Nobody serving**: the broker answers a request at once with its `503` no-responders
//!   status, and the call fails with `UNAVAILABLE` (14), not by timeout.
//!
//! # Serving, and what `Transport::serve` means here
//!
//! A `nats` server is a client of a broker. `ServerConfig::listen` says which:
//!
//! - `IP:PORT` (e.g. the default `127.0.0.1:0`): start a **private** nats-server there (port 0:
//!   any free port) with JetStream in a temporary directory; the server owns it and stops it at
//!   shutdown. This is what conformance cases, the floor and a `serve` child process get by
//!   default, so no broker needs to be running beforehand.
//! - `nats://HOST:PORT`: attach to that broker as a new service (fresh prefix `wb.echo.<nuid>`).
//! - `nats://HOST:PORT/P`: attach and **join** service `P` — pass one server's endpoint as the
//!   next one's `listen` and the queue group shares the calls among them.
//!
//! At shutdown a server answers the requests it has received but not handled with
//! `UNAVAILABLE`, and ends its running streams with a `status` frame (`UNAVAILABLE`, without
//! `Wb-Seq`). A **draining** server first drains its service subscription the NATS way
//! (`UNSUB`, then a `PING`: the broker routes no new request to it — its queue-group peers get
//! them, or callers get no-responders — and everything sent before the `UNSUB` still arrives
//! and is answered); it keeps its cancel and stream subjects, so the calls in flight run to
//! their end as usual, and it shuts down as above once they have (or its grace ran out). A
//! private broker the server started stops with it, closing its clients' connections: an
//! answer still on its way through the broker may be lost with it (or the client may see its
//! connection go first). When every answer matters, drain a server whose broker outlives it
//! (`listen = nats://HOST:PORT...`). A client whose broker connection breaks fails every call in flight with
//! `UNAVAILABLE` at once, and new calls until it has reconnected (the client library
//! reconnects by itself). A client whose inbox overflows (the library drops replies past
//! 65,536 waiting) fails every call in flight with `RESOURCE_EXHAUSTED` rather than let one
//! wait forever.
//!
//! # Limits and gaps
//!
//! - Message size: the broker's `max_payload` bounds every message with its headers (1 MiB by
//!   default; private brokers started here use 8 MiB so the default 4 MiB limit fits). A message
//!   the broker would refuse fails that call with `RESOURCE_EXHAUSTED`; below that, the server's
//!   and the client's configured limits apply as on every transport.
//! - The wire runs client ↔ broker ↔ server, so bytes written to the endpoint reach
//!   nats-server's protocol parser, not ours: byte-stream robustness is the broker's.
//! - A client that vanishes without cancelling leaves its server-side stream running until its
//!   deadline (NATS tells a server nothing about its callers' liveness).

pub mod baseline;
pub mod broker;
mod client;
mod pubsub;
mod server;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::Subject;
use wirebench_brokerrpc::{Scheme, gaps};
use wirebench_core::transport::NetworkPath;

pub use client::{NatsConnection, NatsLink};
pub use pubsub::{
    NatsBrokerClient, NatsBrokerHandle, NatsConsumer, NatsDelivery, NatsSubscription,
};
pub use server::NatsServer;

use wirebench_core::YardstickConfig;
use wirebench_core::echo::Echo;
use wirebench_core::message::Method;
use wirebench_core::transport::{
    Capabilities, Capability, ClientConfig, ServerConfig, Transport, TransportError,
};

/// The queue group every server of a service joins.
pub const QUEUE_GROUP: &str = "wb-echo";

/// The `nats` transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nats;

/// How NATS spells service addresses: `nats://HOST:PORT/P`, `P` tokens joined by `.`.
pub const SCHEME: Scheme = Scheme {
    name: "nats",
    separator: '.',
    prefix_kind: "subject prefix",
};

fn method_subject(prefix: &str, method: Method) -> Subject {
    Subject::from(format!("{prefix}.{}", method.name()))
}

fn cancel_subject(prefix: &str) -> Subject {
    Subject::from(format!("{prefix}.ctl.cancel"))
}

impl Transport for Nats {
    type Connection = NatsConnection;
    type Server = NatsServer;
    type Broker = Nats;
    type Yardstick = baseline::NatsYardstick;

    fn name(&self) -> &'static str {
        "nats"
    }

    fn capabilities(&self) -> Capabilities {
        const GAPS: &[(Capability, &str)] = &[
            (Capability::ByteStreamWire, gaps::BYTE_STREAM_WIRE),
            (
                Capability::Tls,
                "TLS on the nats path is nats-server's own tls block between each client and \
                 the broker; wirebench configures TLS only on its point-to-point transports \
                 (tcp, grpc, quic), so the tls cases would test nats-server's setup",
            ),
            (Capability::MutualTls, gaps::MUTUAL_TLS),
            (
                Capability::MaxConcurrentStreams,
                "NATS has no per-connection stream limit: calls are messages on subjects, and \
                 the broker's flow control (slow-consumer limits) is what bounds them",
            ),
            (Capability::Datagrams, gaps::DATAGRAMS),
            (
                Capability::WireBytes,
                "async-nats owns its socket and exposes no byte counters; and a call crosses \
                 two hops (client to broker to server), so a count at the client would be half \
                 the story",
            ),
        ];
        Capabilities::all_except(GAPS)
    }

    async fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> Result<NatsServer, TransportError> {
        config.options.check_known("nats", &[])?;
        let target = SCHEME.target(&config.listen)?;
        NatsServer::start(target, echo).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<NatsConnection, TransportError> {
        config.options.check_known("nats", &[])?;
        client::connect(config, SCHEME.endpoint(endpoint)?).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        SCHEME.network_path(endpoint)
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        SCHEME.endpoint_via(endpoint, via)
    }

    fn broker(&self) -> Option<Nats> {
        Some(Nats)
    }

    /// A plain async-nats request/reply pair, on the same broker as the transport.
    fn yardstick(&self, config: &YardstickConfig) -> Option<baseline::NatsYardstick> {
        Some(baseline::NatsYardstick {
            url: config.broker_url.clone(),
        })
    }
}
