//! The `mqtt` transport's property scheme: what each MQTT 5 user property means and how
//! metadata, status, directives and deadlines are written into user properties and read back
//! (the scheme itself is documented in [`crate`]).
//!
//! MQTT 5 user properties are an ordered list of UTF-8 name/value pairs that brokers forward
//! unchanged and in order (MQTT 5, 3.3.2.3.7), names may repeat, and strings are
//! length-prefixed (no trimming, no line syntax). So a metadata entry is one property named by
//! its key; only binary values (base64) and status messages (percent-encoded, since brokers may
//! refuse control characters in strings) need an encoding.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use thiserror::Error;

use wirebench_core::message::{Directives, EchoResponse, FailWith};
use wirebench_core::metadata::{Metadata, MetadataValue, is_binary_key};
use wirebench_core::status::{Code, Status};

/// User properties, as rumqttc carries them.
pub type Props = Vec<(String, String)>;

/// Names of the protocol's own properties start with this (metadata keys are lower-case, so
/// they can never collide).
pub const RESERVED_PREFIX: &str = "Wb-";
/// A trailing metadata entry is a property named `Wb-Tr:<key>`.
pub const TRAILER_PREFIX: &str = "Wb-Tr:";
/// Stream frame kind; absent on unary requests and replies.
pub const FRAME: &str = "Wb-Frame";
/// Sequence number of a `msg` frame (1-based, per call and direction); on `end` and `status`,
/// how many `msg` frames the sender sent.
pub const SEQ: &str = "Wb-Seq";
/// On `credit`: the receiver has consumed every message up to this sequence number.
pub const ACK: &str = "Wb-Ack";
/// On `open` and `accept`: the sender's receive window, in messages.
pub const WINDOW: &str = "Wb-Window";
/// The call's deadline as a budget in microseconds from arrival (like `grpc-timeout`).
pub const TIMEOUT: &str = "Wb-Timeout";
/// Status code, gRPC numbering 0–16 (absent = 0, `OK`).
pub const STATUS: &str = "Wb-Status";
/// Status message, percent-encoded UTF-8.
pub const MESSAGE: &str = "Wb-Message";
/// Directive: size of each response.
pub const SIZE: &str = "Wb-Size";
/// Directive: number of responses.
pub const COUNT: &str = "Wb-Count";
/// Directive: explicit response sizes, comma-separated.
pub const SIZES: &str = "Wb-Sizes";
/// Directive: pause before each streamed response, µs.
pub const INTERVAL: &str = "Wb-Interval";
/// Directive: pause before answering, µs.
pub const DELAY: &str = "Wb-Delay";
/// Directive: fail with `<code> <after> <percent-encoded message>`.
pub const FAIL: &str = "Wb-Fail";
/// Directive: `1` = report the deadline budget seen in trailer `x-wb-deadline-budget-us`.
pub const REPORT_DEADLINE: &str = "Wb-Report-Deadline";
/// Response field (client stream): request messages received.
pub const RECV_MSGS: &str = "Wb-Recv-Msgs";
/// Response field (client stream): request payload bytes received.
pub const RECV_BYTES: &str = "Wb-Recv-Bytes";

