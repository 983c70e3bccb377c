//! The protocol's headers: the `Wb-*` names and what each means, the frame kinds, and how
//! directives, deadlines, statuses and response counters are written into a broker message's
//! headers and read back — once, for every broker, over the [`Headers`] trait. A broker adapter
//! implements the trait over its own header type (NATS headers, MQTT 5 user properties) and
//! decides only how *metadata entries* are laid out, the one place the brokers' header models
//! differ (see [`Headers::put_metadata`]).
//!
//! Every value this module writes is printable ASCII without CR or LF (what every broker's
//! headers can carry unchanged); text that could be mangled is percent-encoded
//! ([`encode_text`]), binary metadata is base64.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use thiserror::Error;
use tokio::time::Instant;
use wirebench_core::echo::{CallHead, UnaryOutcome};
use wirebench_core::message::{Directives, EchoRequest, EchoResponse, FailWith, Method};
use wirebench_core::metadata::{Metadata, MetadataValue, is_binary_key};
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::CallOptions;

/// Names of the protocol's own headers start with this (metadata keys are lower-case, so they
/// can never collide).
pub const RESERVED_PREFIX: &str = "Wb-";
/// Stream frame kind; absent on unary requests and replies.
pub const FRAME: &str = "Wb-Frame";
/// Sequence number of a `msg` frame (1-based, per call and direction); on `end` and `status`,
/// how many `msg` frames the sender sent.
pub const SEQ: &str = "Wb-Seq";
/// On `credit`: the receiver has consumed every message up to this sequence number.
pub const ACK: &str = "Wb-Ack";
/// On `open` and `accept`: how many messages the sender of this frame will buffer (its
/// receive window).
pub const WINDOW: &str = "Wb-Window";
/// The call's deadline as a budget in microseconds from the moment the message arrives.
pub const TIMEOUT: &str = "Wb-Timeout";
/// The status code number (gRPC's numbering); absent means 0, OK.
pub const STATUS: &str = "Wb-Status";
/// The status message, percent-encoded UTF-8.
pub const MESSAGE: &str = "Wb-Message";
/// Directive: size of each response payload.
pub const SIZE: &str = "Wb-Size";
/// Directive: number of responses.
pub const COUNT: &str = "Wb-Count";
/// Directive: explicit response sizes, comma-separated.
pub const SIZES: &str = "Wb-Sizes";
/// Directive: pause before each streamed response, microseconds.
pub const INTERVAL: &str = "Wb-Interval";
/// Directive: pause before answering, microseconds.
pub const DELAY: &str = "Wb-Delay";
/// Directive: fail with `<code> <after> <percent-encoded message>`.
pub const FAIL: &str = "Wb-Fail";
/// Directive: report the deadline budget the server saw (`1`).
pub const REPORT_DEADLINE: &str = "Wb-Report-Deadline";
/// Response field: request messages the server received (client stream).
pub const RECV_MSGS: &str = "Wb-Recv-Msgs";
/// Response field: request payload bytes the server received (client stream).
pub const RECV_BYTES: &str = "Wb-Recv-Bytes";

