//! The codec comparison behind `benches/benches/codecs.rs`: one unary call's request and
//! response — metadata, directives, payload (and the response's counters and final status) —
//! in each wire format a wirebench user weighs, with the same logical content in every one:
//!
//! - **rkyv frames** — the `tcp`/`quic` transports' own codec
//!   ([`wirebench_wire::codec`]): a request is an OPEN frame (method, timeout,
//!   metadata) and a MESSAGE frame (directives + payload); a response is HEADERS (metadata),
//!   RESPONSE (counters + payload) and STATUS. Headers are rkyv archives, each frame has a
//!   12-byte prefix, and the payload is *not* part of the archive: it follows its header and is
//!   split off the read buffer without a copy; payloads over
//!   [`COPY_THRESHOLD`](wirebench_wire::codec::COPY_THRESHOLD) are handed to the
//!   socket by reference (vectored write) instead of being copied. Decoded two ways: headers
//!   validated and read in place (what the transport does), or validated and fully
//!   deserialized into owned values.
//! - **prost** — the gRPC transport's generated `EchoRequest`/`EchoResponse`
//!   (`transports/proto/echo.proto`) inside a small envelope ([`PbCall`], [`PbAnswer`]) that
//!   carries what gRPC sends as HTTP/2 headers and trailers (method, timeout, metadata,
//!   status). Payload fields are `Bytes`, so decoding from a `Bytes` slices them without a copy.
//! - **serde_json** and **postcard** — serde mirror structs ([`SerdeCall`], [`SerdeAnswer`]);
//!   byte fields are [`Blob`]s: base64 strings in JSON (as proto3's JSON mapping and gRPC's
//!   `-bin` metadata do), raw length-prefixed bytes in postcard, borrowed from the input when
//!   decoding (zero copy), like the other codecs' payloads.
//!
//! Every encoder writes into a buffer it reuses across calls (the rkyv `WriteBatch`, a `Vec`
//! for the others), starting from its own prebuilt message: converting from the model types is
//! not measured for anyone.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IoSlice;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wirebench_core::message::pattern;
use wirebench_core::{Code, Directives, EchoRequest, EchoResponse, Metadata, Method, Status};
use wirebench_grpc::proto;
use wirebench_wire::codec::{
    DecodeError, Decoded, Decoder, FLAG_END_STREAM, Frame, MetadataHeader, NO_TIMEOUT, OpenHeader,
    OutHeader, Payload, RequestHeader, ResponseHeader, StatusHeader, WireEntry, WriteBatch,
};

