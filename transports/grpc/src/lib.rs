//! `grpc`: the `Echo` service as plain gRPC over HTTP/2 — tonic's codec and status handling
//! on HTTP/2 connections the transport drives itself: hyper's server, an h2 client (no tower
//! buffer, no tonic channel).
//!
//! # Wire
//!
//! Standard gRPC over HTTP/2 ([PROTOCOL-HTTP2]), service `wirebench.echo.v1.Echo` of
//! `transports/proto/echo.proto`: any stock gRPC client can call the server with that file
//! alone, and the client works against any server implementing it. Nothing is tonic-specific:
//!
//! - paths `/wirebench.echo.v1.Echo/{Unary,ServerStream,ClientStream,Bidi}`; any other path
//!   (the model's [`Method::Unimplemented`] is `/wirebench.echo.v1.Echo/Unimplemented`) is
//!   answered with status 12 `UNIMPLEMENTED`;
//! - messages are protobuf behind gRPC's 5-byte prefix (compression flag 0, u32 big-endian
//!   length); no compression is offered or accepted;
//! - request metadata are HTTP/2 headers, response initial metadata the response headers and
//!   trailing metadata the trailers beside `grpc-status` / `grpc-message` (percent-encoded
//!   UTF-8). `-bin` keys carry base64 values. A response that fails before any header or
//!   message is a trailers-only response. Duplicate keys keep their order; the relative order
//!   of different keys is not kept (HTTP/2 header semantics);
//! - the deadline travels as `grpc-timeout` (at most 8 digits and a unit `HMSmun`); the server
//!   turns it into the call's deadline on arrival and ends the call with
//!   `DEADLINE_EXCEEDED` when it passes;
//! - a client cancels with `RST_STREAM(CANCEL)`; the server's handler observes it;
//! - with TLS: TLS 1.3, ALPN `h2`.
//!
//! Headers the transport itself owns are not model metadata and are dropped on receipt:
//! `grpc-*`, `content-type`, `te`, `user-agent`.
//!
//! # Status mapping
//!
//! Statuses are gRPC's own. Connection failures surface as `UNAVAILABLE`; HTTP/2 stream
//! resets follow gRPC's table (`CANCEL` → `CANCELLED`, `REFUSED_STREAM` → `UNAVAILABLE`,
//! `ENHANCE_YOUR_CALM` → `RESOURCE_EXHAUSTED`, protocol errors → `INTERNAL`). A message larger
//! than the receiver's limit fails that call with `RESOURCE_EXHAUSTED`; the connection stays
//! usable.
//!
//! # Options (knobs)
//!
//! Both sides accept the same keys (so one map can configure a suite); each applies where it
//! says:
//!
//! | key | side | meaning |
//! |---|---|---|
//! | `connections` | client | HTTP/2 connections per [`GrpcConnection`], calls spread round-robin (default 1, at most 64) |
//! | `stream_window` | both | initial HTTP/2 stream flow-control window, bytes (SETTINGS_INITIAL_WINDOW_SIZE) |
//! | `connection_window` | both | initial HTTP/2 connection flow-control window, bytes |
//! | `adaptive_window` | server | `true`: size windows from measured bandwidth-delay (overrides the two above) |
//! | `max_concurrent_streams` | server | SETTINGS_MAX_CONCURRENT_STREAMS; clients queue calls beyond it |
//!
//! Unset keys keep hyper's defaults (the client's windows: 2 MiB per stream, 5 MiB per
//! connection; the server's stream window: 1 MiB), except the server's connection window:
//! 16 MiB, because h2 drops a whole connection with `GOAWAY(ENHANCE_YOUR_CALM)` when the
//! small DATA frames it holds unread cost more than half that window (a gRPC message under
//! ~250 bytes is one such frame): 1 MiB let a 2 ms stall of a streaming handler end every call
//! on its connection. The client sets the same budget (8 MiB) on its side. The maximum message size is the transport-neutral
//! `ClientConfig::max_message_size` / `EchoConfig::max_message_size`.
//!
//! [PROTOCOL-HTTP2]: https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md

pub mod baseline;
mod client;
mod server;

use std::net::SocketAddr;
use wirebench_core::transport::NetworkPath;

use std::sync::Arc;
use std::time::Duration;

pub use client::{GrpcCancel, GrpcConnection, GrpcSender};
pub use server::GrpcServer;

