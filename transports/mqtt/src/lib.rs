//! `mqtt`: the `Echo` service over an MQTT 5 broker (client rumqttc) — request/reply with
//! response topics and correlation data, streams as sequences of messages with sequence numbers
//! and a final status message, MQTT 5 user properties for metadata, status and deadlines. By
//! default the broker is embedded in this process ([`embedded`], rmqtt), so the transport needs
//! nothing installed; any MQTT 5 broker (mosquitto, EMQX, HiveMQ, ...) can be used by URL.
//! Also the broker-level API ([`wirebench_core::broker`]) over plain MQTT publish/subscribe, with
//! MQTT 5 shared subscriptions as queue groups.
//!
//! # Calling the service from any language
//!
//! A service is a broker and a **topic prefix** `P` (levels of `[A-Za-z0-9_-]` joined by `/`).
//! Its endpoint string is `mqtt://HOST:PORT/P`, e.g. `mqtt://127.0.0.1:1883/wb/echo/X`. Clients
//! need MQTT 5 (response topic, correlation data, user properties).
//!
//! ## Topics
//!
//! | topic | subscribed by | carries |
//! |---|---|---|
//! | `P/call/Unary`, `P/call/ServerStream`, `P/call/ClientStream`, `P/call/Bidi` | every server of the service, as one shared subscription `$share/wb-echo/P/call/+`: each message reaches one server | unary requests; `open` frames |
//! | `P/ctl/cancel` | every server (not shared) | a unary call's cancellation |
//! | `R`: the client's reply topic (this client: `P/reply/<client id>`) | the client | unary replies and the server's stream frames, told apart by correlation data |
//! | `S`: a stream's server topic (the `accept` frame's response topic; this server: `P/stream/<server id>/<call id>`) | the server running the call | the client's frames of that stream |
//!
//! Any other last level after `P/call/` is an unknown method, answered with
//! `UNIMPLEMENTED` (12). `R` and `S` are opaque: a client may use any reply topic it subscribes
//! to, one per call or one for all; a server may choose any `S`.
//!
//! ## Unary: request/reply
//!
//! Request: publish the request payload to `P/call/Unary` with **response topic** `R` and
//! **correlation data** `C` (any bytes that identify the call for the client; this client
//! uses the call id as 8 bytes, big-endian). User properties only when needed (a plain call
//! has none): request metadata, `Wb-Timeout` and the directives. Reply: published to `R` with
//! correlation data `C`; the payload is the response payload; user properties only when needed:
//! `Wb-Status` and `Wb-Message` (absent status = `OK`), initial metadata, trailing metadata,
//! `Wb-Recv-Msgs`/`Wb-Recv-Bytes`. A client that gives up on a call (cancelled, deadline passed)
//! publishes an empty message to `P/ctl/cancel` with the call's response topic `R` and
//! correlation data `C`; the server running it stops its handler. MQTT has no "no responders"
//! answer: a call to a service that no server serves waits for its deadline.
//!
//! ## Streams: frames
//!
//! Every stream message carries the user property `Wb-Frame: <kind>`; messages to `R` carry
//! the call's correlation data `C`:
//!
//! | kind | on | direction | properties | payload |
//! |---|---|---|---|---|
//! | `open` | `P/call/<Method>`, response topic `R`, correlation `C` | client → service | `Wb-Window`, metadata*, `Wb-Timeout`? | none |
//! | `accept` | `R` / `C`, response topic `S` | server → client | `Wb-Window` | none |
//! | `headers` | `R` / `C` | server → client | metadata* (initial) | none |
//! | `msg` | `S` / `R` | both | `Wb-Seq`; requests: directives; responses: `Wb-Recv-*` | the message |
//! | `end` | `S` | client → server | `Wb-Seq` = messages sent (half-close) | none |
//! | `status` | `R` / `C` | server → client | `Wb-Status`?, `Wb-Message`?, trailing metadata*, `Wb-Seq` = messages sent | none |
//! | `cancel` | `S` | client → server | — | none |
//! | `credit` | `S` / `R` | both | `Wb-Ack` = messages consumed so far | none |
//!
//! A call: `open`; the server answers `accept` (or a `status` alone when it refuses the call);
//! then the client sends `msg`s and one `end`, the server sends an optional `headers`, `msg`s and
//! exactly one `status`, which ends the call. `cancel` ends it from the client side. `msg`
//! sequence numbers start at 1 in each direction; a gap, or a count in `end`/`status` that
//! differs from what arrived, fails the call with `DATA_LOSS` (15): at QoS 0 a broker may drop
//! messages, and this makes the loss visible instead of silent. A `status` without `Wb-Seq` (a
//! server shutting down) is not counted.
//!
//! **Flow control** per stream, as MQTT has none between two clients: each side announces its
//! receive window in messages (`Wb-Window`, 128 here) and may send message `n` only when
//! `n <= acked + window`, where `acked` is the latest `Wb-Ack` from its peer; receivers send
//! `credit` every half window consumed.
//!
//! ## User properties
//!
//! MQTT 5 brokers forward user properties unchanged and in order, names may repeat.
//!
//! | name | value |
//! |---|---|
//! | a metadata key (`[a-z0-9._-]`, e.g. `x-trace`) | one metadata entry: request metadata on requests and `open`, initial metadata on replies and `headers` |
//! | `Wb-Tr:<key>` | one trailing metadata entry (replies, `status`) |
//! | `Wb-Timeout` | the deadline as a budget in microseconds from arrival (like `grpc-timeout`) |
//! | `Wb-Status` | status code, gRPC numbering 0–16 (absent = 0 `OK`) |
//! | `Wb-Message` | status message, UTF-8, percent-encoded |
//! | `Wb-Size` / `Wb-Count` | directives: size of each response / number of responses |
//! | `Wb-Sizes` | directive: explicit response sizes, comma-separated |
//! | `Wb-Interval` / `Wb-Delay` | directives: pause before each streamed response / before answering, µs |
//! | `Wb-Fail` | directive: `<code> <after> <percent-encoded message>` |
//! | `Wb-Report-Deadline` | directive: `1` = report the budget seen in trailer `x-wb-deadline-budget-us` |
//! | `Wb-Recv-Msgs` / `Wb-Recv-Bytes` | response fields (client stream) |
//! | `Wb-Frame`, `Wb-Seq`, `Wb-Ack`, `Wb-Window` | stream frames (above) |
//!
//! Metadata keys follow gRPC's rules (lower case, so they never collide with the `Wb-` names).
//! **Binary values** (keys ending in `-bin`) are written in standard base64 with padding (read
//! with or without), since property values must be UTF-8; every other value is printable ASCII,
//! written as is. **Percent-encoding** (status messages, the `Wb-Fail` message): every byte
//! outside printable ASCII, and `%`, is written `%XX` (brokers may refuse control characters in
//! strings). A property name that is neither a valid metadata key nor a `Wb-` name fails the
//! call with `INVALID_ARGUMENT`. Examples: `x-trace-bin: AAoL//6A`,
//! `Wb-Tr:x-trailing-n: 3`, `Wb-Fail: 10 2 aborted%20%E2%98%BA`.
//!
//! Semantics of directives and generated payloads: [`Directives`](wirebench_core::message::Directives),
//! [`pattern`](wirebench_core::message::pattern).
//!
//! # Options and limits
//!
//! - `qos=0|1` (client and server options; default 0): the QoS of every message the side
//!   publishes and of its subscriptions (a broker delivers the lower of the two). QoS 1 makes
//!   the broker acknowledge each message; it does not make a call durable.
//! - Every connection sets `TCP_NODELAY` (rumqttc's default is off) and announces a maximum
//!   packet size of 16 MiB, or the client's message limit plus 64 KiB when larger (rumqttc's
//!   default is 10 KiB); the embedded broker accepts 16 MiB packets. A message larger than the
//!   broker's maximum packet size (from its CONNACK) fails its call with `RESOURCE_EXHAUSTED`
//!   without being sent, and the connection stays up; below that, the server's and the client's
//!   configured limits apply as on every transport.
//! - A client that vanishes without cancelling leaves its server-side stream running until its
//!   deadline (the broker tells a server nothing about its callers' liveness).
//! - A connection whose broker goes away fails its calls in flight with `UNAVAILABLE` at once,
//!   reconnects every 100 ms, restores its subscriptions, and serves new calls again.
//! - A server shutting down answers the calls it is running `UNAVAILABLE` (streams: a `status`
//!   without `Wb-Seq`) and disconnects. A **draining** server first unsubscribes from
//!   `$share/wb-echo/P/call/+` and waits for the UNSUBACK — the broker then routes new calls to
//!   the group's other members, or nowhere (they wait for their deadline, as above) — lets the
//!   calls it already received run to their end, and then shuts down so. An embedded broker
//!   the server started stops with it, closing its clients' connections: the server makes
//!   sure the broker has taken every answer, but one the broker has not yet passed on is lost
//!   with it. When every answer matters, drain a server whose broker outlives it (`listen =
//!   mqtt://HOST:PORT...`).

