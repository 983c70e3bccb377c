//! `quic`: the `Echo` service over QUIC (quinn 0.11) — one bidirectional stream per call,
//! carrying the frames of the [`tcp`](crate::tcp) transport, encoded and decoded by the same
//! sans-IO codec ([`tcp::codec`](wirebench_wire::codec)).
//!
//! # Wire (version 1)
//!
//! **Connection.** QUIC version 1 (RFC 9000) with TLS 1.3, ALPN `wirebench-quic/1`. The
//! client opens bidirectional streams only; the server opens none.
//!
//! **Call = stream.** Each call is one client-initiated bidirectional stream. On it, both
//! directions carry frames exactly as documented for `tcp` (12-byte prefix, rkyv header,
//! payload), with these differences:
//!
//! - no connection preface: the first byte of a stream is the first byte of a frame;
//! - the prefix's `stream_id` must be non-zero and is otherwise ignored (senders write 1): the
//!   QUIC stream is the call;
//! - client → server: OPEN first, then MESSAGEs; the client half-closes with the stream's FIN
//!   (a MESSAGE with `END_STREAM` or a HALF_CLOSE frame means the same and is followed by FIN);
//! - server → client: optional HEADERS, RESPONSEs, exactly one STATUS, then FIN;
//! - GOAWAY is not used (see connection close below); a CANCEL frame is accepted from a client
//!   and means the same as a stream reset.
//!
//! A unary call is one stream carrying OPEN + MESSAGE(`END_STREAM`) + FIN, answered by
//! \[HEADERS\] RESPONSE STATUS FIN (or STATUS FIN alone on error). A MESSAGE payload over the
//! receiver's maximum message size fails the call with `RESOURCE_EXHAUSTED`; its bytes are
//! skipped, the stream and the connection stay usable.
//!
//! **Error codes** (QUIC application error codes):
//!
//! | code | on | sent by | meaning | the other side reports |
//! |---|---|---|---|---|
//! | `0x0` NO_ERROR | STOP_SENDING | either | data no longer needed (quinn sends it when a stream is dropped unread) | before STATUS: the call was cancelled |
//! | `0x1` CANCELLED | RESET_STREAM + STOP_SENDING | client | the client cancelled the call (or its deadline passed) | server: handler observes the cancel |
//! | `0x2` PROTOCOL_ERROR | RESET_STREAM + STOP_SENDING | either | the stream carried bytes that are not valid frames for it | `INTERNAL` for that call only |
//! | `0x0` NO_ERROR | CONNECTION_CLOSE | client | the client closed the connection | server: every open call cancelled |
//! | `0x10` SHUTDOWN | CONNECTION_CLOSE | server | the server is shutting down (at once, or at the end of a drain) | client: open calls fail `UNAVAILABLE` |
//! | `0x11` DRAINING | RESET_STREAM + STOP_SENDING | server | the server is draining: it refuses a call opened on its connection after the drain began | client: that call fails `UNAVAILABLE` (dial again) |
//!
//! Any other loss of the connection (idle timeout, a TLS failure, a transport error) fails the
//! open calls with `UNAVAILABLE`; a stream reset by the server with any other code fails that
//! call with `UNAVAILABLE`. A server treats every RESET_STREAM or STOP_SENDING that arrives
//! before it sent STATUS as the client cancelling the call.
//!
//! **Drain.** A draining server refuses new connections (CONNECTION_REFUSED), grants no more
//! streams on the connections it has (MAX_STREAMS stays where it is) and refuses, with
//! `0x11` DRAINING, any stream the client opens with the credit it still holds. The calls
//! already open run to their end; once every answer has been acknowledged (or the server's
//! grace ran out, cancelling the calls left) it closes each connection with `0x10` SHUTDOWN.
//!
//! **Deadlines** travel in OPEN (`timeout_us`, from arrival), as on `tcp`; the client also
//! enforces them and cancels (code `0x1`) on expiry.
//!
//! **TLS.** QUIC has no plaintext mode. With TLS settings the server presents its
//! certificate and (mutual TLS) requires a client certificate from the configured CA; the
//! client's identity (subject CN, else first DNS name) reaches the handler. Without TLS
//! settings the server generates a throwaway self-signed certificate and its endpoint carries
//! the certificate's SHA-256: `127.0.0.1:PORT#cert-sha256=<64 hex digits>`; a client without
//! TLS settings accepts exactly that certificate (and still verifies the handshake signature).
//!
//! **0-RTT.** With `zero_rtt = true` on both sides, a client reconnecting to a server it has
//! a session ticket from sends unary calls marked `replay_safe` as 0-RTT early data, before
//! the handshake completes; every other call waits for the handshake. Streaming calls never
//! use 0-RTT. If the server rejects the early data, the call is sent again after the
//! handshake (the server never processed it).
//!
//! # Options (knobs)
//!
//! Both sides accept the same keys; each applies where it says:
//!
//! | key | side | meaning |
//! |---|---|---|
//! | `congestion` | both | `cubic` (default), `newreno`, or `bbr` — quinn's BBR is **experimental**: label any figure measured with it so |
//! | `stream_window` | both | receive window per stream, bytes (quinn default 1.25 MB) |
//! | `connection_window` | both | receive window of the connection, bytes |
//! | `send_window` | both | bytes sent but not yet acknowledged, across the connection |
//! | `max_concurrent_streams` | server | concurrent calls per connection (quinn default 100); clients queue beyond it |
//! | `zero_rtt` | both | `true`: accept (server) / send (client) 0-RTT early data for replay-safe unary calls |
//!
//! The maximum message size is the transport-neutral `ClientConfig::max_message_size` /
//! `EchoConfig::max_message_size`.