use wirebench_core::echo::Echo;
use wirebench_core::message::{Directives, EchoRequest, EchoResponse, FailWith, Method};
use wirebench_core::metadata::{Metadata, MetadataError, is_binary_key};
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{
    Capabilities, Capability, ClientConfig, Options, ServerConfig, Transport, TransportError,
};

/// Code generated from `proto/echo.proto`: the messages and a tonic client.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("wirebench.echo.v1");
}

/// The service's full name.
pub const SERVICE: &str = "wirebench.echo.v1.Echo";

/// The HTTP/2 path of a method (`/wirebench.echo.v1.Echo/Unary`, ...).
pub fn method_path(method: Method) -> &'static str {
    match method {
        Method::Unary => "/wirebench.echo.v1.Echo/Unary",
        Method::ServerStream => "/wirebench.echo.v1.Echo/ServerStream",
        Method::ClientStream => "/wirebench.echo.v1.Echo/ClientStream",
        Method::Bidi => "/wirebench.echo.v1.Echo/Bidi",
        Method::Unimplemented => "/wirebench.echo.v1.Echo/Unimplemented",
    }
}

/// The ALPN protocol of gRPC over TLS.
const ALPN: &[u8] = b"h2";
/// Messages buffered per call and direction.
const STREAM_BUFFER: usize = 64;
/// Room for the protobuf fields around a payload (directives, counters): the HTTP/2 layer's
/// limit is the payload limit plus this, and the payload itself is checked exactly.
const FRAMING_SLACK: usize = 64 * 1024;

/// Every option key, on both sides.
const OPTION_KEYS: &[&str] = &[
    "connections",
    "stream_window",
    "connection_window",
    "adaptive_window",
    "max_concurrent_streams",
];

/// The `grpc` transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Grpc;

/// Parsed knobs.
#[derive(Clone, Copy, Debug, Default)]
struct GrpcOptions {
    connections: Option<usize>,
    stream_window: Option<u32>,
    connection_window: Option<u32>,
    adaptive_window: bool,
    max_concurrent_streams: Option<u32>,
}

/// HTTP/2 windows are at most 2^31 - 1 bytes.
const MAX_WINDOW: u32 = (1 << 31) - 1;

impl GrpcOptions {
    fn parse(options: &Options) -> Result<GrpcOptions, TransportError> {
        options.check_known("grpc", OPTION_KEYS)?;
        let window = |key: &str| -> Result<Option<u32>, TransportError> {
            match options.get::<u32>(key)? {
                Some(w) if !(65_535..=MAX_WINDOW).contains(&w) => Err(TransportError::Config(
                    format!("option {key} = {w}: an HTTP/2 window is 65535..={MAX_WINDOW} bytes"),
                )),
                w => Ok(w),
            }
        };
        let connections = match options.get::<usize>("connections")? {
            Some(n) if !(1..=64).contains(&n) => {
                return Err(TransportError::Config(format!(
                    "option connections = {n}: must be 1..=64"
                )));
            }
            n => n,
        };
        let max_concurrent_streams = match options.get::<u32>("max_concurrent_streams")? {
            Some(0) => {
                return Err(TransportError::Config(
                    "option max_concurrent_streams = 0 would refuse every call: use 1 or more"
                        .into(),
                ));
            }
            n => n,
        };
        Ok(GrpcOptions {
            connections,
            stream_window: window("stream_window")?,
            connection_window: window("connection_window")?,
            adaptive_window: options.get::<bool>("adaptive_window")?.unwrap_or(false),
            max_concurrent_streams,
        })
    }
}

impl Transport for Grpc {
    type Connection = GrpcConnection;
    type Server = GrpcServer;
    type Broker = wirebench_core::NoBroker;
    type Yardstick = baseline::TonicYardstick;

    fn name(&self) -> &'static str {
        "grpc"
    }

    fn capabilities(&self) -> Capabilities {
        const GAPS: &[(Capability, &str)] = &[
            (
                Capability::Broker,
                "grpc is point-to-point RPC, not a message broker",
            ),
            (
                Capability::Datagrams,
                "grpc runs over TCP: loss applies to datagrams, and TCP retransmits below us",
            ),
            (
                Capability::Reconnect,
                "the grpc client holds its HTTP/2 connections itself (an h2 handshake, not a \
                 reconnecting tonic Channel): once the server goes, calls fail with UNAVAILABLE \
                 and the caller connects again",
            ),
        ];
        Capabilities::all_except(GAPS)
    }

    async fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> Result<GrpcServer, TransportError> {
        let options = GrpcOptions::parse(&config.options)?;
        GrpcServer::bind(config, echo, options).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<GrpcConnection, TransportError> {
        let options = GrpcOptions::parse(&config.options)?;
        GrpcConnection::connect(config, endpoint, options).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        NetworkPath::tcp(endpoint)
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        self.network_path(endpoint)?;
        Ok(via.to_string())
    }

    /// tonic's stock generated server and `Channel` client on a one-method `.proto`.
    fn yardstick(
        &self,
        _config: &wirebench_core::YardstickConfig,
    ) -> Option<baseline::TonicYardstick> {
        Some(baseline::TonicYardstick)
    }
}