mod client;
pub mod embedded;
mod link;
pub mod mosquitto;
mod pubsub;
mod server;
pub mod wire;

use wirebench_core::transport::NetworkPath;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rumqttc::v5::mqttbytes::QoS;

pub use client::{MqttCancel, MqttConnection, MqttReceiver, MqttSender};
pub use pubsub::{
    MqttBrokerClient, MqttBrokerHandle, MqttConsumer, MqttDelivery, MqttSubscription,
};
pub use server::MqttServer;

use wirebench_core::echo::Echo;
use wirebench_core::message::Method;
use wirebench_core::transport::{
    Capabilities, Capability, ClientConfig, Options, ServerConfig, Transport, TransportError,
};

/// The shared-subscription group every server of a service joins.
pub const SHARE_GROUP: &str = "wb-echo";
/// Options this transport knows.
const KNOWN_OPTIONS: &[&str] = &["qos"];

/// The `mqtt` transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mqtt;

/// A service's address: its broker and its topic prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Broker host (an IP or a name; IPv6 in brackets).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The topic prefix; `None` when serving means "make a fresh one".
    pub prefix: Option<String>,
}

impl Endpoint {
    /// Parses `mqtt://HOST:PORT[/PREFIX]`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let rest = s
            .strip_prefix("mqtt://")
            .ok_or("expected mqtt://HOST:PORT/PREFIX")?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("missing :PORT after mqtt://HOST")?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err("missing or invalid HOST after mqtt://".into());
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a number 0..65535"))?;
        let prefix = if prefix.is_empty() {
            None
        } else {
            wirebench_brokerrpc::check_prefix(
                &wirebench_brokerrpc::Scheme {
                    name: "mqtt",
                    separator: '/',
                    prefix_kind: "topic prefix",
                },
                prefix,
            )
            .map_err(|e| e.to_string())?;
            Some(prefix.to_owned())
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            prefix,
        })
    }

    /// The broker's URL, `mqtt://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}/{p}", self.url()),
            None => f.write_str(&self.url()),
        }
    }
}