pub mod baseline;
mod client;
mod server;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

pub use client::{QuicCancel, QuicConnection, QuicSender};
pub use server::QuicServer;

use wirebench_core::echo::Echo;
use wirebench_core::transport::{
    Capabilities, Capability, ClientConfig, NetworkPath, Options, ServerConfig, Transport,
    TransportError,
};
use wirebench_core::{NoBroker, YardstickConfig};
use wirebench_tls::sha256_from_hex;

/// The ALPN protocol of the `quic` transport.
pub const ALPN: &[u8] = b"wirebench-quic/1";

/// QUIC application error codes of the `quic` transport (see the module docs).
pub mod codes {
    /// Nothing wrong: data no longer needed, or a connection closed by its client.
    pub const NO_ERROR: u32 = 0x0;
    /// The client cancelled the call.
    pub const CANCELLED: u32 = 0x1;
    /// The stream carried bytes that are not valid frames.
    pub const PROTOCOL_ERROR: u32 = 0x2;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 0x10;
    /// The server is draining: it refuses a call opened after the drain began.
    pub const DRAINING: u32 = 0x11;
}

/// Marks the certificate pin in an endpoint.
const PIN_MARK: &str = "#cert-sha256=";
/// Messages buffered per call and direction.
const STREAM_BUFFER: usize = 64;

/// Every option key, on both sides.
const OPTION_KEYS: &[&str] = &[
    "congestion",
    "stream_window",
    "connection_window",
    "send_window",
    "max_concurrent_streams",
    "zero_rtt",
];

/// The congestion controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (quinn's default).
    #[default]
    Cubic,
    /// NewReno.
    NewReno,
    /// BBR — experimental in quinn.
    Bbr,
}

impl Congestion {
    /// The name for reports; BBR says it is experimental.
    pub fn label(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
            Congestion::Bbr => "bbr (experimental)",
        }
    }
}

/// Parsed knobs.
#[derive(Clone, Copy, Debug, Default)]
struct QuicOptions {
    congestion: Congestion,
    stream_window: Option<u32>,
    connection_window: Option<u64>,
    send_window: Option<u64>,
    max_concurrent_streams: Option<u32>,
    zero_rtt: bool,
}

/// QUIC variable-length integers stop at 2^62 - 1.
const MAX_VARINT: u64 = (1 << 62) - 1;

impl QuicOptions {
    fn parse(options: &Options) -> Result<QuicOptions, TransportError> {
        options.check_known("quic", OPTION_KEYS)?;
        let congestion = match options.raw("congestion") {
            None | Some("cubic") => Congestion::Cubic,
            Some("newreno") => Congestion::NewReno,
            Some("bbr") => Congestion::Bbr,
            Some(other) => {
                return Err(TransportError::Config(format!(
                    "option congestion = {other:?}: expected cubic, newreno or bbr"
                )));
            }
        };
        let positive = |key: &str, v: Option<u64>| -> Result<Option<u64>, TransportError> {
            match v {
                Some(0) => Err(TransportError::Config(format!(
                    "option {key} = 0: must be at least 1"
                ))),
                Some(n) if n > MAX_VARINT => Err(TransportError::Config(format!(
                    "option {key} = {n}: larger than QUIC allows ({MAX_VARINT})"
                ))),
                v => Ok(v),
            }
        };
        let stream_window = positive(
            "stream_window",
            options.get::<u32>("stream_window")?.map(u64::from),
        )?;
        Ok(QuicOptions {
            congestion,
            stream_window: stream_window.map(|w| w as u32),
            connection_window: positive("connection_window", options.get("connection_window")?)?,
            send_window: positive("send_window", options.get("send_window")?)?,
            max_concurrent_streams: positive(
                "max_concurrent_streams",
                options.get::<u32>("max_concurrent_streams")?.map(u64::from),
            )?
            .map(|n| n as u32),
            zero_rtt: options.get::<bool>("zero_rtt")?.unwrap_or(false),
        })
    }