/// The kinds of stream frames (`Wb-Frame` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client → service: start a call.
    Open,
    /// Server → client: the call is running; its reply address receives the client's frames.
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
    /// Every kind.
    pub const ALL: [Frame; 8] = [
        Frame::Open,
        Frame::Accept,
        Frame::Msg,
        Frame::End,
        Frame::Headers,
        Frame::Status,
        Frame::Cancel,
        Frame::Credit,
    ];

    /// The wire spelling.
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

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Frame> {
        Frame::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A header that could not be understood.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A header's value (or name) is malformed.
    #[error("header {name}: {reason} (value {value:?})")]
    Malformed {
        /// The header.
        name: String,
        /// The value received (at most 200 characters of it).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header the message needs is missing.
    #[error("header {0} is missing")]
    Missing(&'static str),
}

/// A malformed-header error, quoting at most 200 characters of the value.
pub fn malformed(name: &str, value: &str, reason: impl Into<String>) -> WireError {
    WireError::Malformed {
        name: name.to_owned(),
        value: value.chars().take(200).collect(),
        reason: reason.into(),
    }
}

/// Which metadata a message carries: a request's (or initial metadata in a reply or `headers`
/// frame), or trailing metadata (in a reply or `status` frame). A message can hold both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataKind {
    /// Request metadata, or the server's initial metadata.
    Initial,
    /// The server's trailing metadata.
    Trailing,
}

/// A broker message's headers, as one broker's client library carries them.
pub trait Headers: Default + Send + Sync + 'static {
    /// The first value of header `name` (one of this module's `Wb-*` names).
    fn get(&self, name: &'static str) -> Option<&str>;

    /// Adds header `name` (each `Wb-*` name is written at most once per message).
    fn put(&mut self, name: &'static str, value: String);

    /// True when the message carries no header at all (a plain call sends none).
    fn is_empty(&self) -> bool;

    /// Writes every entry of `md`, in order, in the broker's metadata layout. Values go
    /// through [`encode_value`] or [`encode_text`], so they are printable ASCII.
    fn put_metadata(&mut self, kind: MetadataKind, md: &Metadata);

    /// Reads the entries [`put_metadata`](Self::put_metadata) wrote, in order.
    fn get_metadata(&self, kind: MetadataKind) -> Result<Metadata, WireError>;
}

/// Percent-encodes what a header value cannot carry byte-exact: `%`, every byte outside
/// printable ASCII, and spaces at either end (some clients trim values).
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

/// Reverses [`encode_text`]: `%XX` becomes the byte; anything else is taken as is. A `%` not
/// followed by two hex digits is an error.
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

/// [`decode_text`] for a header that must hold UTF-8 text.
fn decode_utf8(name: &str, s: &str) -> Result<String, WireError> {
    decode_text(s)
        .map_err(|e| malformed(name, s, e))
        .and_then(|m| String::from_utf8(m).map_err(|_| malformed(name, s, "not UTF-8")))
}

/// Base64 for binary metadata: standard alphabet, written padded, read padded or not.
const BINARY: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Appends a metadata value as the brokers carry it: base64 for a binary (`-bin`) value,
/// else the ASCII text through [`encode_text`] when `escape_text`, or as is.
pub fn encode_value(value: &MetadataValue, escape_text: bool, out: &mut String) {
    match value {
        MetadataValue::Binary(b) => STANDARD.encode_string(b, out),
        MetadataValue::Ascii(s) if escape_text => encode_text(s.as_bytes(), out),
        MetadataValue::Ascii(s) => out.push_str(s),
    }
}

/// Appends the entry `key` = `value` (as [`encode_value`] wrote it) to `md`; `name` and `whole`
/// name the header in errors.
pub fn decode_entry(
    md: &mut Metadata,
    name: &str,
    whole: &str,
    key: &str,
    value: &str,
    escaped_text: bool,
) -> Result<(), WireError> {
    let raw = if is_binary_key(key) {
        BINARY
            .decode(value)
            .map_err(|e| malformed(name, whole, format!("binary value is not base64: {e}")))?
    } else if escaped_text {
        decode_text(value).map_err(|e| malformed(name, whole, e))?
    } else {
        value.as_bytes().to_vec()
    };
    md.append_raw(key, &raw)
        .map_err(|e| malformed(name, whole, e.to_string()))
}

/// Headers as an ordered list of UTF-8 name/value pairs, names free to repeat — how MQTT 5
/// user properties (and Kafka record headers) carry them. Each metadata entry is a pair of its
/// own, named by its key (request and initial metadata; keys are lower case, so they never
/// collide with the `Wb-` names) or by `Wb-Tr:<key>` (trailing metadata); ASCII values as
/// is, binary (`-bin`) values in base64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyList(pub Vec<(String, String)>);

/// A trailing metadata entry of a [`PropertyList`] is named `Wb-Tr:<key>`.
pub const TRAILER_PREFIX: &str = "Wb-Tr:";

impl Headers for PropertyList {
    fn get(&self, name: &'static str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn put(&mut self, name: &'static str, value: String) {
        self.0.push((name.to_owned(), value));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn put_metadata(&mut self, kind: MetadataKind, md: &Metadata) {
        for e in md {
            let name = match kind {
                MetadataKind::Initial => e.key().to_owned(),
                MetadataKind::Trailing => format!("{TRAILER_PREFIX}{}", e.key()),
            };
            let mut v = String::new();
            encode_value(e.value(), false, &mut v);
            self.0.push((name, v));
        }
    }

    fn get_metadata(&self, kind: MetadataKind) -> Result<Metadata, WireError> {
        let mut md = Metadata::new();
        for (name, value) in &self.0 {
            let key = match kind {
                // Every pair that is not one of the protocol's own names.
                MetadataKind::Initial => {
                    (!name.starts_with(RESERVED_PREFIX)).then_some(name.as_str())
                }
                MetadataKind::Trailing => name.strip_prefix(TRAILER_PREFIX),
            };
            if let Some(key) = key {
                decode_entry(&mut md, name, value, key, value, false)?;
            }
        }
        Ok(md)
    }
}

/// Headers holding one frame kind.
pub fn frame<H: Headers>(kind: Frame) -> H {
    let mut h = H::default();
    h.put(FRAME, kind.as_str().to_owned());
    h
}

/// The frame kind a message carries, if any.
pub fn frame_of<H: Headers>(headers: Option<&H>) -> Result<Option<Frame>, WireError> {
    match headers.and_then(|h| h.get(FRAME)) {
        None => Ok(None),
        Some(v) => Frame::parse(v)
            .map(Some)
            .ok_or_else(|| malformed(FRAME, v, "unknown frame kind")),
    }
}

/// Adds a number header.
pub fn put_u64<H: Headers>(headers: &mut H, name: &'static str, n: u64) {
    headers.put(name, n.to_string());
}

fn get_num<H: Headers, T: std::str::FromStr>(
    headers: &H,
    name: &'static str,
) -> Result<Option<T>, WireError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| malformed(name, v, "not a number")),
    }
}