/// Payload sizes measured, with their labels.
pub const SIZES: [(usize, &str); 4] = [
    (0, "0B"),
    (1024, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

/// The codecs compared, as named in benchmark ids and tables.
pub const CODECS: [&str; 4] = ["rkyv_frames", "prost", "serde_json", "postcard"];

/// Largest payload any frame may carry in these benches (the decoder's limit).
const MAX_PAYLOAD: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// The logical content
// ---------------------------------------------------------------------------------------------

/// One unary call, format-neutral: what every codec must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The method.
    pub method: Method,
    /// The call's timeout.
    pub timeout: Option<Duration>,
    /// Request metadata (ASCII and binary entries).
    pub request_metadata: Metadata,
    /// The request (payload + directives).
    pub request: EchoRequest,
    /// Response metadata.
    pub response_metadata: Metadata,
    /// The response (payload + counters).
    pub response: EchoResponse,
    /// The final status.
    pub status: Status,
}

impl Sample {
    /// A typical echo call with a `payload_len`-byte payload each way: a bearer token, a trace
    /// id echoed back, a binary entry, a 1 s timeout and a deadline report asked for.
    pub fn new(payload_len: usize) -> Sample {
        let mut md = Metadata::new();
        let ok = "static metadata is valid";
        md.append_ascii("authorization", "Bearer 0123456789abcdef0123456789abcdef")
            .expect(ok);
        md.append_ascii("x-initial-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
            .expect(ok);
        md.append_binary("x-request-bin", (0u8..16).collect::<Vec<u8>>())
            .expect(ok);
        let mut response_md = Metadata::new();
        response_md
            .append_ascii("x-initial-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
            .expect(ok);
        Sample {
            method: Method::Unary,
            timeout: Some(Duration::from_secs(1)),
            request_metadata: md,
            request: EchoRequest::new(pattern(payload_len)).with_directives(Directives {
                report_deadline: true,
                ..Directives::default()
            }),
            response_metadata: response_md,
            response: EchoResponse::new(pattern(payload_len)),
            status: Status::ok(),
        }
    }

    fn timeout_us(&self) -> u64 {
        self.timeout.map_or(NO_TIMEOUT, |t| {
            u64::try_from(t.as_micros()).unwrap_or(u64::MAX)
        })
    }
}

/// What a decoded request carried, in one shape for every codec (for checks, not timed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContent {
    /// Method number.
    pub method: u32,
    /// Timeout in µs, [`NO_TIMEOUT`] for none.
    pub timeout_us: u64,
    /// Metadata entries.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// The directives.
    pub directives: Directives,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What a decoded response carried, in one shape for every codec (for checks, not timed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerContent {
    /// Metadata entries.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// Counter.
    pub received_messages: u64,
    /// Counter.
    pub received_bytes: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// Status code.
    pub code: u32,
    /// Status message.
    pub message: String,
}

fn entries(md: &Metadata) -> Vec<(String, Vec<u8>)> {
    md.iter()
        .map(|e| (e.key().to_owned(), e.value().as_bytes().to_vec()))
        .collect()
}

impl Sample {
    /// The request's content.
    pub fn call_content(&self) -> CallContent {
        CallContent {
            method: u32::from(self.method.as_u8()),
            timeout_us: self.timeout_us(),
            metadata: entries(&self.request_metadata),
            directives: self.request.directives.clone(),
            payload: self.request.payload.to_vec(),
        }
    }

    /// The response's content.
    pub fn answer_content(&self) -> AnswerContent {
        AnswerContent {
            metadata: entries(&self.response_metadata),
            received_messages: self.response.received_messages,
            received_bytes: self.response.received_bytes,
            payload: self.response.payload.to_vec(),
            code: self.status.code().as_u32(),
            message: self.status.message().to_owned(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// rkyv frames (the tcp transport's codec)
// ---------------------------------------------------------------------------------------------

/// The `tcp` transport's frames for one call, prebuilt headers and a reused write batch.
#[derive(Debug)]
pub struct RkyvFrames {
    open: OpenHeader,
    request: RequestHeader,
    request_payload: Bytes,
    headers: MetadataHeader,
    response: ResponseHeader,
    response_payload: Bytes,
    status: StatusHeader,
    batch: WriteBatch,
}

/// A request's frames with their headers deserialized into owned values.
#[derive(Debug)]
pub struct RkyvCall {
    /// OPEN's header.
    pub open: OpenHeader,
    /// MESSAGE's header.
    pub request: RequestHeader,
    /// The payload (split off the read buffer).
    pub payload: Bytes,
}

/// A response's frames with their headers deserialized into owned values.
#[derive(Debug)]
pub struct RkyvAnswer {
    /// HEADERS' header.
    pub headers: MetadataHeader,
    /// RESPONSE's header.
    pub response: ResponseHeader,
    /// The payload.
    pub payload: Bytes,
    /// STATUS' header.
    pub status: StatusHeader,
}

/// Why a frame sequence did not decode as expected.
/// Why a sample's frames did not decode: each names a bug in the benchmark or the codec,
/// never a condition of the data.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The wire codec refused the bytes.
    #[error("decoding: {0}")]
    Decode(#[from] DecodeError),
    /// The buffer ended inside a frame.
    #[error("the buffer ends {0} bytes short of a frame")]
    Short(usize),
    /// A payload was over the decoder's limit.
    #[error("payload of {0} bytes over the limit")]
    TooLarge(u32),
    /// A frame of another kind came where this one belongs.
    #[error("unexpected frame sequence: expected {0}")]
    Expected(&'static str),
    /// rkyv could not deserialize a validated header.
    #[error("deserializing a header: {0}")]
    Rkyv(#[from] rkyv::rancor::Error),
}

fn next_frame<'a>(decoder: &'a mut Decoder, buf: &mut BytesMut) -> Result<Frame<'a>, FrameError> {
    match decoder.decode(buf)? {
        Decoded::Frame(f) => Ok(f),
        Decoded::NeedMore(n) => Err(FrameError::Short(n)),
    }
}

fn payload_bytes(p: Payload) -> Result<Bytes, FrameError> {
    match p {
        Payload::Bytes(b) => Ok(b),
        Payload::TooLarge(n) => Err(FrameError::TooLarge(n)),
    }
}

impl RkyvFrames {
    /// The frames of `sample`.
    pub fn new(sample: &Sample) -> RkyvFrames {
        RkyvFrames {
            open: OpenHeader::new(
                sample.method.as_u8(),
                sample.timeout,
                &sample.request_metadata,
            ),
            request: RequestHeader::from(&sample.request.directives),
            request_payload: sample.request.payload.clone(),
            headers: MetadataHeader::of(&sample.response_metadata),
            response: ResponseHeader::of(&sample.response),
            response_payload: sample.response.payload.clone(),
            status: StatusHeader::of(&sample.status),
            batch: WriteBatch::new(),
        }
    }

    fn queue_request(&mut self) {
        let none = Bytes::new();
        let b = &mut self.batch;
        let ok = "bench frames are encodable";
        b.push(1, 0, OutHeader::Open(&self.open), &none).expect(ok);
        b.push(
            1,
            FLAG_END_STREAM,
            OutHeader::Message(&self.request),
            &self.request_payload,
        )
        .expect(ok);
    }

    fn queue_response(&mut self) {
        let none = Bytes::new();
        let b = &mut self.batch;
        let ok = "bench frames are encodable";
        b.push(1, 0, OutHeader::Headers(&self.headers), &none)
            .expect(ok);
        b.push(
            1,
            0,
            OutHeader::Response(&self.response),
            &self.response_payload,
        )
        .expect(ok);
        b.push(1, 0, OutHeader::Status(&self.status), &none)
            .expect(ok);
    }

    /// Hands the queued frames over as the socket would get them (`io_slices`), then clears
    /// the batch; returns the bytes on the wire.
    fn flush(&mut self) -> usize {
        let n = self.batch.len();
        let mut slices = [IoSlice::new(&[]); 8];
        let k = self.batch.io_slices(&mut slices);
        std::hint::black_box(&slices[..k]);
        self.batch.advance(n);
        n
    }

    /// Encodes the request (OPEN + MESSAGE) into the reused batch; returns its wire size.
    pub fn encode_request(&mut self) -> usize {
        self.queue_request();
        self.flush()
    }

    /// Encodes the response (HEADERS + RESPONSE + STATUS); returns its wire size.
    pub fn encode_response(&mut self) -> usize {
        self.queue_response();
        self.flush()
    }

    /// The request's bytes on the wire, contiguous.
    pub fn request_wire(&mut self) -> Vec<u8> {
        self.queue_request();
        let v = self.batch.to_vec();
        self.flush();
        v
    }

    /// The response's bytes on the wire, contiguous.
    pub fn response_wire(&mut self) -> Vec<u8> {
        self.queue_response();
        let v = self.batch.to_vec();
        self.flush();
        v
    }

    /// A decoder for these frames (reused across calls, as a connection's is).
    pub fn decoder() -> Decoder {
        Decoder::frames_only(MAX_PAYLOAD)
    }

    /// Decodes a request reading its headers in place (validated, never deserialized) — what
    /// the transport's server does — and folds every field into a digest so each is read.
    pub fn access_request(
        decoder: &mut Decoder,
        buf: &mut BytesMut,
    ) -> Result<(u64, Bytes), FrameError> {
        let mut digest = match next_frame(decoder, buf)? {
            Frame::Open(_, h) => {
                let mut d = u64::from(h.method) ^ h.timeout_us.to_native();
                for e in h.metadata.iter() {
                    d = d
                        .wrapping_mul(31)
                        .wrapping_add(digest_entry(e.key.as_str(), e.value.as_slice()));
                }
                d
            }
            _ => return Err(FrameError::Expected("OPEN")),
        };
        match next_frame(decoder, buf)? {
            Frame::Message {
                header, payload, ..
            } => {
                digest = digest
                    .wrapping_mul(31)
                    .wrapping_add(header.delay_us.to_native())
                    .wrapping_add(header.interval_us.to_native())
                    .wrapping_add(u64::from(header.response_size.to_native()))
                    .wrapping_add(u64::from(header.response_count.to_native()))
                    .wrapping_add(u64::from(header.fail_after.to_native()))
                    .wrapping_add(header.response_sizes.len() as u64)
                    .wrapping_add(header.fail_message.len() as u64)
                    .wrapping_add(u64::from(header.fail_code))
                    .wrapping_add(u64::from(header.report_deadline));
                Ok((digest, payload_bytes(payload)?))
            }
            _ => Err(FrameError::Expected("MESSAGE")),
        }
    }

    /// Decodes a request and deserializes its headers into owned values.
    pub fn deserialize_request(
        decoder: &mut Decoder,
        buf: &mut BytesMut,
    ) -> Result<RkyvCall, FrameError> {
        let open = match next_frame(decoder, buf)? {
            Frame::Open(_, h) => rkyv::deserialize::<OpenHeader, rkyv::rancor::Error>(h)?,
            _ => return Err(FrameError::Expected("OPEN")),
        };
        match next_frame(decoder, buf)? {
            Frame::Message {
                header, payload, ..
            } => Ok(RkyvCall {
                open,
                request: rkyv::deserialize::<RequestHeader, rkyv::rancor::Error>(header)?,
                payload: payload_bytes(payload)?,
            }),
            _ => Err(FrameError::Expected("MESSAGE")),
        }
    }

    /// Decodes a response reading its headers in place; returns a digest of every field.
    pub fn access_response(
        decoder: &mut Decoder,
        buf: &mut BytesMut,
    ) -> Result<(u64, Bytes), FrameError> {
        let mut digest = match next_frame(decoder, buf)? {
            Frame::Headers(_, h) => h.entries.iter().fold(0u64, |d, e| {
                d.wrapping_mul(31)
                    .wrapping_add(digest_entry(e.key.as_str(), e.value.as_slice()))
            }),
            _ => return Err(FrameError::Expected("HEADERS")),
        };
        let payload = match next_frame(decoder, buf)? {
            Frame::Response {
                header, payload, ..
            } => {
                digest = digest
                    .wrapping_add(header.received_messages.to_native())
                    .wrapping_add(header.received_bytes.to_native());
                payload_bytes(payload)?
            }
            _ => return Err(FrameError::Expected("RESPONSE")),
        };
        match next_frame(decoder, buf)? {
            Frame::Status(_, h) => {
                digest = digest
                    .wrapping_add(u64::from(h.code.to_native()))
                    .wrapping_add(h.message.len() as u64)
                    .wrapping_add(h.trailers.len() as u64);
                Ok((digest, payload))
            }
            _ => Err(FrameError::Expected("STATUS")),
        }
    }

    /// Decodes a response and deserializes its headers into owned values.
    pub fn deserialize_response(
        decoder: &mut Decoder,
        buf: &mut BytesMut,
    ) -> Result<RkyvAnswer, FrameError> {
        let headers = match next_frame(decoder, buf)? {
            Frame::Headers(_, h) => rkyv::deserialize::<MetadataHeader, rkyv::rancor::Error>(h)?,
            _ => return Err(FrameError::Expected("HEADERS")),
        };
        let (response, payload) = match next_frame(decoder, buf)? {
            Frame::Response {
                header, payload, ..
            } => (
                rkyv::deserialize::<ResponseHeader, rkyv::rancor::Error>(header)?,
                payload_bytes(payload)?,
            ),
            _ => return Err(FrameError::Expected("RESPONSE")),
        };
        let status = match next_frame(decoder, buf)? {
            Frame::Status(_, h) => rkyv::deserialize::<StatusHeader, rkyv::rancor::Error>(h)?,
            _ => return Err(FrameError::Expected("STATUS")),
        };
        Ok(RkyvAnswer {
            headers,
            response,
            payload,
            status,
        })
    }
}

fn digest_entry(key: &str, value: &[u8]) -> u64 {
    ((key.len() as u64) << 32)
        | ((value.len() as u64) ^ u64::from(value.first().copied().unwrap_or(0)))
}

fn wire_entry_pairs(entries: &[WireEntry]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

impl RkyvCall {
    /// The content (for checks).
    pub fn content(&self) -> CallContent {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(
            &rkyv::to_bytes::<rkyv::rancor::Error>(&self.request).expect("serializable"),
        );
        let archived = rkyv::access::<
            wirebench_wire::codec::ArchivedRequestHeader,
            rkyv::rancor::Error,
        >(&aligned)
        .expect("valid");
        CallContent {
            method: u32::from(self.open.method),
            timeout_us: self.open.timeout_us,
            metadata: wire_entry_pairs(&self.open.metadata),
            directives: archived.directives(),
            payload: self.payload.to_vec(),
        }
    }
}

impl RkyvAnswer {
    /// The content (for checks).
    pub fn content(&self) -> AnswerContent {
        AnswerContent {
            metadata: wire_entry_pairs(&self.headers.entries),
            received_messages: self.response.received_messages,
            received_bytes: self.response.received_bytes,
            payload: self.payload.to_vec(),
            code: self.status.code,
            message: self.status.message.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// prost (the grpc transport's generated types)
// ---------------------------------------------------------------------------------------------

/// One metadata entry (what gRPC carries as an HTTP/2 header).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbEntry {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value's bytes.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// The request envelope: what gRPC sends as the `:path`, `grpc-timeout` and metadata headers,
/// around the generated `EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbCall {
    /// Method number.
    #[prost(uint32, tag = "1")]
    pub method: u32,
    /// Timeout in µs; absent for none.
    #[prost(uint64, optional, tag = "2")]
    pub timeout_us: Option<u64>,
    /// Metadata.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<PbEntry>,
    /// The generated request message.
    #[prost(message, optional, tag = "4")]
    pub request: Option<proto::EchoRequest>,
}

/// The response envelope: initial metadata, the generated `EchoResponse`, and what gRPC sends
/// as the `grpc-status`/`grpc-message` trailers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbAnswer {
    /// Metadata.
    #[prost(message, repeated, tag = "1")]
    pub metadata: Vec<PbEntry>,
    /// The generated response message.
    #[prost(message, optional, tag = "2")]
    pub response: Option<proto::EchoResponse>,
    /// Status code.
    #[prost(uint32, tag = "3")]
    pub code: u32,
    /// Status message.
    #[prost(string, tag = "4")]
    pub message: String,
}

fn pb_entries(md: &Metadata) -> Vec<PbEntry> {
    md.iter()
        .map(|e| PbEntry {
            key: e.key().to_owned(),
            value: Bytes::copy_from_slice(e.value().as_bytes()),
        })
        .collect()
}

fn pb_pairs(entries: &[PbEntry]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.to_vec()))
        .collect()
}

impl PbCall {
    /// The envelope of `sample`'s request (as the grpc transport builds its message).
    pub fn of(sample: &Sample) -> PbCall {
        let d = &sample.request.directives;
        PbCall {
            method: u32::from(sample.method.as_u8()),
            timeout_us: sample.timeout.map(micros),
            metadata: pb_entries(&sample.request_metadata),
            request: Some(proto::EchoRequest {
                payload: sample.request.payload.clone(),
                directives: (!d.is_plain()).then(|| proto::Directives {
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
                }),
            }),
        }
    }

    /// The content (for checks).
    pub fn content(&self) -> CallContent {
        let request = self.request.clone().unwrap_or_default();
        let directives = request
            .directives
            .map_or_else(Directives::default, |d| Directives {
                response_size: d.response_size,
                response_count: d.response_count,
                response_sizes: d.response_sizes,
                response_interval: Duration::from_micros(d.response_interval_us),
                delay: Duration::from_micros(d.delay_us),
                fail: d.fail.map(|f| wirebench_core::message::FailWith {
                    code: Code::from_u32(f.code),
                    message: f.message,
                    after: f.after,
                }),
                report_deadline: d.report_deadline,
            });
        CallContent {
            method: self.method,
            timeout_us: self.timeout_us.unwrap_or(NO_TIMEOUT),
            metadata: pb_pairs(&self.metadata),
            directives,
            payload: request.payload.to_vec(),
        }
    }
}

impl PbAnswer {
    /// The envelope of `sample`'s response.
    pub fn of(sample: &Sample) -> PbAnswer {
        PbAnswer {
            metadata: pb_entries(&sample.response_metadata),
            response: Some(proto::EchoResponse {
                payload: sample.response.payload.clone(),
                received_messages: sample.response.received_messages,
                received_bytes: sample.response.received_bytes,
            }),
            code: sample.status.code().as_u32(),
            message: sample.status.message().to_owned(),
        }
    }

    /// The content (for checks).
    pub fn content(&self) -> AnswerContent {
        let response = self.response.clone().unwrap_or_default();
        AnswerContent {
            metadata: pb_pairs(&self.metadata),
            received_messages: response.received_messages,
            received_bytes: response.received_bytes,
            payload: response.payload.to_vec(),
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Encodes a prost message into a reused buffer; returns its length.
pub fn prost_encode<M: prost::Message>(msg: &M, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    msg.encode(buf).expect("a Vec grows as needed");
    buf.len()
}

/// Decodes a prost message from `Bytes` (byte fields are sliced out of it, not copied).
pub fn prost_decode<M: prost::Message + Default>(wire: Bytes) -> Result<M, prost::DecodeError> {
    M::decode(wire)
}

// ---------------------------------------------------------------------------------------------
// serde mirrors (serde_json, postcard)
// ---------------------------------------------------------------------------------------------

/// Bytes in a serde format: a base64 string in human-readable formats (JSON), raw bytes in
/// binary ones; borrowed from the input when the format allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob<'a>(pub Cow<'a, [u8]>);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

struct BlobVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for BlobVisitor<'a> {
    type Value = Blob<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes, or a base64 string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Blob<'a>, E> {
        Ok(Blob(Cow::Borrowed(v)))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob<'a>, E> {
        Ok(Blob(Cow::Owned(v.to_vec())))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Blob<'a>, E> {
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map(|b| Blob(Cow::Owned(b)))
            .map_err(E::custom)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob<'a>, D::Error> {
        let visitor = BlobVisitor(std::marker::PhantomData);
        if d.is_human_readable() {
            d.deserialize_str(visitor)
        } else {
            d.deserialize_bytes(visitor)
        }
    }
}

/// One metadata entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerdeEntry<'a> {
    /// The key.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// The value.
    #[serde(borrow)]
    pub value: Blob<'a>,
}

/// Makes the server fail the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerdeFail<'a> {
    /// Status code.
    pub code: u32,
    /// Status message.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
    /// Fail after this many messages.
    pub after: u32,
}

/// The directives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerdeDirectives<'a> {
    /// Response payload size.
    pub response_size: Option<u32>,
    /// Number of responses.
    pub response_count: Option<u32>,
    /// Explicit response sizes.
    pub response_sizes: Vec<u32>,
    /// Pause before each streamed response, µs.
    pub response_interval_us: u64,
    /// Pause before answering, µs.
    pub delay_us: u64,
    /// Fail the call.
    #[serde(borrow)]
    pub fail: Option<SerdeFail<'a>>,
    /// Report the deadline budget.
    pub report_deadline: bool,
}

/// A request: method, timeout, metadata, directives, payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerdeCall<'a> {
    /// Method number.
    pub method: u8,
    /// Timeout in µs.
    pub timeout_us: Option<u64>,
    /// Metadata.
    #[serde(borrow)]
    pub metadata: Vec<SerdeEntry<'a>>,
    /// Directives.
    #[serde(borrow)]
    pub directives: SerdeDirectives<'a>,
    /// Payload.
    #[serde(borrow)]
    pub payload: Blob<'a>,
}

/// A response: metadata, counters, payload, status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerdeAnswer<'a> {
    /// Metadata.
    #[serde(borrow)]
    pub metadata: Vec<SerdeEntry<'a>>,
    /// Counter.
    pub received_messages: u64,
    /// Counter.
    pub received_bytes: u64,
    /// Payload.
    #[serde(borrow)]
    pub payload: Blob<'a>,
    /// Status code.
    pub code: u32,
    /// Status message.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

fn serde_entries(md: &Metadata) -> Vec<SerdeEntry<'_>> {
    md.iter()
        .map(|e| SerdeEntry {
            key: Cow::Borrowed(e.key()),
            value: Blob(Cow::Borrowed(e.value().as_bytes())),
        })
        .collect()
}

fn serde_pairs(entries: &[SerdeEntry<'_>]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.key.clone().into_owned(), e.value.0.to_vec()))
        .collect()
}

impl<'a> SerdeCall<'a> {
    /// The mirror of `sample`'s request, borrowing from it.
    pub fn of(sample: &'a Sample) -> SerdeCall<'a> {
        let d = &sample.request.directives;
        SerdeCall {
            method: sample.method.as_u8(),
            timeout_us: sample.timeout.map(micros),
            metadata: serde_entries(&sample.request_metadata),
            directives: SerdeDirectives {
                response_size: d.response_size,
                response_count: d.response_count,
                response_sizes: d.response_sizes.clone(),
                response_interval_us: micros(d.response_interval),
                delay_us: micros(d.delay),
                fail: d.fail.as_ref().map(|f| SerdeFail {
                    code: f.code.as_u32(),
                    message: Cow::Borrowed(&f.message),
                    after: f.after,
                }),
                report_deadline: d.report_deadline,
            },
            payload: Blob(Cow::Borrowed(&sample.request.payload)),
        }
    }

    /// The content (for checks).
    pub fn content(&self) -> CallContent {
        let d = &self.directives;
        CallContent {
            method: u32::from(self.method),
            timeout_us: self.timeout_us.unwrap_or(NO_TIMEOUT),
            metadata: serde_pairs(&self.metadata),
            directives: Directives {
                response_size: d.response_size,
                response_count: d.response_count,
                response_sizes: d.response_sizes.clone(),
                response_interval: Duration::from_micros(d.response_interval_us),
                delay: Duration::from_micros(d.delay_us),
                fail: d.fail.as_ref().map(|f| wirebench_core::message::FailWith {
                    code: Code::from_u32(f.code),
                    message: f.message.clone().into_owned(),
                    after: f.after,
                }),
                report_deadline: d.report_deadline,
            },
            payload: self.payload.0.to_vec(),
        }
    }
}

impl<'a> SerdeAnswer<'a> {
    /// The mirror of `sample`'s response, borrowing from it.
    pub fn of(sample: &'a Sample) -> SerdeAnswer<'a> {
        SerdeAnswer {
            metadata: serde_entries(&sample.response_metadata),
            received_messages: sample.response.received_messages,
            received_bytes: sample.response.received_bytes,
            payload: Blob(Cow::Borrowed(&sample.response.payload)),
            code: sample.status.code().as_u32(),
            message: Cow::Borrowed(sample.status.message()),
        }
    }

    /// The content (for checks).
    pub fn content(&self) -> AnswerContent {
        AnswerContent {
            metadata: serde_pairs(&self.metadata),
            received_messages: self.received_messages,
            received_bytes: self.received_bytes,
            payload: self.payload.0.to_vec(),
            code: self.code,
            message: self.message.clone().into_owned(),
        }
    }
}

/// Encodes into a reused buffer as JSON; returns the length.
pub fn json_encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    serde_json::to_writer(&mut *buf, msg).expect("the mirrors serialize");
    buf.len()
}

/// Encodes into a reused buffer with postcard; returns the length.
pub fn postcard_encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    *buf = postcard::to_extend(msg, std::mem::take(buf)).expect("the mirrors serialize");
    buf.len()
}

// ---------------------------------------------------------------------------------------------
// Bytes on the wire
// ---------------------------------------------------------------------------------------------

/// Encoded sizes of one call's request and response in one codec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireSize {
    /// Codec name (one of [`CODECS`]).
    pub codec: &'static str,
    /// Payload size label.
    pub size: &'static str,
    /// Payload bytes (each way).
    pub payload: usize,
    /// Request bytes.
    pub request: usize,
    /// Response bytes.
    pub response: usize,
}

/// The request and response of `sample` encoded by `codec` (contiguous bytes).
pub fn encode_pair(codec: &str, sample: &Sample) -> (Vec<u8>, Vec<u8>) {
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    match codec {
        "rkyv_frames" => {
            let mut f = RkyvFrames::new(sample);
            req = f.request_wire();
            resp = f.response_wire();
        }
        "prost" => {
            prost_encode(&PbCall::of(sample), &mut req);
            prost_encode(&PbAnswer::of(sample), &mut resp);
        }
        "serde_json" => {
            json_encode(&SerdeCall::of(sample), &mut req);
            json_encode(&SerdeAnswer::of(sample), &mut resp);
        }
        "postcard" => {
            postcard_encode(&SerdeCall::of(sample), &mut req);
            postcard_encode(&SerdeAnswer::of(sample), &mut resp);
        }
        other => panic!("unknown codec {other}"),
    }
    (req, resp)
}

/// Bytes on the wire per codec and payload size.
pub fn wire_sizes() -> Vec<WireSize> {
    let mut out = Vec::new();
    for (payload, size) in SIZES {
        let sample = Sample::new(payload);
        for codec in CODECS {
            let (req, resp) = encode_pair(codec, &sample);
            out.push(WireSize {
                codec,
                size,
                payload,
                request: req.len(),
                response: resp.len(),
            });
        }
    }
    out
}

/// The sizes as a Markdown table: bytes on the wire, and overhead over the payload.
pub fn wire_size_table() -> String {
    let mut s = String::from(
        "| codec | payload | request B | response B | overhead (req + resp − 2 × payload) |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for w in wire_sizes() {
        let overhead = (w.request + w.response) as i64 - 2 * w.payload as i64;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            w.codec, w.size, w.request, w.response, overhead
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &str, sample: &Sample) -> (CallContent, AnswerContent) {
        let (req, resp) = encode_pair(codec, sample);
        match codec {
            "rkyv_frames" => {
                let mut d = RkyvFrames::decoder();
                let mut b = BytesMut::from(&req[..]);
                let call = RkyvFrames::deserialize_request(&mut d, &mut b).unwrap();
                assert!(b.is_empty());
                let mut b = BytesMut::from(&resp[..]);
                let answer = RkyvFrames::deserialize_response(&mut d, &mut b).unwrap();
                assert!(b.is_empty());
                // The in-place readers agree on the payloads.
                let mut b = BytesMut::from(&req[..]);
                let (_, p) = RkyvFrames::access_request(&mut d, &mut b).unwrap();
                assert_eq!(p, sample.request.payload);
                let mut b = BytesMut::from(&resp[..]);
                let (_, p) = RkyvFrames::access_response(&mut d, &mut b).unwrap();
                assert_eq!(p, sample.response.payload);
                (call.content(), answer.content())
            }
            "prost" => (
                prost_decode::<PbCall>(Bytes::from(req)).unwrap().content(),
                prost_decode::<PbAnswer>(Bytes::from(resp))
                    .unwrap()
                    .content(),
            ),
            "serde_json" => (
                serde_json::from_slice::<SerdeCall<'_>>(&req)
                    .unwrap()
                    .content(),
                serde_json::from_slice::<SerdeAnswer<'_>>(&resp)
                    .unwrap()
                    .content(),
            ),
            "postcard" => {
                let call = postcard::from_bytes::<SerdeCall<'_>>(&req).unwrap();
                assert!(
                    matches!(call.payload.0, Cow::Borrowed(_)),
                    "postcard borrows"
                );
                (
                    call.content(),
                    postcard::from_bytes::<SerdeAnswer<'_>>(&resp)
                        .unwrap()
                        .content(),
                )
            }
            other => panic!("unknown codec {other}"),
        }
    }

    #[test]
    fn every_codec_carries_the_same_content() {
        for (len, _) in SIZES {
            let sample = Sample::new(len);
            for codec in CODECS {
                let (call, answer) = decode_all(codec, &sample);
                assert_eq!(call, sample.call_content(), "{codec} request, {len} B");
                assert_eq!(answer, sample.answer_content(), "{codec} response, {len} B");
            }
        }
    }

    #[test]
    fn prost_decode_slices_the_payload() {
        let sample = Sample::new(64 << 10);
        let (req, _) = encode_pair("prost", &sample);
        let wire = Bytes::from(req);
        let call = prost_decode::<PbCall>(wire.clone()).unwrap();
        let payload = call.request.unwrap().payload;
        let start = payload.as_ptr() as usize - wire.as_ptr() as usize;
        assert!(start < wire.len(), "payload points into the wire buffer");
    }

    /// Prints the bytes-on-the-wire table (`cargo test -p wirebench-benches -- --nocapture
    /// wire_sizes`).
    #[test]
    fn wire_sizes_table_prints() {
        let table = wire_size_table();
        println!("{table}");
        let sizes = wire_sizes();
        for w in &sizes {
            assert!(w.request >= w.payload && w.response >= w.payload, "{w:?}");
        }
    }
}
