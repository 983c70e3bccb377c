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
//! ## The protocol
//!
//! Unary request/reply, stream frames, flow control, sequence numbers, the `Wb-*` headers and
//! their encodings are the broker protocol's, the same on every broker: see
//! [`wirebench_brokerrpc`]. What MQTT adds:
//!
//! - **Addresses.** A request or `open` carries the **response topic** `R` and **correlation
//!   data** `C` (any bytes that identify the call for the client; this client uses the call
//!   id as 8 bytes, big-endian); every message to `R` carries `C`. `S` is the `accept` frame's
//!   response topic; the client's frames go to `S` without correlation data.
//! - **Headers are MQTT 5 user properties**, which brokers forward unchanged and in order.
//!   Each metadata entry is a property of its own: named by its key (request and initial
//!   metadata; keys are lower case, so they never collide with the `Wb-` names) or `Wb-Tr:<key>`
//!   (trailing). ASCII values are written as is; binary (`-bin`) values in base64. A property
//!   name that is neither a valid metadata key nor a `Wb-` name fails the call with
//!   `INVALID_ARGUMENT`. Examples: `x-trace-bin: AAoL//6A`, `Wb-Tr:x-trailing-n: 3`.
//! - **Cancelling a unary call**: an empty message to `P/ctl/cancel` with the call's response
//!   topic `R` and correlation data `C`.
//! - **Nobody serving**: MQTT has no "no responders" answer; such a call waits for its
//!   deadline.
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
pub mod link;
pub mod mosquitto;
mod pubsub;
mod server;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use rumqttc::v5::mqttbytes::QoS;
use wirebench_brokerrpc::{Scheme, gaps};
use wirebench_core::transport::NetworkPath;

pub use client::{MqttConnection, MqttLink};
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

/// How MQTT spells service addresses: `mqtt://HOST:PORT/P`, `P` levels joined by `/`.
pub const SCHEME: Scheme = Scheme {
    name: "mqtt",
    separator: '/',
    prefix_kind: "topic prefix",
};

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
            (Capability::ByteStreamWire, gaps::BYTE_STREAM_WIRE),
            (
                Capability::Tls,
                "TLS on the mqtt path is the broker's own listener (mqtts); wirebench configures \
                 TLS only on its point-to-point transports (tcp, grpc, quic), and the embedded \
                 broker is built without its tls feature",
            ),
            (Capability::MutualTls, gaps::MUTUAL_TLS),
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
            (Capability::Datagrams, gaps::DATAGRAMS),
            (
                Capability::WireBytes,
                "rumqttc owns its socket and exposes no byte counters; and a call crosses two \
                 hops (client to broker to server), so a count at the client would be half the \
                 story",
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
        let target = SCHEME.target(&config.listen)?;
        MqttServer::start(target, qos, echo).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<MqttConnection, TransportError> {
        let qos = qos_of(&config.options)?;
        client::connect(config, SCHEME.endpoint(endpoint)?, qos).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        SCHEME.network_path(endpoint)
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        SCHEME.endpoint_via(endpoint, via)
    }

    fn broker(&self) -> Option<Mqtt> {
        Some(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
