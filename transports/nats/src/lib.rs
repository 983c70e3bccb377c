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
//! ## Unary: request/reply
//!
//! Request: publish to `P.Unary` with reply subject `R`; the payload is the request payload.
//! Headers only when needed (a plain call sends none): `Wb-Md` request metadata, `Wb-Timeout`,
//! and the directives. Reply on `R`: the payload is the response payload; headers only when
//! needed: `Wb-Status` and `Wb-Message` (absent status = `OK`), `Wb-Md` initial metadata,
//! `Wb-Tr` trailing metadata, `Wb-Recv-Msgs`/`Wb-Recv-Bytes`. When no server is attached, the
//! broker answers at once with its `503` no-responders status: the call fails with
//! `UNAVAILABLE` (14), not by timeout. A client that gives up on a call (cancelled, deadline
//! passed) publishes `R` as the payload of a message to `P.ctl.cancel`; the server running it
//! stops its handler.
//!
//! ## Streams: frames
//!
//! Every stream frame carries `Wb-Frame: <kind>`:
//!
//! | kind | on | direction | headers | payload |
//! |---|---|---|---|---|
//! | `open` | `P.<Method>`, reply subject `R` | client → service | `Wb-Window`, `Wb-Md`*, `Wb-Timeout`? | none |
//! | `accept` | `R`, reply subject `S` | server → client | `Wb-Window` | none |
//! | `headers` | `R` | server → client | `Wb-Md`* (initial metadata) | none |
//! | `msg` | `S` / `R` | both | `Wb-Seq`; requests: directives; responses: `Wb-Recv-*` | the message |
//! | `end` | `S` | client → server | `Wb-Seq` = messages sent (half-close) | none |
//! | `status` | `R` | server → client | `Wb-Status`?, `Wb-Message`?, `Wb-Tr`*, `Wb-Seq` = messages sent | none |
//! | `cancel` | `S` | client → server | — | none |
//! | `credit` | `S` / `R` | both | `Wb-Ack` = messages consumed so far | none |
//!
//! A call: `open`; the server answers `accept` (or a `status` alone when it refuses the call);
//! then the client sends `msg`s and one `end`, the server sends an optional `headers`, `msg`s and
//! exactly one `status`, which ends the call. `cancel` ends it from the client side (the server's
//! handler observes it and sends nothing more). `msg` sequence numbers start at 1 in each
//! direction; a gap, or a count in `end`/`status` that differs from what arrived, fails the call
//! with `DATA_LOSS` (15) — NATS drops messages for a subscriber that falls behind, and this makes
//! that loss visible instead of silent. A `status` without `Wb-Seq` (a server shutting down) is
//! not counted.
//!
//! **Flow control** (NATS has none): each side announces its receive window in messages
//! (`Wb-Window`, 128 here) and may send message `n` only when `n <= acked + window`, where `acked`
//! is the latest `Wb-Ack` its peer sent; receivers send `credit` every half window consumed.
//!
//! ## Headers
//!
//! | header | value |
//! |---|---|
//! | `Wb-Timeout` | the deadline as a budget in microseconds from arrival (like `grpc-timeout`) |
//! | `Wb-Md` | one metadata entry per header line, in order: `<key> <value>` |
//! | `Wb-Tr` | one trailing metadata entry, same form |
//! | `Wb-Status` | status code, gRPC numbering 0–16 (absent = 0 `OK`) |
//! | `Wb-Message` | status message, UTF-8, percent-encoded |
//! | `Wb-Size` / `Wb-Count` | directives: size of each response / number of responses |
//! | `Wb-Sizes` | directive: explicit response sizes, comma-separated |
//! | `Wb-Interval` / `Wb-Delay` | directives: pause before each streamed response / before answering, µs |
//! | `Wb-Fail` | directive: `<code> <after> <percent-encoded message>` |
//! | `Wb-Report-Deadline` | directive: `1` = report the budget seen in trailer `x-wb-deadline-budget-us` |
//! | `Wb-Recv-Msgs` / `Wb-Recv-Bytes` | response fields (client stream) |
//!
//! Metadata keys are lower-case `[a-z0-9._-]` (gRPC's rules). A key ending in **`-bin`** is the
//! marker of a binary value: it is written in standard base64 with padding (read with or without).
//! Other values are printable ASCII written as is, except that `%` and spaces at either end are
//! percent-encoded (`%25`, `%20`): NATS clients trim header values. Status messages are
//! percent-encoded the same way, plus every byte outside printable ASCII. One header name holds
//! all entries because NATS header maps keep the order of a name's values but not across names.
//! Example: `Wb-Md: x-trace-bin AAoL//6A` and `Wb-Fail: 10 2 aborted%20after%202`.
//!
//! Semantics of directives and generated payloads: [`Directives`](wirebench_core::message::Directives),
//! [`pattern`](wirebench_core::message::pattern).
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

use wirebench_core::transport::NetworkPath;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::Subject;

pub use client::{NatsCancel, NatsConnection, NatsReceiver, NatsSender};
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