    /// quinn's transport settings for one side.
    fn transport_config(&self, server: bool) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        match self.congestion {
            Congestion::Cubic => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
            }
            Congestion::NewReno => t.congestion_controller_factory(Arc::new(
                quinn::congestion::NewRenoConfig::default(),
            )),
            Congestion::Bbr => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
            }
        };
        if let Some(w) = self.stream_window {
            t.stream_receive_window(quinn::VarInt::from_u32(w));
        }
        if let Some(w) = self.connection_window
            && let Ok(v) = quinn::VarInt::from_u64(w)
        {
            t.receive_window(v);
        }
        if let Some(w) = self.send_window {
            t.send_window(w);
        }
        if server {
            if let Some(n) = self.max_concurrent_streams {
                t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(n));
            }
        } else {
            // The server never opens streams towards the client.
            t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
        }
        t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
        t
    }
}

/// The congestion controller the options select (for reports: BBR is labelled experimental).
pub fn congestion(options: &Options) -> Result<Congestion, TransportError> {
    QuicOptions::parse(options).map(|o| o.congestion)
}

/// Splits an endpoint into its address and its certificate pin.
fn parse_endpoint(endpoint: &str) -> Result<(&str, Option<[u8; 32]>), TransportError> {
    match endpoint.split_once(PIN_MARK) {
        None => Ok((endpoint, None)),
        Some((addr, hex)) => sha256_from_hex(hex)
            .map(|h| (addr, Some(h)))
            .ok_or_else(|| TransportError::Endpoint {
                endpoint: endpoint.to_owned(),
                reason: format!("{PIN_MARK} must be followed by 64 hex digits"),
            }),
    }
}

/// The `quic` transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quic;

impl Transport for Quic {
    type Connection = QuicConnection;
    type Server = QuicServer;
    type Broker = NoBroker;
    type Yardstick = baseline::QuinnYardstick;

    fn name(&self) -> &'static str {
        "quic"
    }

    fn capabilities(&self) -> Capabilities {
        const GAPS: &[(Capability, &str)] = &[
            (
                Capability::ByteStreamWire,
                "quic runs over UDP datagrams, encrypted and authenticated: there is no byte \
                 stream a raw socket could fragment or corrupt",
            ),
            (
                Capability::Plaintext,
                "QUIC has no plaintext mode: without TLS settings it still encrypts, \
                 authenticating the server by the certificate hash in its endpoint",
            ),
            (
                Capability::Broker,
                "quic is point-to-point RPC, not a message broker",
            ),
            (
                Capability::Reconnect,
                "a QUIC connection is one handshake's state: once the server goes (or closes \
                 it), it is over, its calls fail with UNAVAILABLE and the caller connects again",
            ),
            (
                Capability::StreamHop,
                "quic's hop is UDP datagrams, each authenticated: a proxy cannot cut a frame \
                 short or reset the connection, only drop, delay or corrupt packets (which QUIC \
                 detects and retransmits)",
            ),
        ];
        Capabilities::all_except(GAPS)
    }

    async fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> Result<QuicServer, TransportError> {
        let options = QuicOptions::parse(&config.options)?;
        QuicServer::bind(config, echo, options).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<QuicConnection, TransportError> {
        let options = QuicOptions::parse(&config.options)?;
        QuicConnection::connect(config, endpoint, options).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        NetworkPath::udp(parse_endpoint(endpoint)?.0)
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        // The certificate pin travels on: the proxy forwards datagrams, the handshake is
        // still with the server.
        let (addr, _) = parse_endpoint(endpoint)?;
        NetworkPath::udp(addr)?;
        Ok(format!("{via}{}", &endpoint[addr.len()..]))
    }

    /// Stock quinn, one stream per call carrying the raw payload.
    fn yardstick(&self, _config: &YardstickConfig) -> Option<baseline::QuinnYardstick> {
        Some(baseline::QuinnYardstick::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let mut o = Options::new();
        o.set("congestion", "bbr").set("zero_rtt", "true");
        let p = QuicOptions::parse(&o).unwrap();
        assert_eq!(p.congestion.label(), "bbr (experimental)");
        assert!(p.zero_rtt);
        for (k, v) in [
            ("congestion", "vegas"),
            ("stream_window", "0"),
            ("max_concurrent_streams", "-1"),
            ("zero_rtt", "yes"),
            ("window", "1"),
        ] {
            let mut o = Options::new();
            o.set(k, v);
            assert!(QuicOptions::parse(&o).is_err(), "{k} = {v}");
        }
    }

    #[test]
    fn endpoints_carry_pins() {
        let hex = "ab".repeat(32);
        let endpoint = format!("127.0.0.1:9{PIN_MARK}{hex}");
        let (addr, pin) = parse_endpoint(&endpoint).unwrap();
        assert_eq!(addr, "127.0.0.1:9");
        assert_eq!(pin, Some([0xab; 32]));
        assert_eq!(
            parse_endpoint("127.0.0.1:9").unwrap(),
            ("127.0.0.1:9", None)
        );
        assert!(parse_endpoint(&format!("127.0.0.1:9{PIN_MARK}zz")).is_err());
    }
}