/// An optional number header.
pub fn get_u64<H: Headers>(headers: &H, name: &'static str) -> Result<Option<u64>, WireError> {
    get_num(headers, name)
}

/// A number header the message needs.
pub fn get_required<H: Headers>(headers: &H, name: &'static str) -> Result<u64, WireError> {
    get_num(headers, name)?.ok_or(WireError::Missing(name))
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Writes a deadline budget.
pub fn put_timeout<H: Headers>(headers: &mut H, timeout: Duration) {
    put_u64(headers, TIMEOUT, micros_of(timeout));
}

/// Reads the deadline budget, if any.
pub fn get_timeout<H: Headers>(headers: &H) -> Result<Option<Duration>, WireError> {
    Ok(get_num::<H, u64>(headers, TIMEOUT)?.map(Duration::from_micros))
}

fn micros<H: Headers>(headers: &H, name: &'static str) -> Result<Duration, WireError> {
    Ok(get_num::<H, u64>(headers, name)?.map_or(Duration::ZERO, Duration::from_micros))
}

/// Writes the directives that differ from the defaults.
pub fn put_directives<H: Headers>(headers: &mut H, d: &Directives) {
    if let Some(n) = d.response_size {
        put_u64(headers, SIZE, u64::from(n));
    }
    if let Some(n) = d.response_count {
        put_u64(headers, COUNT, u64::from(n));
    }
    if !d.response_sizes.is_empty() {
        let list: Vec<String> = d.response_sizes.iter().map(u32::to_string).collect();
        headers.put(SIZES, list.join(","));
    }
    if !d.response_interval.is_zero() {
        put_u64(headers, INTERVAL, micros_of(d.response_interval));
    }
    if !d.delay.is_zero() {
        put_u64(headers, DELAY, micros_of(d.delay));
    }
    if let Some(f) = &d.fail {
        let mut v = format!("{} {} ", f.code.as_u32(), f.after);
        encode_text(f.message.as_bytes(), &mut v);
        headers.put(FAIL, v);
    }
    if d.report_deadline {
        headers.put(REPORT_DEADLINE, "1".to_owned());
    }
}

/// Reads the directives.
pub fn get_directives<H: Headers>(headers: &H) -> Result<Directives, WireError> {
    let response_sizes = match headers.get(SIZES) {
        None | Some("") => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| malformed(SIZES, v, "not a comma-separated list of sizes"))?,
    };
    let fail = match headers.get(FAIL) {
        None => None,
        Some(s) => {
            let mut parts = s.splitn(3, ' ');
            let code = parts
                .next()
                .and_then(|c| c.parse::<u32>().ok())
                .filter(|c| *c != 0 && *c < 17)
                .ok_or_else(|| malformed(FAIL, s, "expected `<code 1..16> <after> <message>`"))?;
            let after = parts
                .next()
                .and_then(|a| a.parse::<u32>().ok())
                .ok_or_else(|| malformed(FAIL, s, "expected `<code> <after> <message>`"))?;
            let message = decode_utf8(FAIL, parts.next().unwrap_or(""))?;
            Some(FailWith {
                code: Code::from_u32(code),
                message,
                after,
            })
        }
    };
    Ok(Directives {
        response_size: get_num(headers, SIZE)?,
        response_count: get_num(headers, COUNT)?,
        response_sizes,
        response_interval: micros(headers, INTERVAL)?,
        delay: micros(headers, DELAY)?,
        fail,
        report_deadline: headers.get(REPORT_DEADLINE) == Some("1"),
    })
}