/// What `ServerConfig::listen` asks of an `mqtt` server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `mqtt://HOST:PORT[/PREFIX]`: attach to that broker (joining service `PREFIX` when given,
    /// so several servers share its load through the shared subscription).
    Attach(Endpoint),
    /// `IP:PORT`: start an embedded broker there (port 0: any free port), owned by the server.
    Embedded(SocketAddr),
}

impl Target {
    fn parse(listen: &str) -> Result<Target, TransportError> {
        let bad = |reason: String| TransportError::Endpoint {
            endpoint: listen.to_owned(),
            reason,
        };
        if listen.starts_with("mqtt://") {
            return Endpoint::parse(listen).map(Target::Attach).map_err(bad);
        }
        listen.parse().map(Target::Embedded).map_err(|_| {
            bad(
                "expected mqtt://HOST:PORT[/PREFIX] (attach to a broker) or IP:PORT (start an \
                 embedded broker there)"
                    .into(),
            )
        })
    }
}

/// The QoS the options ask for (`qos=0|1`, default 0); unknown options are refused.
pub(crate) fn qos_of(options: &Options) -> Result<QoS, TransportError> {
    options.check_known("mqtt", KNOWN_OPTIONS)?;
    match options.get::<u8>("qos")? {
        None | Some(0) => Ok(QoS::AtMostOnce),
        Some(1) => Ok(QoS::AtLeastOnce),
        Some(n) => Err(TransportError::Config(format!(
            "option qos = {n}: the mqtt transport offers QoS 0 and 1"
        ))),
    }
}

/// A fresh identifier for a client, server or prefix level: 16 hex digits.
pub(crate) fn fresh_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn call_topic(prefix: &str, method: Method) -> String {
    format!("{prefix}/call/{}", method.name())
}

fn cancel_topic(prefix: &str) -> String {
    format!("{prefix}/ctl/cancel")
}