/// What a property could not say.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A property's value (or name) is not what its name requires.
    #[error("user property {name}: {value:?}: {reason}")]
    Malformed {
        /// The property's name.
        name: String,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A property the message needs is absent.
    #[error("missing user property {0}")]
    Missing(&'static str),
}

fn bad(name: &str, value: &str, reason: impl Into<String>) -> WireError {
    WireError::Malformed {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Stream frame kinds (the value of [`FRAME`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client → service: opens a stream.
    Open,
    /// Server → client: the stream runs; the server's topic for it is the response topic.
    Accept,
    /// Server → client: initial metadata.
    Headers,
    /// Either way: one message.
    Msg,
    /// Client → server: half-close.
    End,
    /// Server → client: the final status; ends the call.
    Status,
    /// Client → server: the client cancelled.
    Cancel,
    /// Either way: flow-control credit.
    Credit,
}

impl Frame {
    /// Every kind.
    pub const ALL: [Frame; 8] = [
        Frame::Open,
        Frame::Accept,
        Frame::Headers,
        Frame::Msg,
        Frame::End,
        Frame::Status,
        Frame::Cancel,
        Frame::Credit,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Frame::Open => "open",
            Frame::Accept => "accept",
            Frame::Headers => "headers",
            Frame::Msg => "msg",
            Frame::End => "end",
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

/// Base64 for binary metadata: standard alphabet, written padded, read padded or not.
const BINARY: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a status message escapes: control characters, `%` and (always) every non-ASCII byte.
const TEXT: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes `s` (see [`TEXT`]): the result is printable ASCII.
pub fn encode_text(s: &str) -> String {
    utf8_percent_encode(s, TEXT).to_string()
}

/// Decodes [`encode_text`]; a `%` not followed by two hex digits is taken as is.
pub fn decode_text(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "not UTF-8 once percent-decoded".to_owned())
}

/// The first value of property `name`.
pub fn get<'a>(props: &'a [(String, String)], name: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn get_num<T: std::str::FromStr>(
    props: &[(String, String)],
    name: &str,
) -> Result<Option<T>, WireError> {
    match get(props, name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(name, v, "not a number")),
    }
}

/// An optional number property.
pub fn get_u64(props: &[(String, String)], name: &str) -> Result<Option<u64>, WireError> {
    get_num(props, name)
}

/// A number property the message needs.
pub fn get_required(props: &[(String, String)], name: &'static str) -> Result<u64, WireError> {
    get_num(props, name)?.ok_or(WireError::Missing(name))
}

/// Appends a number property.
pub fn put_u64(props: &mut Props, name: &str, n: u64) {
    props.push((name.to_owned(), n.to_string()));
}

/// The frame kind a message carries, if any.
pub fn frame_of(props: &[(String, String)]) -> Result<Option<Frame>, WireError> {
    match get(props, FRAME) {
        None => Ok(None),
        Some(v) => Frame::parse(v)
            .map(Some)
            .ok_or_else(|| bad(FRAME, v, "unknown frame kind")),
    }
}

/// Properties holding one frame kind.
pub fn frame(kind: Frame) -> Props {
    vec![(FRAME.to_owned(), kind.as_str().to_owned())]
}

fn encode_value(v: &MetadataValue) -> String {
    match v {
        MetadataValue::Binary(b) => STANDARD.encode(b),
        MetadataValue::Ascii(s) => s.clone(),
    }
}

fn decode_entry(md: &mut Metadata, name: &str, key: &str, value: &str) -> Result<(), WireError> {
    let raw = if is_binary_key(key) {
        BINARY
            .decode(value)
            .map_err(|e| bad(name, value, format!("binary value is not base64: {e}")))?
    } else {
        value.as_bytes().to_vec()
    };
    md.append_raw(key, &raw)
        .map_err(|e| bad(name, value, e.to_string()))
}

/// Appends `md` as metadata properties (each named by its key), in order.
pub fn put_metadata(props: &mut Props, md: &Metadata) {
    for e in md {
        props.push((e.key().to_owned(), encode_value(e.value())));
    }
}

/// Appends `md` as trailing metadata properties (`Wb-Tr:<key>`), in order.
pub fn put_trailers(props: &mut Props, md: &Metadata) {
    for e in md {
        props.push((
            format!("{TRAILER_PREFIX}{}", e.key()),
            encode_value(e.value()),
        ));
    }
}

/// Reads the metadata properties: every property whose name does not start with `Wb-`.
pub fn get_metadata(props: &[(String, String)]) -> Result<Metadata, WireError> {
    let mut md = Metadata::new();
    for (name, value) in props {
        if !name.starts_with(RESERVED_PREFIX) {
            decode_entry(&mut md, name, name, value)?;
        }
    }
    Ok(md)
}

/// Reads the trailing metadata properties (`Wb-Tr:<key>`).
pub fn get_trailers(props: &[(String, String)]) -> Result<Metadata, WireError> {
    let mut md = Metadata::new();
    for (name, value) in props {
        if let Some(key) = name.strip_prefix(TRAILER_PREFIX) {
            decode_entry(&mut md, name, key, value)?;
        }
    }
    Ok(md)
}

/// Writes a deadline budget.
pub fn put_timeout(props: &mut Props, timeout: Duration) {
    put_u64(
        props,
        TIMEOUT,
        u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
    );
}

/// Reads the deadline budget, if any.
pub fn get_timeout(props: &[(String, String)]) -> Result<Option<Duration>, WireError> {
    Ok(get_num::<u64>(props, TIMEOUT)?.map(Duration::from_micros))
}

fn micros(props: &[(String, String)], name: &str) -> Result<Duration, WireError> {
    Ok(get_num::<u64>(props, name)?.map_or(Duration::ZERO, Duration::from_micros))
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Writes the directives that differ from the defaults.
pub fn put_directives(props: &mut Props, d: &Directives) {
    if let Some(n) = d.response_size {
        put_u64(props, SIZE, u64::from(n));
    }
    if let Some(n) = d.response_count {
        put_u64(props, COUNT, u64::from(n));
    }
    if !d.response_sizes.is_empty() {
        let list: Vec<String> = d.response_sizes.iter().map(u32::to_string).collect();
        props.push((SIZES.to_owned(), list.join(",")));
    }
    if !d.response_interval.is_zero() {
        put_u64(props, INTERVAL, micros_of(d.response_interval));
    }
    if !d.delay.is_zero() {
        put_u64(props, DELAY, micros_of(d.delay));
    }
    if let Some(f) = &d.fail {
        props.push((
            FAIL.to_owned(),
            format!(
                "{} {} {}",
                f.code.as_u32(),
                f.after,
                encode_text(&f.message)
            ),
        ));
    }
    if d.report_deadline {
        props.push((REPORT_DEADLINE.to_owned(), "1".to_owned()));
    }
}

/// Reads the directives.
pub fn get_directives(props: &[(String, String)]) -> Result<Directives, WireError> {
    let response_sizes = match get(props, SIZES) {
        None | Some("") => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad(SIZES, v, "not a comma-separated list of sizes"))?,
    };
    let fail = match get(props, FAIL) {
        None => None,
        Some(s) => {
            let mut parts = s.splitn(3, ' ');
            let code = parts
                .next()
                .and_then(|c| c.parse::<u32>().ok())
                .filter(|c| *c != 0 && *c < 17)
                .ok_or_else(|| bad(FAIL, s, "expected `<code 1..16> <after> <message>`"))?;
            let after = parts
                .next()
                .and_then(|a| a.parse::<u32>().ok())
                .ok_or_else(|| bad(FAIL, s, "expected `<code> <after> <message>`"))?;
            let message = decode_text(parts.next().unwrap_or("")).map_err(|e| bad(FAIL, s, e))?;
            Some(FailWith {
                code: Code::from_u32(code),
                message,
                after,
            })
        }
    };
    Ok(Directives {
        response_size: get_num(props, SIZE)?,
        response_count: get_num(props, COUNT)?,
        response_sizes,
        response_interval: micros(props, INTERVAL)?,
        delay: micros(props, DELAY)?,
        fail,
        report_deadline: get(props, REPORT_DEADLINE) == Some("1"),
    })
}

/// Writes a status (nothing for OK without message) and its trailing metadata.
pub fn put_status(props: &mut Props, status: &Status) {
    if !status.is_ok() {
        put_u64(props, STATUS, u64::from(status.code().as_u32()));
    }
    if !status.message().is_empty() {
        props.push((MESSAGE.to_owned(), encode_text(status.message())));
    }
    put_trailers(props, status.metadata());
}

/// Reads a status and its trailing metadata (OK when there is no `Wb-Status`).
pub fn get_status(props: &[(String, String)]) -> Result<Status, WireError> {
    let code = match get(props, STATUS) {
        None => Code::Ok,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|c| *c < 17)
            .map(Code::from_u32)
            .ok_or_else(|| bad(STATUS, v, "not a status code 0..16"))?,
    };
    let message = match get(props, MESSAGE) {
        None => String::new(),
        Some(v) => decode_text(v).map_err(|e| bad(MESSAGE, v, e))?,
    };
    Ok(Status::new(code, message).with_metadata(get_trailers(props)?))
}

/// Writes a response's counters when non-zero.
pub fn put_response(props: &mut Props, r: &EchoResponse) {
    if r.received_messages != 0 {
        put_u64(props, RECV_MSGS, r.received_messages);
    }
    if r.received_bytes != 0 {
        put_u64(props, RECV_BYTES, r.received_bytes);
    }
}

/// Reads a response's counters (0 when absent) around `payload`.
pub fn get_response(props: &[(String, String)], payload: Bytes) -> Result<EchoResponse, WireError> {
    Ok(EchoResponse {
        payload,
        received_messages: get_num(props, RECV_MSGS)?.unwrap_or(0),
        received_bytes: get_num(props, RECV_BYTES)?.unwrap_or(0),
    })
}

/// The encoded size of a PUBLISH packet with these parts (an upper bound within a few bytes),
/// to refuse what the broker would refuse before it is sent.
pub fn packet_len(
    topic: &str,
    payload: usize,
    props: &[(String, String)],
    response_topic: Option<&str>,
    correlation: usize,
) -> usize {
    let user: usize = props
        .iter()
        .map(|(n, v)| 1 + 2 + n.len() + 2 + v.len())
        .sum();
    let properties = user
        + response_topic.map_or(0, |t| 1 + 2 + t.len())
        + if correlation > 0 {
            1 + 2 + correlation
        } else {
            0
        };
    // Fixed header (up to 5), topic, packet id, property length (up to 4), payload.
    5 + 2 + topic.len() + 2 + 4 + properties + payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
                    MetadataValue::Ascii(s) => md.append_ascii(k, s).expect("valid ascii entry"),
                    MetadataValue::Binary(b) => md.append_binary(k, b).expect("valid binary entry"),
                }
            }
            md
        })
    }

    proptest! {
        #[test]
        fn text_round_trips_as_printable_ascii(s in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            let e = encode_text(&s);
            prop_assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{e:?}");
            prop_assert_eq!(decode_text(&e).unwrap(), s);
        }

        #[test]
        fn metadata_and_trailers_round_trip_in_order(md in metadata(), tr in metadata()) {
            let mut p = Props::new();
            put_metadata(&mut p, &md);
            put_trailers(&mut p, &tr);
            prop_assert_eq!(get_metadata(&p).unwrap(), md);
            prop_assert_eq!(get_trailers(&p).unwrap(), tr);
        }

        #[test]
        fn status_round_trips(code in 0u32..17, message in "\\PC{0,40}", md in metadata()) {
            let s = Status::new(Code::from_u32(code), message).with_metadata(md);
            let mut p = Props::new();
            put_status(&mut p, &s);
            prop_assert_eq!(get_status(&p).unwrap(), s);
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
            let mut p = Props::new();
            put_directives(&mut p, &d);
            prop_assert_eq!(get_directives(&p).unwrap(), d);
        }

        #[test]
        fn garbage_properties_never_panic(
            props in proptest::collection::vec(("\\PC{0,12}|Wb-[A-Za-z:-]{1,14}", "\\PC{0,30}"), 0..6)
        ) {
            let _ = get_directives(&props);
            let _ = get_status(&props);
            let _ = get_metadata(&props);
            let _ = get_trailers(&props);
            let _ = get_timeout(&props);
            let _ = frame_of(&props);
            let _ = get_response(&props, Bytes::new());
        }
    }

    #[test]
    fn special_status_message_survives() {
        const TEXT: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let mut p = Props::new();
        put_status(&mut p, &Status::new(Code::Unknown, TEXT));
        assert_eq!(get_status(&p).unwrap().message(), TEXT);
    }

    #[test]
    fn ok_without_metadata_writes_nothing() {
        let mut p = Props::new();
        put_status(&mut p, &Status::ok());
        put_directives(&mut p, &Directives::default());
        put_response(&mut p, &EchoResponse::default());
        assert!(p.is_empty());
    }

    #[test]
    fn documented_examples_decode() {
        let p: Props = [
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
        .collect();
        let md = get_metadata(&p).unwrap();
        assert_eq!(
            md.get("x-initial-blob-bin").unwrap().as_bytes(),
            &[0x00, 0x0a, 0x0b, 0xff, 0xfe, 0x80]
        );
        assert_eq!(md.get_ascii("x-initial-ascii"), Some("value 1"));
        assert_eq!(md.len(), 2, "reserved names are not metadata");
        let tr = get_trailers(&p).unwrap();
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
    }

    #[test]
    fn invalid_metadata_names_and_values_are_refused() {
        let one = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert!(
            get_metadata(&one("Content-Type", "x")).is_err(),
            "upper case key"
        );
        assert!(get_metadata(&one("x-bin", "not base64!")).is_err());
        assert!(
            get_metadata(&one("x", "tab\there")).is_err(),
            "not printable ASCII"
        );
        assert!(get_status(&one(STATUS, "17")).is_err());
        assert!(frame_of(&one(FRAME, "nope")).is_err());
        assert!(get_required(&[], SEQ).is_err());
    }

    #[test]
    fn packet_len_bounds_the_encoding() {
        let p: Props = vec![("k".into(), "v".into())];
        // 5 fixed + 2+5 topic + 2 id + 4 props len + (1+2+1+2+1) user + (1+2+3) rt + (1+2+8) cd + 10
        assert_eq!(
            packet_len("a/b/c", 10, &p, Some("r/1"), 8),
            5 + 7 + 2 + 4 + 7 + 6 + 11 + 10
        );
    }
}