/// Writes a status (nothing for OK without message) and its trailing metadata.
pub fn put_status<H: Headers>(headers: &mut H, status: &Status) {
    if !status.is_ok() {
        put_u64(headers, STATUS, u64::from(status.code().as_u32()));
    }
    if !status.message().is_empty() {
        let mut v = String::with_capacity(status.message().len());
        encode_text(status.message().as_bytes(), &mut v);
        headers.put(MESSAGE, v);
    }
    headers.put_metadata(MetadataKind::Trailing, status.metadata());
}

/// Reads a status and its trailing metadata (OK when there is no `Wb-Status`).
pub fn get_status<H: Headers>(headers: &H) -> Result<Status, WireError> {
    let code = match headers.get(STATUS) {
        None => Code::Ok,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|c| *c < 17)
            .map(Code::from_u32)
            .ok_or_else(|| malformed(STATUS, v, "not a status code 0..16"))?,
    };
    let message = match headers.get(MESSAGE) {
        None => String::new(),
        Some(v) => decode_utf8(MESSAGE, v)?,
    };
    Ok(Status::new(code, message).with_metadata(headers.get_metadata(MetadataKind::Trailing)?))
}

/// Writes a response's counters when non-zero.
pub fn put_response<H: Headers>(headers: &mut H, r: &EchoResponse) {
    if r.received_messages != 0 {
        put_u64(headers, RECV_MSGS, r.received_messages);
    }
    if r.received_bytes != 0 {
        put_u64(headers, RECV_BYTES, r.received_bytes);
    }
}

/// Reads a response's counters (0 when absent) around `payload`.
pub fn get_response<H: Headers>(
    headers: Option<&H>,
    payload: Bytes,
) -> Result<EchoResponse, WireError> {
    let (m, b) = match headers {
        None => (None, None),
        Some(h) => (get_num(h, RECV_MSGS)?, get_num(h, RECV_BYTES)?),
    };
    Ok(EchoResponse {
        payload,
        received_messages: m.unwrap_or(0),
        received_bytes: b.unwrap_or(0),
    })
}