impl Transport for Mqtt {
    type Connection = MqttConnection;
    type Server = MqttServer;
    type Broker = Mqtt;
    type Yardstick = wirebench_core::NoYardstick;

    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn capabilities(&self) -> Capabilities {
        const GAPS: &[(Capability, &str)] = &[
            (
                Capability::ByteStreamWire,
                "the mqtt wire runs client -> broker -> echo server: bytes written to the \
                 endpoint are parsed by the broker, and our server only ever sees whole MQTT \
                 messages, so fragmentation and garbage would test the broker, not this \
                 transport",
            ),
            (
                Capability::Tls,
                "TLS on the mqtt path is the broker's own listener (mqtts); wirebench configures \
                 TLS only on its point-to-point transports (tcp, grpc, quic), and the embedded \
                 broker is built without its tls feature",
            ),
            (
                Capability::MutualTls,
                "mutual TLS on the mqtt path is the broker's own listener (mqtts with client \
                 certificates); wirebench configures TLS only on its point-to-point transports \
                 (tcp, grpc, quic)",
            ),
            (
                Capability::MaxConcurrentStreams,
                "MQTT has no per-connection stream limit: calls are messages on topics, bounded \
                 by the broker's receive maximum (in-flight QoS 1 publishes), not by streams",
            ),
            (
                Capability::BrokerDurable,
                "the embedded broker (rmqtt) keeps sessions and their queued QoS 1 messages in \
                 memory only (its persistence is a separate storage plugin, not built here), so \
                 a broker restart loses acknowledged messages; and MQTT offers no way to ask an \
                 external broker how many messages it stores",
            ),
            (
                Capability::BrokerDedup,
                "MQTT has no publish deduplication by message id: a QoS 1 publish repeated by a \
                 client is a new message (QoS 2 deduplicates only a retransmitted packet id \
                 within one session)",
            ),
            (
                Capability::Datagrams,
                "mqtt runs over TCP to the broker: loss applies to datagrams, and TCP retransmits below us",
            ),
        ];
        Capabilities::all_except(GAPS)
    }

    async fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> Result<MqttServer, TransportError> {
        let qos = qos_of(&config.options)?;
        MqttServer::start(Target::parse(&config.listen)?, qos, echo).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<MqttConnection, TransportError> {
        let qos = qos_of(&config.options)?;
        let e = parse_endpoint(endpoint)?;
        MqttConnection::connect(config, e, qos).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        // The client's hop is to the broker; the echo server keeps its own direct link.
        let e = parse_endpoint(endpoint)?;
        NetworkPath::tcp(&format!("{}:{}", e.host, e.port))
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        let mut e = parse_endpoint(endpoint)?;
        e.host = match via {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        e.port = via.port();
        Ok(e.to_string())
    }

    fn broker(&self) -> Option<Mqtt> {
        Some(*self)
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
        let e = Endpoint::parse("mqtt://127.0.0.1:1883/wb/echo/X-1_a").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 1883));
        assert_eq!(e.prefix.as_deref(), Some("wb/echo/X-1_a"));
        assert_eq!(e.to_string(), "mqtt://127.0.0.1:1883/wb/echo/X-1_a");
        assert_eq!(e.url(), "mqtt://127.0.0.1:1883");
        assert_eq!(Endpoint::parse("mqtt://h:1").unwrap().prefix, None);
        assert_eq!(Endpoint::parse("mqtt://[::1]:1").unwrap().host, "[::1]");
        for bad in [
            "127.0.0.1:1883/x",
            "mqtt://:1/x",
            "mqtt://h/x",
            "mqtt://h:99999/x",
            "mqtt://h:1/a//b",
            "mqtt://h:1/a/+",
            "mqtt://h:1/a/#",
            "mqtt://h:1/$SYS",
            "mqtt://h:1/a b",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_strings_choose_the_broker() {
        assert_eq!(
            Target::parse("127.0.0.1:0").unwrap(),
            Target::Embedded("127.0.0.1:0".parse().unwrap())
        );
        assert!(matches!(
            Target::parse("mqtt://127.0.0.1:1883").unwrap(),
            Target::Attach(Endpoint { prefix: None, .. })
        ));
        assert!(Target::parse("localhost").is_err());
    }

    #[test]
    fn qos_option_is_checked() {
        let mut o = Options::new();
        assert_eq!(qos_of(&o).unwrap(), QoS::AtMostOnce);
        o.set("qos", "1");
        assert_eq!(qos_of(&o).unwrap(), QoS::AtLeastOnce);
        o.set("qos", "2");
        assert!(qos_of(&o).unwrap_err().to_string().contains("QoS 0 and 1"));
        o.set("qos", "x");
        assert!(qos_of(&o).is_err());
        let mut typo = Options::new();
        typo.set("qso", "1");
        assert!(
            qos_of(&typo)
                .unwrap_err()
                .to_string()
                .contains("unknown option")
        );
    }
}
