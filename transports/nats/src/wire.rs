//! The `nats` transport's header scheme: what each `Wb-*` header means and how metadata,
//! status, directives and deadlines are written into NATS headers and read back (the scheme
//! itself is documented in [`crate::nats`]).
//!
//! NATS headers are text lines (`Name: value`) whose values the client library trims and which
//! may not hold CR or LF, and a header map keeps the order of one name's values but not the
//! order across names. So every metadata entry is one value of a single header name (order
//! kept), text that could be mangled is percent-encoded, and binary values are base64.

use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use thiserror::Error;

use wirebench_core::message::{Directives, EchoResponse, FailWith};
use wirebench_core::metadata::{Metadata, MetadataValue, is_binary_key};
use wirebench_core::status::{Code, Status};

/// Stream frame kind; absent on unary requests and replies.
pub const FRAME: HeaderName = HeaderName::from_static("Wb-Frame");
/// Sequence number of a `msg` frame (1-based, per call and direction); on `end` and `status`,
/// how many `msg` frames the sender sent.
pub const SEQ: HeaderName = HeaderName::from_static("Wb-Seq");
/// On `credit`: the receiver has consumed every message up to this sequence number.
pub const ACK: HeaderName = HeaderName::from_static("Wb-Ack");
/// On `open` and `accept`: how many messages the sender of this frame will buffer (its
/// receive window).
pub const WINDOW: HeaderName = HeaderName::from_static("Wb-Window");
/// The call's deadline as a budget in microseconds from the moment the message arrives.
pub const TIMEOUT: HeaderName = HeaderName::from_static("Wb-Timeout");
/// One metadata entry: request metadata, or initial metadata in replies and `headers` frames.
pub const METADATA: HeaderName = HeaderName::from_static("Wb-Md");
/// One trailing metadata entry (unary replies, `status` frames).
pub const TRAILER: HeaderName = HeaderName::from_static("Wb-Tr");
/// The status code number (gRPC's numbering); absent means 0, OK.
pub const STATUS: HeaderName = HeaderName::from_static("Wb-Status");
/// The status message, percent-encoded UTF-8.
pub const MESSAGE: HeaderName = HeaderName::from_static("Wb-Message");
/// Directive: size of each response payload.
pub const SIZE: HeaderName = HeaderName::from_static("Wb-Size");
/// Directive: number of responses.
pub const COUNT: HeaderName = HeaderName::from_static("Wb-Count");
/// Directive: explicit response sizes, comma-separated.
pub const SIZES: HeaderName = HeaderName::from_static("Wb-Sizes");
/// Directive: pause before each streamed response, microseconds.
pub const INTERVAL: HeaderName = HeaderName::from_static("Wb-Interval");
/// Directive: pause before answering, microseconds.
pub const DELAY: HeaderName = HeaderName::from_static("Wb-Delay");
/// Directive: fail with `<code> <after> <percent-encoded message>`.
pub const FAIL: HeaderName = HeaderName::from_static("Wb-Fail");
/// Directive: report the deadline budget the server saw (`1`).
pub const REPORT_DEADLINE: HeaderName = HeaderName::from_static("Wb-Report-Deadline");
/// Response field: request messages the server received (client stream).
pub const RECV_MSGS: HeaderName = HeaderName::from_static("Wb-Recv-Msgs");
/// Response field: request payload bytes the server received (client stream).
pub const RECV_BYTES: HeaderName = HeaderName::from_static("Wb-Recv-Bytes");

/// The kinds of stream frames (`Wb-Frame` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client → service subject: start a call.
    Open,
    /// Server → client: the call is running; its reply subject receives the client's frames.
    Accept,
    /// Either way: one message.
    Msg,
    /// Client → server: half-close.
    End,
    /// Server → client: initial metadata.
    Headers,
    /// Server → client: the final status and trailing metadata.
    Status,
    /// Client → server: the client cancelled the call.
    Cancel,
    /// Either way: flow-control credit.
    Credit,
}