/// A request's (or an `open` frame's) headers; `None` for a plain call (the fast path sends
/// no headers at all).
pub fn request_headers<H: Headers>(
    frame: Option<Frame>,
    options: &CallOptions,
    request: Option<&EchoRequest>,
) -> Option<H> {
    let plain = frame.is_none()
        && options.metadata.is_empty()
        && options.timeout.is_none()
        && request.is_none_or(|r| r.directives.is_plain());
    if plain {
        return None;
    }
    let mut h = match frame {
        Some(f) => self::frame(f),
        None => H::default(),
    };
    h.put_metadata(MetadataKind::Initial, &options.metadata);
    if let Some(t) = options.timeout {
        put_timeout(&mut h, t);
    }
    if let Some(r) = request {
        put_directives(&mut h, &r.directives);
    }
    Some(h)
}

/// A server's reading of a request's headers (or an `open` frame's): the call's head.
pub fn decode_head<H: Headers>(method: Method, headers: Option<&H>) -> Result<CallHead, Status> {
    let Some(h) = headers else {
        return Ok(CallHead::new(method));
    };
    Ok(CallHead {
        method,
        metadata: h.get_metadata(MetadataKind::Initial).map_err(bad_request)?,
        deadline: get_timeout(h)
            .map_err(bad_request)?
            .map(|t| Instant::now() + t),
        peer_identity: None,
    })
}

/// The status a server answers a malformed request with.
pub fn bad_request(e: WireError) -> Status {
    Status::invalid_argument(format!("malformed request headers: {e}"))
}

/// The status a client fails a call with when the server's answer is malformed.
pub fn bad_reply(e: WireError) -> Status {
    Status::internal(format!("the server sent a malformed reply: {e}"))
}

/// A unary answer's headers and payload: no headers at all for a plain OK.
pub fn unary_reply<H: Headers>(o: UnaryOutcome) -> (Option<H>, Bytes) {
    if let Some(r) = &o.response
        && o.status.is_ok()
        && o.status.message().is_empty()
        && o.status.metadata().is_empty()
        && o.headers.is_empty()
        && r.received_messages == 0
        && r.received_bytes == 0
    {
        // The fast path: nothing to say beyond the payload.
        return (None, o.response.map(|r| r.payload).unwrap_or_default());
    }
    let mut h = H::default();
    h.put_metadata(MetadataKind::Initial, &o.headers);
    put_status(&mut h, &o.status);
    let payload = match o.response {
        Some(r) if o.status.is_ok() => {
            put_response(&mut h, &r);
            r.payload
        }
        _ => Bytes::new(),
    };
    ((!h.is_empty()).then_some(h), payload)
}

/// A `status` frame: the final status of a stream, `sent` messages having been sent. A
/// `shutdown` frame says so instead of counting (messages may be in flight).
pub fn status_frame<H: Headers>(status: &Status, sent: u64, shutdown: bool) -> H {
    let mut h = frame(Frame::Status);
    put_status(&mut h, status);
    if !shutdown {
        put_u64(&mut h, SEQ, sent);
    }
    h
}