/// A service's address: its broker's URL and its subject prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// The subject prefix; `None` when serving means "make a fresh one".
    pub prefix: Option<String>,
}

impl Endpoint {
    /// Parses `nats://HOST:PORT[/PREFIX]`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let rest = s
            .strip_prefix("nats://")
            .ok_or("expected nats://HOST:PORT/PREFIX")?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains(char::is_whitespace) {
            return Err("missing or invalid HOST:PORT after nats://".into());
        }
        let prefix = if prefix.is_empty() {
            None
        } else {
            wirebench_brokerrpc::check_prefix(
                &wirebench_brokerrpc::Scheme {
                    name: "nats",
                    separator: '.',
                    prefix_kind: "subject prefix",
                },
                prefix,
            )
            .map_err(|e| e.to_string())?;
            Some(prefix.to_owned())
        };
        Ok(Endpoint {
            url: format!("nats://{authority}"),
            prefix,
        })
    }

    fn prefix_str(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}/{p}", self.url),
            None => f.write_str(&self.url),
        }
    }
}

/// What `ServerConfig::listen` asks of a `nats` server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `nats://HOST:PORT[/PREFIX]`: attach to that broker (joining service `PREFIX` when given,
    /// so several servers share its load through the queue group).
    Attach(Endpoint),
    /// `IP:PORT`: start a private nats-server there (port 0: any free port), owned by the server.
    Private(SocketAddr),
}

impl Target {
    fn parse(listen: &str) -> Result<Target, TransportError> {
        let bad = |reason: String| TransportError::Endpoint {
            endpoint: listen.to_owned(),
            reason,
        };
        if listen.starts_with("nats://") {
            return Endpoint::parse(listen).map(Target::Attach).map_err(bad);
        }
        listen.parse().map(Target::Private).map_err(|_| {
            bad(
                "expected nats://HOST:PORT[/PREFIX] (attach to a broker) or IP:PORT (start a \
                 private nats-server there)"
                    .into(),
            )
        })
    }
}

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
            (
                Capability::ByteStreamWire,
                "the nats wire runs client -> nats-server -> echo server: bytes written to the \
                 endpoint are parsed by the broker, and our server only ever sees whole NATS \
                 messages, so fragmentation and garbage would test nats-server, not this \
                 transport",
            ),
            (
                Capability::Tls,
                "TLS on the nats path is nats-server's own tls block between each client and \
                 the broker; wirebench configures TLS only on its point-to-point transports \
                 (tcp, grpc, quic), so the tls cases would test nats-server's setup",
            ),
            (
                Capability::MutualTls,
                "mutual TLS on the nats path is nats-server's own tls block (verify: true); \
                 wirebench configures TLS only on its point-to-point transports (tcp, grpc, quic)",
            ),
            (
                Capability::MaxConcurrentStreams,
                "NATS has no per-connection stream limit: calls are messages on subjects, and \
                 the broker's flow control (slow-consumer limits) is what bounds them",
            ),
            (
                Capability::Datagrams,
                "nats runs over TCP to the broker: loss applies to datagrams, and TCP retransmits below us",
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
        NatsServer::start(Target::parse(&config.listen)?, echo).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<NatsConnection, TransportError> {
        config.options.check_known("nats", &[])?;
        let e = parse_endpoint(endpoint)?;
        NatsConnection::connect(config, e).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        // The client's hop is to the broker; the echo server keeps its own direct link.
        let e = parse_endpoint(endpoint)?;
        NetworkPath::tcp(e.url.trim_start_matches("nats://"))
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        let mut e = parse_endpoint(endpoint)?;
        e.url = format!("nats://{via}");
        Ok(e.to_string())
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

/// An endpoint string as a client or proxy gets it, with the error naming it.
fn parse_endpoint(endpoint: &str) -> Result<Endpoint, TransportError> {
    Endpoint::parse(endpoint).map_err(|reason| TransportError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("nats://127.0.0.1:4222/wb.echo.X-1_a").unwrap();
        assert_eq!(e.url, "nats://127.0.0.1:4222");
        assert_eq!(e.prefix.as_deref(), Some("wb.echo.X-1_a"));
        assert_eq!(e.to_string(), "nats://127.0.0.1:4222/wb.echo.X-1_a");
        assert_eq!(Endpoint::parse("nats://h:1").unwrap().prefix, None);
        assert_eq!(Endpoint::parse("nats://h:1/").unwrap().prefix, None);
        for bad in [
            "127.0.0.1:4222/x",
            "nats:///x",
            "nats://h:1/a..b",
            "nats://h:1/a.*",
            "nats://h:1/a.>",
            "nats://h:1/a b",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_strings_choose_the_broker() {
        assert_eq!(
            Target::parse("127.0.0.1:0").unwrap(),
            Target::Private("127.0.0.1:0".parse().unwrap())
        );
        assert!(matches!(
            Target::parse("nats://127.0.0.1:4222").unwrap(),
            Target::Attach(Endpoint { prefix: None, .. })
        ));
        assert!(Target::parse("localhost").is_err());
    }
}