// ---- conversions between the model and the protobuf messages ----

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl From<&Directives> for proto::Directives {
    fn from(d: &Directives) -> proto::Directives {
        proto::Directives {
            response_size: d.response_size,
            response_count: d.response_count,
            response_sizes: d.response_sizes.clone(),
            response_interval_us: micros(d.response_interval),
            delay_us: micros(d.delay),
            fail: d.fail.as_ref().map(|f| proto::FailWith {
                code: f.code.as_u32(),
                message: f.message.clone(),
                after: f.after,
            }),
            report_deadline: d.report_deadline,
        }
    }
}

impl From<proto::Directives> for Directives {
    fn from(d: proto::Directives) -> Directives {
        Directives {
            response_size: d.response_size,
            response_count: d.response_count,
            response_sizes: d.response_sizes,
            response_interval: Duration::from_micros(d.response_interval_us),
            delay: Duration::from_micros(d.delay_us),
            // Code 0 (OK) cannot be a failure: like the tcp wire, it means "do not fail".
            fail: d.fail.filter(|f| f.code != 0).map(|f| FailWith {
                code: Code::from_u32(f.code),
                message: f.message,
                after: f.after,
            }),
            report_deadline: d.report_deadline,
        }
    }
}

impl From<EchoRequest> for proto::EchoRequest {
    fn from(r: EchoRequest) -> proto::EchoRequest {
        proto::EchoRequest {
            directives: (!r.directives.is_plain()).then(|| (&r.directives).into()),
            payload: r.payload,
        }
    }
}

impl From<proto::EchoRequest> for EchoRequest {
    fn from(r: proto::EchoRequest) -> EchoRequest {
        EchoRequest {
            payload: r.payload,
            directives: r.directives.map(Directives::from).unwrap_or_default(),
        }
    }
}

impl From<EchoResponse> for proto::EchoResponse {
    fn from(r: EchoResponse) -> proto::EchoResponse {
        proto::EchoResponse {
            payload: r.payload,
            received_messages: r.received_messages,
            received_bytes: r.received_bytes,
        }
    }
}

impl From<proto::EchoResponse> for EchoResponse {
    fn from(r: proto::EchoResponse) -> EchoResponse {
        EchoResponse {
            payload: r.payload,
            received_messages: r.received_messages,
            received_bytes: r.received_bytes,
        }
    }
}

// ---- metadata and status ----

/// Headers owned by HTTP/2 and gRPC themselves, never model metadata.
fn is_transport_header(key: &str) -> bool {
    key.starts_with("grpc-") || matches!(key, "content-type" | "te" | "user-agent")
}

/// Model metadata as tonic metadata (keys and values the model accepted are valid headers).
fn to_tonic_metadata(md: &Metadata) -> Result<tonic::metadata::MetadataMap, Status> {
    use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
    let mut map = MetadataMap::with_capacity(md.len());
    let bad =
        |key: &str| Status::invalid_argument(format!("metadata key {key:?} is not a valid header"));
    for e in md {
        let key = e.key();
        if is_binary_key(key) {
            let k = MetadataKey::from_bytes(key.as_bytes()).map_err(|_| bad(key))?;
            map.append_bin(k, MetadataValue::from_bytes(e.value().as_bytes()));
        } else {
            let k = MetadataKey::from_bytes(key.as_bytes()).map_err(|_| bad(key))?;
            let v = std::str::from_utf8(e.value().as_bytes())
                .ok()
                .and_then(|s| MetadataValue::try_from(s).ok())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "metadata value of {key:?} is not a header value"
                    ))
                })?;
            map.append(k, v);
        }
    }
    Ok(map)
}