/// The method a service subject's or topic's last token names (exactly as [`Method::name`]
/// spells it); anything else is [`Method::Unimplemented`].
pub fn method_of(token: &[u8]) -> Method {
    Method::ALL
        .into_iter()
        .find(|m| m.name().as_bytes() == token)
        .unwrap_or(Method::Unimplemented)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_garbage_never_panics, check_round_trips};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_round_trips_as_trimmable_printable_ascii(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut s = String::new();
            encode_text(&bytes, &mut s);
            prop_assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(s.trim(), s.as_str());
            prop_assert_eq!(decode_text(&s).unwrap(), bytes);
        }
    }

    #[test]
    fn property_lists_round_trip_and_survive_garbage() {
        check_round_trips::<PropertyList>(Clone::clone);
        check_garbage_never_panics(PropertyList);
    }

    #[test]
    #[should_panic(expected = "headers did not round-trip")]
    fn a_lossy_layout_is_caught() {
        // Drops every trailing metadata entry: the shared check must notice.
        check_round_trips::<PropertyList>(|h| {
            PropertyList(
                h.0.iter()
                    .filter(|(n, _)| !n.starts_with(TRAILER_PREFIX))
                    .cloned()
                    .collect(),
            )
        });
    }

    #[test]
    fn special_status_message_survives() {
        const TEXT: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let mut h = PropertyList::default();
        put_status(&mut h, &Status::new(Code::Unknown, TEXT));
        assert_eq!(get_status(&h).unwrap().message(), TEXT);
    }

    #[test]
    fn ok_without_metadata_writes_nothing() {
        let mut h = PropertyList::default();
        put_status(&mut h, &Status::ok());
        put_directives(&mut h, &Directives::default());
        put_response(&mut h, &EchoResponse::default());
        assert!(h.is_empty());
        let plain = request_headers::<PropertyList>(None, &CallOptions::default(), None);
        assert!(plain.is_none(), "a plain call sends no headers");
        let plain = UnaryOutcome {
            headers: Metadata::new(),
            response: Some(EchoResponse::new(Bytes::from_static(b"x"))),
            status: Status::ok(),
        };
        let (h, _) = unary_reply::<PropertyList>(plain);
        assert!(h.is_none(), "a plain answer sends no headers");
    }

    #[test]
    fn frames_and_methods_parse_as_spelled() {
        for f in Frame::ALL {
            assert_eq!(Frame::parse(f.as_str()), Some(f));
        }
        assert_eq!(
            frame_of(Some(&frame::<PropertyList>(Frame::Credit))).unwrap(),
            Some(Frame::Credit)
        );
        assert!(frame_of(Some(&PropertyList(vec![(FRAME.into(), "nope".into())]))).is_err());
        for m in Method::ALL {
            assert_eq!(method_of(m.name().as_bytes()), m);
        }
        assert_eq!(method_of(b"Nope"), Method::Unimplemented);
    }

    #[test]
    fn documented_examples_decode() {
        let p = PropertyList(
            [
                ("x-initial-blob-bin", "AAoL//6A"),
                ("x-initial-ascii", "value 1"),
                ("Wb-Tr:x-trailing-ascii", "trailing ~!@#"),
                ("Wb-Fail", "10 2 aborted%20%E2%98%BA"),
                ("Wb-Timeout", "250000"),
                ("Wb-Status", "3"),
                ("Wb-Message", "bad%0Aline"),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        );
        let md = p.get_metadata(MetadataKind::Initial).unwrap();
        assert_eq!(
            md.get("x-initial-blob-bin").unwrap().as_bytes(),
            &[0x00, 0x0a, 0x0b, 0xff, 0xfe, 0x80]
        );
        assert_eq!(md.get_ascii("x-initial-ascii"), Some("value 1"));
        assert_eq!(md.len(), 2, "reserved names are not metadata");
        let tr = p.get_metadata(MetadataKind::Trailing).unwrap();
        assert_eq!(tr.get_ascii("x-trailing-ascii"), Some("trailing ~!@#"));
        let f = get_directives(&p).unwrap().fail.unwrap();
        assert_eq!(
            (f.code, f.after, f.message.as_str()),
            (Code::Aborted, 2, "aborted ☺")
        );
        assert_eq!(get_timeout(&p).unwrap(), Some(Duration::from_millis(250)));
        let s = get_status(&p).unwrap();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "bad\nline")
        );
        let one = |n: &str, v: &str| PropertyList(vec![(n.to_owned(), v.to_owned())]);
        let initial = |p: PropertyList| p.get_metadata(MetadataKind::Initial);
        assert!(initial(one("Content-Type", "x")).is_err(), "upper case key");
        assert!(initial(one("x-bin", "not base64!")).is_err());
        assert!(
            initial(one("x", "tab\there")).is_err(),
            "not printable ASCII"
        );
    }
}