impl Frame {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Frame::Open => "open",
            Frame::Accept => "accept",
            Frame::Msg => "msg",
            Frame::End => "end",
            Frame::Headers => "headers",
            Frame::Status => "status",
            Frame::Cancel => "cancel",
            Frame::Credit => "credit",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Frame> {
        Some(match s {
            "open" => Frame::Open,
            "accept" => Frame::Accept,
            "msg" => Frame::Msg,
            "end" => Frame::End,
            "headers" => Frame::Headers,
            "status" => Frame::Status,
            "cancel" => Frame::Cancel,
            "credit" => Frame::Credit,
            _ => return None,
        })
    }
}

/// A header that could not be understood.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A header's value is malformed.
    #[error("header {name}: {reason} (value {value:?})")]
    Bad {
        /// The header.
        name: String,
        /// The value received.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header the frame needs is missing.
    #[error("header {0} is missing")]
    Missing(&'static str),
}

fn bad(name: &HeaderName, value: &str, reason: impl Into<String>) -> WireError {
    WireError::Bad {
        name: name.to_string(),
        value: value.chars().take(200).collect(),
        reason: reason.into(),
    }
}

/// Percent-encodes what a header value cannot carry byte-exact: `%`, bytes outside printable
/// ASCII, and spaces at either end (the receiver trims values).
pub fn encode_text(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let lead = bytes.iter().take_while(|b| **b == b' ').count();
    let trail_from = bytes.len()
        - bytes[lead..]
            .iter()
            .rev()
            .take_while(|b| **b == b' ')
            .count();
    for (i, &b) in bytes.iter().enumerate() {
        let keep =
            (0x20..=0x7e).contains(&b) && b != b'%' && (b != b' ' || (i >= lead && i < trail_from));
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Reverses [`encode_text`]: `%XX` becomes the byte; anything else is taken as is.
pub fn decode_text(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Base64 for binary metadata: standard alphabet, written padded, read padded or not.
const BINARY: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn value(s: String) -> HeaderValue {
    // Every value written here comes from an encoder that emits printable ASCII only (no CR
    // or LF), which is all `HeaderValue` asks.
    HeaderValue::from(s)
}

/// Appends every entry of `md` as one `name` header each, in order.
pub fn put_metadata(headers: &mut HeaderMap, name: &HeaderName, md: &Metadata) {
    for e in md {
        let mut v =
            String::with_capacity(e.key().len() + 1 + e.value().as_bytes().len() * 4 / 3 + 4);
        v.push_str(e.key());
        v.push(' ');
        match e.value() {
            MetadataValue::Binary(b) => STANDARD.encode_string(b, &mut v),
            MetadataValue::Ascii(s) => encode_text(s.as_bytes(), &mut v),
        }
        headers.append(name.clone(), value(v));
    }
}

/// Reads the metadata entries carried as `name` headers.
pub fn get_metadata(headers: &HeaderMap, name: &HeaderName) -> Result<Metadata, WireError> {
    let mut md = Metadata::new();
    for v in headers.get_all(name.clone()) {
        let v = v.as_str();
        // A value that was empty arrives without its separator (the space was trimmed).
        let (key, enc) = v.split_once(' ').unwrap_or((v, ""));
        let raw = if is_binary_key(key) {
            BINARY
                .decode(enc)
                .map_err(|e| bad(name, v, format!("binary value is not base64: {e}")))?
        } else {
            decode_text(enc).map_err(|e| bad(name, v, e))?
        };
        md.append_raw(key, &raw)
            .map_err(|e| bad(name, v, e.to_string()))?;
    }
    Ok(md)
}

/// Writes a deadline budget.
pub fn put_timeout(headers: &mut HeaderMap, timeout: Duration) {
    headers.insert(
        TIMEOUT,
        value(timeout.as_micros().min(u128::from(u64::MAX)).to_string()),
    );
}

fn get_num<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<T>, WireError> {
    match headers.get(name.clone()) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .parse()
            .map(Some)
            .map_err(|_| bad(name, v.as_str(), "not a number")),
    }
}

/// Reads the deadline budget, if any.
pub fn get_timeout(headers: &HeaderMap) -> Result<Option<Duration>, WireError> {
    Ok(get_num::<u64>(headers, &TIMEOUT)?.map(Duration::from_micros))
}

/// Reads a sequence-like number header that the frame needs.
pub fn get_required(
    headers: &HeaderMap,
    name: &HeaderName,
    what: &'static str,
) -> Result<u64, WireError> {
    get_num::<u64>(headers, name)?.ok_or(WireError::Missing(what))
}

/// Reads an optional number header.
pub fn get_u64(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, WireError> {
    get_num(headers, name)
}

/// Writes the directives that differ from the defaults.
pub fn put_directives(headers: &mut HeaderMap, d: &Directives) {
    if let Some(n) = d.response_size {
        headers.insert(SIZE, value(n.to_string()));
    }
    if let Some(n) = d.response_count {
        headers.insert(COUNT, value(n.to_string()));
    }
    if !d.response_sizes.is_empty() {
        let list: Vec<String> = d.response_sizes.iter().map(u32::to_string).collect();
        headers.insert(SIZES, value(list.join(",")));
    }
    if !d.response_interval.is_zero() {
        headers.insert(INTERVAL, value(d.response_interval.as_micros().to_string()));
    }
    if !d.delay.is_zero() {
        headers.insert(DELAY, value(d.delay.as_micros().to_string()));
    }
    if let Some(f) = &d.fail {
        let mut v = format!("{} {} ", f.code.as_u32(), f.after);
        encode_text(f.message.as_bytes(), &mut v);
        headers.insert(FAIL, value(v));
    }
    if d.report_deadline {
        headers.insert(REPORT_DEADLINE, value("1".to_owned()));
    }
}

fn micros(headers: &HeaderMap, name: &HeaderName) -> Result<Duration, WireError> {
    Ok(get_num::<u64>(headers, name)?.map_or(Duration::ZERO, Duration::from_micros))
}

/// Reads the directives.
pub fn get_directives(headers: &HeaderMap) -> Result<Directives, WireError> {
    let response_sizes = match headers.get(SIZES) {
        None => Vec::new(),
        Some(v) if v.as_str().is_empty() => Vec::new(),
        Some(v) => v
            .as_str()
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad(&SIZES, v.as_str(), "not a comma-separated list of sizes"))?,
    };
    let fail = match headers.get(FAIL) {
        None => None,
        Some(v) => {
            let s = v.as_str();
            let mut parts = s.splitn(3, ' ');
            let code = parts
                .next()
                .and_then(|c| c.parse::<u32>().ok())
                .filter(|c| *c != 0 && *c < 17)
                .ok_or_else(|| bad(&FAIL, s, "expected `<code 1..16> <after> <message>`"))?;
            let after = parts
                .next()
                .and_then(|a| a.parse::<u32>().ok())
                .ok_or_else(|| bad(&FAIL, s, "expected `<code> <after> <message>`"))?;
            let message = decode_text(parts.next().unwrap_or(""))
                .map_err(|e| bad(&FAIL, s, e))
                .and_then(|m| {
                    String::from_utf8(m).map_err(|_| bad(&FAIL, s, "message is not UTF-8"))
                })?;
            Some(FailWith {
                code: Code::from_u32(code),
                message,
                after,
            })
        }
    };
    Ok(Directives {
        response_size: get_num(headers, &SIZE)?,
        response_count: get_num(headers, &COUNT)?,
        response_sizes,
        response_interval: micros(headers, &INTERVAL)?,
        delay: micros(headers, &DELAY)?,
        fail,
        report_deadline: headers
            .get(REPORT_DEADLINE)
            .is_some_and(|v| v.as_str() == "1"),
    })
}

/// Writes a status (nothing for OK without message) and its trailing metadata.
pub fn put_status(headers: &mut HeaderMap, status: &Status) {
    if !status.is_ok() {
        headers.insert(STATUS, value(status.code().as_u32().to_string()));
    }
    if !status.message().is_empty() {
        let mut v = String::with_capacity(status.message().len());
        encode_text(status.message().as_bytes(), &mut v);
        headers.insert(MESSAGE, value(v));
    }
    put_metadata(headers, &TRAILER, status.metadata());
}

/// Reads a status and its trailing metadata (OK when no `Wb-Status`).
pub fn get_status(headers: &HeaderMap) -> Result<Status, WireError> {
    let code = match headers.get(STATUS) {
        None => Code::Ok,
        Some(v) => v
            .as_str()
            .parse::<u32>()
            .ok()
            .filter(|c| *c < 17)
            .map(Code::from_u32)
            .ok_or_else(|| bad(&STATUS, v.as_str(), "not a status code 0..16"))?,
    };
    let message = match headers.get(MESSAGE) {
        None => String::new(),
        Some(v) => decode_text(v.as_str())
            .map_err(|e| bad(&MESSAGE, v.as_str(), e))
            .and_then(|m| {
                String::from_utf8(m).map_err(|_| bad(&MESSAGE, v.as_str(), "not UTF-8"))
            })?,
    };
    Ok(Status::new(code, message).with_metadata(get_metadata(headers, &TRAILER)?))
}

/// Writes a response's counters when non-zero.
pub fn put_response(headers: &mut HeaderMap, r: &EchoResponse) {
    if r.received_messages != 0 {
        headers.insert(RECV_MSGS, value(r.received_messages.to_string()));
    }
    if r.received_bytes != 0 {
        headers.insert(RECV_BYTES, value(r.received_bytes.to_string()));
    }
}

/// Reads a response's counters (0 when absent) around `payload`.
pub fn get_response(
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
) -> Result<EchoResponse, WireError> {
    let (m, b) = match headers {
        None => (None, None),
        Some(h) => (get_num(h, &RECV_MSGS)?, get_num(h, &RECV_BYTES)?),
    };
    Ok(EchoResponse {
        payload,
        received_messages: m.unwrap_or(0),
        received_bytes: b.unwrap_or(0),
    })
}

/// The frame kind of a message, if it carries one.
pub fn frame_of(headers: Option<&HeaderMap>) -> Result<Option<Frame>, WireError> {
    match headers.and_then(|h| h.get(FRAME)) {
        None => Ok(None),
        Some(v) => Frame::parse(v.as_str())
            .map(Some)
            .ok_or_else(|| bad(&FRAME, v.as_str(), "unknown frame kind")),
    }
}

/// A header map holding one frame kind.
pub fn frame(kind: Frame) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(FRAME, HeaderValue::from(kind.as_str()));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// Serializes like the client library, then parses like it (trimming values), so the
    /// round trip includes what the wire does to values.
    fn through_wire(h: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for (name, values) in h.iter() {
            for v in values {
                let line = format!("{name}: {}", v.as_str());
                assert!(!line.contains(['\r', '\n']), "{line:?}");
                let (n, v) = line.split_once(':').unwrap();
                out.append(n, v.trim());
            }
        }
        out
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,12}".prop_filter("reserved", |k| !k.starts_with("grpc-"))
    }

    fn metadata() -> impl Strategy<Value = Metadata> {
        let entry = prop_oneof![
            (
                key().prop_filter("ascii key", |k| !k.ends_with("-bin")),
                "[ -~]{0,24}"
            )
                .prop_map(|(k, v)| (k, MetadataValue::Ascii(v))),
            (key(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(k, v)| (format!("{k}-bin"), MetadataValue::Binary(Bytes::from(v)))),
        ];
        proptest::collection::vec(entry, 0..8).prop_map(|entries| {
            let mut md = Metadata::new();
            for (k, v) in entries {
                match v {
                    MetadataValue::Ascii(s) => md.append_ascii(k, s).unwrap(),
                    MetadataValue::Binary(b) => md.append_binary(k, b).unwrap(),
                }
            }
            md
        })
    }

    proptest! {
        #[test]
        fn text_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut s = String::new();
            encode_text(&bytes, &mut s);
            prop_assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(s.trim(), s.as_str());
            prop_assert_eq!(decode_text(&s).unwrap(), bytes);
        }

        #[test]
        fn metadata_round_trips_in_order(md in metadata()) {
            let mut h = HeaderMap::new();
            put_metadata(&mut h, &METADATA, &md);
            let back = get_metadata(&through_wire(&h), &METADATA).unwrap();
            prop_assert_eq!(back, md);
        }

        #[test]
        fn status_round_trips(code in 0u32..17, message in "\\PC{0,40}", md in metadata()) {
            let s = Status::new(Code::from_u32(code), message).with_metadata(md);
            let mut h = HeaderMap::new();
            put_status(&mut h, &s);
            prop_assert_eq!(get_status(&through_wire(&h)).unwrap(), s);
        }

        #[test]
        fn directives_round_trip(
            size in proptest::option::of(any::<u32>()),
            count in proptest::option::of(any::<u32>()),
            sizes in proptest::collection::vec(any::<u32>(), 0..5),
            interval in 0u64..10_000_000,
            delay in 0u64..10_000_000,
            fail in proptest::option::of((1u32..17, any::<u32>(), "\\PC{0,30}")),
            report in any::<bool>(),
        ) {
            let d = Directives {
                response_size: size,
                response_count: count,
                response_sizes: sizes,
                response_interval: Duration::from_micros(interval),
                delay: Duration::from_micros(delay),
                fail: fail.map(|(c, after, message)| FailWith { code: Code::from_u32(c), message, after }),
                report_deadline: report,
            };
            let mut h = HeaderMap::new();
            put_directives(&mut h, &d);
            prop_assert_eq!(get_directives(&through_wire(&h)).unwrap(), d);
        }

        #[test]
        fn garbage_headers_never_panic(name in "Wb-[A-Za-z-]{1,14}", v in "[ -~]{0,40}") {
            let mut h = HeaderMap::new();
            h.append(name.as_str(), v.as_str());
            let _ = get_directives(&h);
            let _ = get_status(&h);
            let _ = get_metadata(&h, &METADATA);
            let _ = get_timeout(&h);
            let _ = frame_of(Some(&h));
            let _ = get_response(Some(&h), Bytes::new());
        }
    }

    #[test]
    fn special_status_message_survives() {
        const TEXT: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let s = Status::new(Code::Unknown, TEXT);
        let mut h = HeaderMap::new();
        put_status(&mut h, &s);
        assert_eq!(get_status(&through_wire(&h)).unwrap().message(), TEXT);
    }

    #[test]
    fn ok_without_metadata_writes_nothing() {
        let mut h = HeaderMap::new();
        put_status(&mut h, &Status::ok());
        put_directives(&mut h, &Directives::default());
        put_response(&mut h, &EchoResponse::default());
        assert!(h.is_empty());
    }

    #[test]
    fn documented_examples_decode() {
        let mut h = HeaderMap::new();
        h.append("Wb-Md", "x-initial-blob-bin AAoL//6A");
        h.append("Wb-Md", "x-initial-ascii value 1");
        h.append("Wb-Fail", "10 2 aborted%20");
        h.append("Wb-Timeout", "250000");
        let md = get_metadata(&h, &METADATA).unwrap();
        assert_eq!(
            md.get("x-initial-blob-bin").unwrap().as_bytes(),
            &[0x00, 0x0a, 0x0b, 0xff, 0xfe, 0x80]
        );
        assert_eq!(md.get_ascii("x-initial-ascii"), Some("value 1"));
        let d = get_directives(&h).unwrap();
        let f = d.fail.unwrap();
        assert_eq!(
            (f.code, f.after, f.message.as_str()),
            (Code::Aborted, 2, "aborted ")
        );
        assert_eq!(get_timeout(&h).unwrap(), Some(Duration::from_millis(250)));
    }
}