/// Model metadata from received headers or trailers, without the transport's own headers.
fn from_header_map(headers: &http::HeaderMap) -> Result<Metadata, MetadataError> {
    let mut md = Metadata::new();
    for (name, value) in headers {
        let key = name.as_str();
        if is_transport_header(key) {
            continue;
        }
        if is_binary_key(key) {
            let bytes = decode_base64(value.as_bytes())
                .ok_or_else(|| MetadataError::InvalidAsciiValue(key.to_owned()))?;
            md.append_binary(key, bytes)?;
        } else {
            md.append_raw(key, value.as_bytes())?;
        }
    }
    Ok(md)
}

fn from_tonic_metadata(md: &tonic::metadata::MetadataMap) -> Result<Metadata, MetadataError> {
    from_header_map(md.as_ref())
}

/// Decodes base64 with or without padding, as gRPC requires of `-bin` values.
fn decode_base64(v: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(v).ok()
}

/// A model status as a tonic status (its metadata becomes trailers).
fn to_tonic_status(s: &Status) -> tonic::Status {
    let md = to_tonic_metadata(s.metadata()).unwrap_or_default();
    tonic::Status::with_metadata(tonic::Code::from(s.code().as_u32() as i32), s.message(), md)
}

/// A tonic status as a model status, keeping its metadata (trailers) but not the transport's
/// headers.
fn from_tonic_status(s: &tonic::Status) -> Status {
    let status = Status::new(Code::from_u32(s.code() as u32), s.message());
    match from_tonic_metadata(s.metadata()) {
        Ok(md) => status.with_metadata(md),
        Err(e) => Status::internal(format!(
            "peer sent invalid trailing metadata with status {}: {e}",
            status
        )),
    }
}

/// True when a tonic status came from the HTTP/2 connection or stream (a reset, a closed
/// connection) rather than from the peer's gRPC layer.
fn is_transport_error(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>().is_some() || e.downcast_ref::<h2::Error>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (`H`ours, `M`inutes,
/// `S`econds, `m`illis, `u` micros, `n`anos).
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            parse_grpc_timeout(b"99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"10x",
            b"-1S",
            b"1.5S",
            b"10",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn options_are_validated() {
        let mut o = Options::new();
        o.set("max_concurrent_streams", "1").set("connections", "2");
        let p = GrpcOptions::parse(&o).unwrap();
        assert_eq!(
            (p.max_concurrent_streams, p.connections),
            (Some(1), Some(2))
        );
        for (k, v) in [
            ("stream_window", "10"),
            ("connections", "0"),
            ("max_concurrent_streams", "0"),
            ("adaptive_window", "maybe"),
            ("windows", "1"),
        ] {
            let mut o = Options::new();
            o.set(k, v);
            assert!(GrpcOptions::parse(&o).is_err(), "{k} = {v}");
        }
    }

    #[test]
    fn failure_code_zero_is_no_failure() {
        let d = Directives::from(proto::Directives {
            fail: Some(proto::FailWith {
                code: 0,
                message: "x".into(),
                after: 0,
            }),
            ..Default::default()
        });
        assert!(d.fail.is_none());
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            use tonic::metadata::MetadataValue;
            // tonic encodes without padding; gRPC peers may pad: accept both.
            let v = MetadataValue::from_bytes(&bytes);
            let encoded = v.as_encoded_bytes().to_vec();
            prop_assert_eq!(decode_base64(&encoded), Some(bytes.clone()));
            let mut padded = encoded.clone();
            while padded.len() % 4 != 0 {
                padded.push(b'=');
            }
            prop_assert_eq!(decode_base64(&padded), Some(bytes));
        }

        #[test]
        fn directives_round_trip(
            size in proptest::option::of(0u32..1 << 20),
            count in proptest::option::of(0u32..100),
            sizes in proptest::collection::vec(0u32..1000, 0..5),
            delay_us in 0u64..10_000_000,
            fail in proptest::option::of((1u32..=16, ".{0,20}", 0u32..10)),
            report in any::<bool>(),
        ) {
            let d = Directives {
                response_size: size,
                response_count: count,
                response_sizes: sizes,
                response_interval: Duration::from_micros(delay_us / 2),
                delay: Duration::from_micros(delay_us),
                fail: fail.map(|(c, m, a)| FailWith { code: Code::from_u32(c), message: m, after: a }),
                report_deadline: report,
            };
            let req = EchoRequest::new(vec![1u8, 2, 3]).with_directives(d.clone());
            let back = EchoRequest::from(proto::EchoRequest::from(req));
            prop_assert_eq!(back.directives, d);
            prop_assert_eq!(&back.payload[..], &[1u8, 2, 3][..]);
        }
    }
}
