//! The sans-IO frame codec of the `tcp` transport (reused by `quic`): pure functions over
//! buffers, no sockets. See the [`tcp`](super) module docs for the wire format.

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use thiserror::Error;

use wirebench_core::message::{Directives, EchoRequest, EchoResponse, FailWith};
use wirebench_core::metadata::{Metadata, MetadataError};
use wirebench_core::status::{Code, Status};

/// The 8 bytes a client sends before its first frame: `WBRPC/1\n`.
pub const PREFACE: [u8; 8] = *b"WBRPC/1\n";
/// Length of the fixed frame prefix.
pub const PREFIX_LEN: usize = 12;
/// Largest header (the prefix's `header_len` is a u16).
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;

/// `flags` bit on MESSAGE: the client half-closes after this message.
pub const FLAG_END_STREAM: u8 = 0x01;

/// Sentinel for "no deadline" in `OpenHeader::timeout_us`.
pub const NO_TIMEOUT: u64 = u64::MAX;
/// Sentinel for "echo the payload" / "one response" in `RequestHeader`.
pub const UNSET_U32: u32 = u32::MAX;

/// Frame kinds (the prefix's `kind` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → server: starts a call. Header [`OpenHeader`].
    Open = 0x01,
    /// Client → server: one request. Header [`RequestHeader`], payload = request payload.
    Message = 0x02,
    /// Client → server: no more requests. No header.
    HalfClose = 0x03,
    /// Client → server: the client cancelled the call. No header.
    Cancel = 0x04,
    /// Server → client: initial metadata. Header [`MetadataHeader`].
    Headers = 0x11,
    /// Server → client: one response. Header [`ResponseHeader`], payload = response payload.
    Response = 0x12,
    /// Server → client: the call's final status. Header [`StatusHeader`].
    Status = 0x13,
    /// Either way, stream 0: the connection is being closed because of an error.
    /// Header [`StatusHeader`].
    GoAway = 0x20,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Open,
            0x02 => Kind::Message,
            0x03 => Kind::HalfClose,
            0x04 => Kind::Cancel,
            0x11 => Kind::Headers,
            0x12 => Kind::Response,
            0x13 => Kind::Status,
            0x20 => Kind::GoAway,
            _ => return None,
        })
    }

    /// Whether frames of this kind carry a payload.
    pub fn has_payload(self) -> bool {
        matches!(self, Kind::Message | Kind::Response)
    }

    fn has_header(self) -> bool {
        !matches!(self, Kind::HalfClose | Kind::Cancel)
    }
}

/// One metadata entry on the wire; the key decides the kind (`-bin` = binary).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WireEntry {
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
}

/// OPEN's header.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OpenHeader {
    /// The call's timeout in microseconds, counted from when the server reads this frame;
    /// [`NO_TIMEOUT`] when there is none.
    pub timeout_us: u64,
    /// Request metadata.
    pub metadata: Vec<WireEntry>,
    /// The method: 0 Unary, 1 ServerStream, 2 ClientStream, 3 Bidi; anything else fails the
    /// call with `UNIMPLEMENTED`.
    pub method: u8,
}

/// MESSAGE's header: the request's directives.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RequestHeader {
    /// Delay before answering, µs.
    pub delay_us: u64,
    /// Pause before each streamed response, µs.
    pub interval_us: u64,
    /// Response payload size; [`UNSET_U32`] echoes the request payload.
    pub response_size: u32,
    /// Number of responses; [`UNSET_U32`] means one.
    pub response_count: u32,
    /// With `fail_code`: fail after this many messages.
    pub fail_after: u32,
    /// Explicit response sizes (override size and count when non-empty).
    pub response_sizes: Vec<u32>,
    /// With `fail_code`: the status message.
    pub fail_message: String,
    /// 0: do not fail; 1..=16: fail with this status code.
    pub fail_code: u8,
    /// Report the deadline budget the server saw in the trailers.
    pub report_deadline: bool,
}

/// RESPONSE's header.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResponseHeader {
    /// Client stream: request messages received; otherwise 0.
    pub received_messages: u64,
    /// Client stream: request payload bytes received; otherwise 0.
    pub received_bytes: u64,
}

/// HEADERS' header.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MetadataHeader {
    /// Initial metadata.
    pub entries: Vec<WireEntry>,
}

/// STATUS' and GOAWAY's header.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StatusHeader {
    /// gRPC status code (0 OK ... 16 UNAUTHENTICATED).
    pub code: u32,
    /// UTF-8 status message.
    pub message: String,
    /// Trailing metadata.
    pub trailers: Vec<WireEntry>,
}

/// A frame's header as given to the encoder.
#[derive(Clone, Copy, Debug)]
pub enum OutHeader<'a> {
    /// OPEN.
    Open(&'a OpenHeader),
    /// MESSAGE.
    Message(&'a RequestHeader),
    /// HALF_CLOSE.
    HalfClose,
    /// CANCEL.
    Cancel,
    /// HEADERS.
    Headers(&'a MetadataHeader),
    /// RESPONSE.
    Response(&'a ResponseHeader),
    /// STATUS.
    Status(&'a StatusHeader),
    /// GOAWAY.
    GoAway(&'a StatusHeader),
}

impl OutHeader<'_> {
    fn kind(&self) -> Kind {
        match self {
            OutHeader::Open(_) => Kind::Open,
            OutHeader::Message(_) => Kind::Message,
            OutHeader::HalfClose => Kind::HalfClose,
            OutHeader::Cancel => Kind::Cancel,
            OutHeader::Headers(_) => Kind::Headers,
            OutHeader::Response(_) => Kind::Response,
            OutHeader::Status(_) => Kind::Status,
            OutHeader::GoAway(_) => Kind::GoAway,
        }
    }
}

/// Errors encoding a frame.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The header (mostly metadata) does not fit the 64 KiB header limit.
    #[error("frame header of {0} bytes exceeds the 65535-byte limit (too much metadata?)")]
    HeaderTooLarge(usize),
    /// The payload does not fit the u32 length.
    #[error("payload of {0} bytes exceeds the 4 GiB frame limit")]
    PayloadTooLarge(usize),
    /// rkyv failed to serialize (should not happen for these types).
    #[error("serializing frame header: {0}")]
    Serialize(String),
}

/// Errors decoding bytes from the network. Each one closes the connection that sent them.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The connection did not start with [`PREFACE`].
    #[error(
        "bad connection preface {got:02x?} (expected \"WBRPC/1\\n\"): not a wirebench tcp client"
    )]
    BadPreface {
        /// The bytes received.
        got: Vec<u8>,
    },
    /// The kind byte is not a known frame kind.
    #[error("unknown frame kind 0x{kind:02x} at byte {offset}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
        /// Stream offset of the frame.
        offset: u64,
    },
    /// A frame kind that must have a header arrived without one, or the reverse.
    #[error(
        "{kind:?} frame at byte {offset} has a {len}-byte header, which its kind does not allow"
    )]
    HeaderLength {
        /// The kind.
        kind: Kind,
        /// The header length given.
        len: usize,
        /// Stream offset of the frame.
        offset: u64,
    },
    /// A frame that may not carry a payload carried one.
    #[error(
        "{kind:?} frame at byte {offset} carries a {len}-byte payload, which its kind does not allow"
    )]
    UnexpectedPayload {
        /// The kind.
        kind: Kind,
        /// The payload length.
        len: u32,
        /// Stream offset of the frame.
        offset: u64,
    },
    /// Stream id 0 on a call frame, or a non-zero id on GOAWAY.
    #[error("{kind:?} frame at byte {offset} has invalid stream id {stream_id}")]
    StreamId {
        /// The kind.
        kind: Kind,
        /// The id.
        stream_id: u32,
        /// Stream offset of the frame.
        offset: u64,
    },
    /// The rkyv header failed validation.
    #[error("invalid {kind:?} header at byte {offset}: {reason}")]
    InvalidHeader {
        /// The kind.
        kind: Kind,
        /// What rkyv's validator said.
        reason: String,
        /// Stream offset of the frame.
        offset: u64,
    },
}

/// A frame's payload: the bytes, or only its length when it exceeded the decoder's limit (the
/// bytes are then skipped without being buffered and the call fails, not the connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The payload, zero-copy out of the read buffer.
    Bytes(Bytes),
    /// Too large for the limit: its length.
    TooLarge(u32),
}

/// A decoded frame whose header is read in place from the decoder's aligned buffer.
#[derive(Debug)]
pub enum Frame<'a> {
    /// OPEN.
    Open(u32, &'a ArchivedOpenHeader),
    /// MESSAGE (`end` = half-close after it).
    Message {
        /// Stream id.
        stream_id: u32,
        /// Directives.
        header: &'a ArchivedRequestHeader,
        /// Payload.
        payload: Payload,
        /// END_STREAM flag.
        end: bool,
    },
    /// HALF_CLOSE.
    HalfClose(u32),
    /// CANCEL.
    Cancel(u32),
    /// HEADERS.
    Headers(u32, &'a ArchivedMetadataHeader),
    /// RESPONSE.
    Response {
        /// Stream id.
        stream_id: u32,
        /// Counters.
        header: &'a ArchivedResponseHeader,
        /// Payload.
        payload: Payload,
    },
    /// STATUS.
    Status(u32, &'a ArchivedStatusHeader),
    /// GOAWAY.
    GoAway(&'a ArchivedStatusHeader),
}

/// Incremental decoder: feed it the connection's bytes as they arrive.
#[derive(Debug)]
pub struct Decoder {
    max_payload: usize,
    expect_preface: bool,
    /// Payload bytes of an oversized frame still to skip.
    skipping: u64,
    /// Bytes consumed from the stream so far (for error offsets).
    offset: u64,
    /// Reused aligned copy of the current header (rkyv reads in place from here).
    aligned: AlignedVec<16>,
}

/// What [`Decoder::decode`] found.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole frame.
    Frame(Frame<'a>),
    /// At least this many more bytes are needed.
    NeedMore(usize),
}

impl Decoder {
    /// A decoder for the server side (expects the preface first).
    pub fn server(max_payload: usize) -> Decoder {
        Decoder::new(max_payload, true)
    }

    /// A decoder for the client side.
    pub fn client(max_payload: usize) -> Decoder {
        Decoder::new(max_payload, false)
    }

    /// A decoder for a byte stream that carries frames from its first byte, with no preface
    /// (one QUIC stream, whose protocol ALPN already names).
    pub fn frames_only(max_payload: usize) -> Decoder {
        Decoder::new(max_payload, false)
    }

    fn new(max_payload: usize, expect_preface: bool) -> Decoder {
        Decoder::with_buffer(max_payload, expect_preface, AlignedVec::with_capacity(256))
    }

    /// The one place a decoder's starting state is written (new and reused decoders alike).
    fn with_buffer(max_payload: usize, expect_preface: bool, aligned: AlignedVec<16>) -> Decoder {
        Decoder {
            max_payload,
            expect_preface,
            skipping: 0,
            offset: 0,
            aligned,
        }
    }

    /// A placeholder that owns no memory (to move a decoder out of a struct that is dropped).
    pub fn unallocated() -> Decoder {
        Decoder::with_buffer(0, false, AlignedVec::new())
    }

    /// Makes this decoder one for a new byte stream with no preface (the next QUIC stream),
    /// keeping its header buffer: a transport with a stream per call reuses decoders rather
    /// than allocate one per call.
    pub fn reuse_frames_only(&mut self, max_payload: usize) {
        let mut aligned = std::mem::take(&mut self.aligned);
        aligned.clear();
        *self = Decoder::with_buffer(max_payload, false, aligned);
    }

    /// Decodes the next frame from the front of `buf`, consuming its bytes. Payloads are split
    /// off `buf` without copying.
    pub fn decode<'a>(&'a mut self, buf: &mut BytesMut) -> Result<Decoded<'a>, DecodeError> {
        if self.expect_preface {
            if buf.len() < PREFACE.len() {
                if !PREFACE.starts_with(buf) {
                    return Err(DecodeError::BadPreface { got: buf.to_vec() });
                }
                return Ok(Decoded::NeedMore(PREFACE.len() - buf.len()));
            }
            if buf[..PREFACE.len()] != PREFACE {
                return Err(DecodeError::BadPreface {
                    got: buf[..PREFACE.len()].to_vec(),
                });
            }
            buf.advance(PREFACE.len());
            self.offset += PREFACE.len() as u64;
            self.expect_preface = false;
        }
        if self.skipping > 0 {
            let n = (self.skipping as usize).min(buf.len());
            buf.advance(n);
            self.skipping -= n as u64;
            self.offset += n as u64;
            if self.skipping > 0 {
                return Ok(Decoded::NeedMore(self.skipping.min(1 << 20) as usize));
            }
        }
        if buf.len() < PREFIX_LEN {
            return Ok(Decoded::NeedMore(PREFIX_LEN - buf.len()));
        }
        let payload_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let header_len = u16::from_le_bytes([buf[4], buf[5]]) as usize;
        let kind_byte = buf[6];
        let flags = buf[7];
        let stream_id = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let offset = self.offset;
        let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind {
            kind: kind_byte,
            offset,
        })?;
        if kind.has_header() == (header_len == 0) {
            return Err(DecodeError::HeaderLength {
                kind,
                len: header_len,
                offset,
            });
        }
        if !kind.has_payload() && payload_len != 0 {
            return Err(DecodeError::UnexpectedPayload {
                kind,
                len: payload_len,
                offset,
            });
        }
        if (kind == Kind::GoAway) != (stream_id == 0) {
            return Err(DecodeError::StreamId {
                kind,
                stream_id,
                offset,
            });
        }
        let too_large = payload_len as usize > self.max_payload;
        let body_needed = if too_large {
            header_len
        } else {
            header_len + payload_len as usize
        };
        if buf.len() < PREFIX_LEN + body_needed {
            // Make room for the whole frame at once (a large payload is read in one go).
            buf.reserve(PREFIX_LEN + body_needed - buf.len());
            return Ok(Decoded::NeedMore(PREFIX_LEN + body_needed - buf.len()));
        }
        buf.advance(PREFIX_LEN);
        self.aligned.clear();
        self.aligned.extend_from_slice(&buf[..header_len]);
        buf.advance(header_len);
        let payload = if too_large {
            let n = (payload_len as usize).min(buf.len());
            buf.advance(n);
            self.skipping = u64::from(payload_len) - n as u64;
            Payload::TooLarge(payload_len)
        } else {
            Payload::Bytes(buf.split_to(payload_len as usize).freeze())
        };
        self.offset += (PREFIX_LEN + header_len) as u64 + u64::from(payload_len) - self.skipping;
        let bytes: &'a [u8] = &self.aligned;
        let invalid = |e: rancor::Error| DecodeError::InvalidHeader {
            kind,
            reason: e.to_string(),
            offset,
        };
        let end = flags & FLAG_END_STREAM != 0;
        let frame = match kind {
            Kind::Open => Frame::Open(
                stream_id,
                rkyv::access::<ArchivedOpenHeader, rancor::Error>(bytes).map_err(invalid)?,
            ),
            Kind::Message => Frame::Message {
                stream_id,
                header: rkyv::access::<ArchivedRequestHeader, rancor::Error>(bytes)
                    .map_err(invalid)?,
                payload,
                end,
            },
            Kind::HalfClose => Frame::HalfClose(stream_id),
            Kind::Cancel => Frame::Cancel(stream_id),
            Kind::Headers => Frame::Headers(
                stream_id,
                rkyv::access::<ArchivedMetadataHeader, rancor::Error>(bytes).map_err(invalid)?,
            ),
            Kind::Response => Frame::Response {
                stream_id,
                header: rkyv::access::<ArchivedResponseHeader, rancor::Error>(bytes)
                    .map_err(invalid)?,
                payload,
            },
            Kind::Status => Frame::Status(
                stream_id,
                rkyv::access::<ArchivedStatusHeader, rancor::Error>(bytes).map_err(invalid)?,
            ),
            Kind::GoAway => Frame::GoAway(
                rkyv::access::<ArchivedStatusHeader, rancor::Error>(bytes).map_err(invalid)?,
            ),
        };
        if frame_stream_id(&frame) == Some(0) {
            return Err(DecodeError::StreamId {
                kind,
                stream_id: 0,
                offset,
            });
        }
        Ok(Decoded::Frame(frame))
    }
}

fn frame_stream_id(f: &Frame<'_>) -> Option<u32> {
    match f {
        Frame::Open(id, _)
        | Frame::HalfClose(id)
        | Frame::Cancel(id)
        | Frame::Headers(id, _)
        | Frame::Status(id, _) => Some(*id),
        Frame::Message { stream_id, .. } | Frame::Response { stream_id, .. } => Some(*stream_id),
        Frame::GoAway(_) => None,
    }
}

/// Payloads up to this size are copied next to their header; larger ones are written from
/// their own buffer with a vectored write.
pub const COPY_THRESHOLD: usize = 4096;

#[derive(Debug)]
enum Segment {
    /// `head[start..end]`.
    Head(usize, usize),
    /// A payload written from its own buffer.
    Payload(Bytes),
}

/// Frames queued for one write: headers and small payloads packed into one buffer, large
/// payloads referenced in place, all handed to `write_vectored` at once.
#[derive(Debug, Default)]
pub struct WriteBatch {
    head: Vec<u8>,
    /// Start of the part of `head` not yet covered by a segment.
    open_from: usize,
    segments: Vec<Segment>,
    /// Bytes of the first segment already written.
    written_in_first: usize,
    scratch: Option<AlignedVec<16>>,
    frames: usize,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Frames queued.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Appends raw bytes (the connection preface).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.head.extend_from_slice(bytes);
        self.bytes += bytes.len();
    }

    /// Appends one frame.
    pub fn push(
        &mut self,
        stream_id: u32,
        flags: u8,
        header: OutHeader<'_>,
        payload: &Bytes,
    ) -> Result<(), EncodeError> {
        let kind = header.kind();
        let payload_len = u32::try_from(payload.len())
            .map_err(|_| EncodeError::PayloadTooLarge(payload.len()))?;
        let mut scratch = self.scratch.take().unwrap_or_default();
        scratch.clear();
        let result = match header {
            OutHeader::Open(h) => serialize_into(h, scratch),
            OutHeader::Message(h) => serialize_into(h, scratch),
            OutHeader::Headers(h) => serialize_into(h, scratch),
            OutHeader::Response(h) => serialize_into(h, scratch),
            OutHeader::Status(h) | OutHeader::GoAway(h) => serialize_into(h, scratch),
            OutHeader::HalfClose | OutHeader::Cancel => Ok(scratch),
        };
        let scratch = result?;
        let header_len = scratch.len();
        if header_len > MAX_HEADER_LEN {
            self.scratch = Some(scratch);
            return Err(EncodeError::HeaderTooLarge(header_len));
        }
        self.head.extend_from_slice(&payload_len.to_le_bytes());
        self.head
            .extend_from_slice(&(header_len as u16).to_le_bytes());
        self.head.push(kind as u8);
        self.head.push(flags);
        self.head.extend_from_slice(&stream_id.to_le_bytes());
        self.head.extend_from_slice(&scratch);
        self.scratch = Some(scratch);
        if payload.len() <= COPY_THRESHOLD {
            self.head.extend_from_slice(payload);
        } else {
            if self.head.len() > self.open_from {
                self.segments
                    .push(Segment::Head(self.open_from, self.head.len()));
                self.open_from = self.head.len();
            }
            self.segments.push(Segment::Payload(payload.clone()));
        }
        self.frames += 1;
        self.bytes += PREFIX_LEN + header_len + payload.len();
        Ok(())
    }

    fn seal(&mut self) {
        if self.head.len() > self.open_from {
            self.segments
                .push(Segment::Head(self.open_from, self.head.len()));
            self.open_from = self.head.len();
        }
    }

    /// Fills `out` with slices of what remains to be written; returns how many were filled.
    pub fn io_slices<'a>(&'a mut self, out: &mut [IoSlice<'a>]) -> usize {
        self.seal();
        let mut n = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            if n == out.len() {
                break;
            }
            let bytes: &[u8] = match seg {
                Segment::Head(s, e) => &self.head[*s..*e],
                Segment::Payload(b) => b,
            };
            let skip = if i == 0 { self.written_in_first } else { 0 };
            out[n] = IoSlice::new(&bytes[skip..]);
            n += 1;
        }
        n
    }

    /// Records that `n` bytes were written; clears the batch (keeping its buffers) once all
    /// of it is written.
    pub fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        let mut done = 0;
        for seg in &self.segments {
            let len = match seg {
                Segment::Head(s, e) => e - s,
                Segment::Payload(b) => b.len(),
            } - if done == 0 { self.written_in_first } else { 0 };
            if n >= len {
                n -= len;
                done += 1;
                self.written_in_first = 0;
            } else {
                self.written_in_first += n;
                break;
            }
        }
        self.segments.drain(..done);
        if self.segments.is_empty() && self.bytes == 0 {
            self.clear();
        }
    }

    /// Forgets everything queued, keeping the buffers.
    fn clear(&mut self) {
        self.segments.clear();
        self.head.clear();
        self.open_from = 0;
        self.written_in_first = 0;
        self.frames = 0;
        self.bytes = 0;
    }

    /// Moves everything queued out as owned chunks, for writers that take ownership of what
    /// they send (QUIC streams): headers and small payloads are copied into one chunk per run,
    /// large payloads are handed over by reference. The batch is empty afterwards.
    pub fn take_chunks(&mut self, out: &mut Vec<Bytes>) {
        self.seal();
        for (i, seg) in self.segments.drain(..).enumerate() {
            let skip = if i == 0 { self.written_in_first } else { 0 };
            match seg {
                Segment::Head(s, e) => out.push(Bytes::copy_from_slice(&self.head[s + skip..e])),
                Segment::Payload(b) => out.push(b.slice(skip..)),
            }
        }
        self.clear();
    }

    /// Empties the batch, keeping its buffers for reuse unless they grew past `keep` bytes
    /// (a batch that once carried a huge frame should not hold that memory forever).
    pub fn reset(&mut self, keep: usize) {
        self.clear();
        if self.head.capacity() > keep {
            self.head = Vec::new();
        }
    }

    /// Copies everything queued into one contiguous buffer (for tests and simple writers).
    pub fn to_vec(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        self.seal();
        for seg in &self.segments {
            match seg {
                Segment::Head(s, e) => out.extend_from_slice(&self.head[*s..*e]),
                Segment::Payload(b) => out.extend_from_slice(b),
            }
        }
        out
    }
}

fn serialize_into<T>(value: &T, scratch: AlignedVec<16>) -> Result<AlignedVec<16>, EncodeError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                AlignedVec<16>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, scratch)
        .map_err(|e| EncodeError::Serialize(e.to_string()))
}

// ---- conversions between the model and the wire headers ----

fn wire_entries(md: &Metadata) -> Vec<WireEntry> {
    md.iter()
        .map(|e| WireEntry {
            key: e.key().to_owned(),
            value: e.value().as_bytes().to_vec(),
        })
        .collect()
}

/// Metadata from its wire form; an invalid key or value is reported, not dropped.
pub fn metadata_from_wire(
    entries: &rkyv::vec::ArchivedVec<ArchivedWireEntry>,
) -> Result<Metadata, MetadataError> {
    let mut md = Metadata::new();
    for e in entries.iter() {
        md.append_raw(e.key.as_str(), e.value.as_slice())?;
    }
    Ok(md)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl OpenHeader {
    /// OPEN's header for a call.
    pub fn new(method: u8, timeout: Option<Duration>, metadata: &Metadata) -> OpenHeader {
        OpenHeader {
            timeout_us: timeout.map_or(NO_TIMEOUT, |t| micros(t).min(NO_TIMEOUT - 1)),
            metadata: wire_entries(metadata),
            method,
        }
    }
}

impl ArchivedOpenHeader {
    /// The timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        let us = self.timeout_us.to_native();
        (us != NO_TIMEOUT).then(|| Duration::from_micros(us))
    }
}

impl From<&Directives> for RequestHeader {
    fn from(d: &Directives) -> RequestHeader {
        let (fail_code, fail_after, fail_message) = match &d.fail {
            Some(f) => (f.code as u8, f.after, f.message.clone()),
            None => (0, 0, String::new()),
        };
        RequestHeader {
            delay_us: micros(d.delay),
            interval_us: micros(d.response_interval),
            response_size: d.response_size.map_or(UNSET_U32, |s| s.min(UNSET_U32 - 1)),
            response_count: d.response_count.map_or(UNSET_U32, |s| s.min(UNSET_U32 - 1)),
            fail_after,
            response_sizes: d.response_sizes.clone(),
            fail_message,
            fail_code,
            report_deadline: d.report_deadline,
        }
    }
}

impl ArchivedRequestHeader {
    /// The directives, read from the archive.
    pub fn directives(&self) -> Directives {
        let opt = |v: u32| (v != UNSET_U32).then_some(v);
        let code = self.fail_code;
        Directives {
            response_size: opt(self.response_size.to_native()),
            response_count: opt(self.response_count.to_native()),
            response_sizes: self.response_sizes.iter().map(|s| s.to_native()).collect(),
            response_interval: Duration::from_micros(self.interval_us.to_native()),
            delay: Duration::from_micros(self.delay_us.to_native()),
            fail: (code != 0).then(|| FailWith {
                code: Code::from_u32(u32::from(code)),
                message: self.fail_message.as_str().to_owned(),
                after: self.fail_after.to_native(),
            }),
            report_deadline: self.report_deadline,
        }
    }

    /// True when the directives are all defaults (lets the reader skip building them).
    pub fn is_plain(&self) -> bool {
        self.delay_us == 0
            && self.interval_us == 0
            && self.response_size == UNSET_U32
            && self.response_count == UNSET_U32
            && self.response_sizes.is_empty()
            && self.fail_code == 0
            && !self.report_deadline
    }

    /// The request this header and payload make.
    pub fn request(&self, payload: Bytes) -> EchoRequest {
        EchoRequest {
            payload,
            directives: if self.is_plain() {
                Directives::default()
            } else {
                self.directives()
            },
        }
    }
}

impl ResponseHeader {
    /// The header for a response.
    pub fn of(r: &EchoResponse) -> ResponseHeader {
        ResponseHeader {
            received_messages: r.received_messages,
            received_bytes: r.received_bytes,
        }
    }
}

impl ArchivedResponseHeader {
    /// The response this header and payload make.
    pub fn response(&self, payload: Bytes) -> EchoResponse {
        EchoResponse {
            payload,
            received_messages: self.received_messages.to_native(),
            received_bytes: self.received_bytes.to_native(),
        }
    }
}

impl MetadataHeader {
    /// The header for initial metadata.
    pub fn of(md: &Metadata) -> MetadataHeader {
        MetadataHeader {
            entries: wire_entries(md),
        }
    }
}

impl StatusHeader {
    /// The header for a final status (its metadata travels as trailers).
    pub fn of(s: &Status) -> StatusHeader {
        StatusHeader {
            code: s.code().as_u32(),
            message: s.message().to_owned(),
            trailers: wire_entries(s.metadata()),
        }
    }
}

impl ArchivedStatusHeader {
    /// The status, with trailers; invalid trailers turn the status into `INTERNAL`.
    pub fn status(&self) -> Status {
        let status = Status::new(Code::from_u32(self.code.to_native()), self.message.as_str());
        match metadata_from_wire(&self.trailers) {
            Ok(md) => status.with_metadata(md),
            Err(e) => Status::internal(format!("server sent invalid trailers: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wirebench_core::metadata::Metadata;

    /// An owned copy of a decoded frame, for comparisons.
    #[derive(Debug, PartialEq)]
    enum Owned {
        Open(u32, OpenHeader),
        Message(u32, RequestHeader, Payload, bool),
        HalfClose(u32),
        Cancel(u32),
        Headers(u32, MetadataHeader),
        Response(u32, ResponseHeader, Payload),
        Status(u32, StatusHeader),
        GoAway(StatusHeader),
    }

    fn de<T, A>(a: &A) -> T
    where
        A: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        rkyv::deserialize::<T, rancor::Error>(a).unwrap()
    }

    fn own(f: Frame<'_>) -> Owned {
        match f {
            Frame::Open(id, h) => Owned::Open(id, de(h)),
            Frame::Message {
                stream_id,
                header,
                payload,
                end,
            } => Owned::Message(stream_id, de(header), payload, end),
            Frame::HalfClose(id) => Owned::HalfClose(id),
            Frame::Cancel(id) => Owned::Cancel(id),
            Frame::Headers(id, h) => Owned::Headers(id, de(h)),
            Frame::Response {
                stream_id,
                header,
                payload,
            } => Owned::Response(stream_id, de(header), payload),
            Frame::Status(id, h) => Owned::Status(id, de(h)),
            Frame::GoAway(h) => Owned::GoAway(de(h)),
        }
    }

    fn encode(frames: &[Owned], preface: bool) -> Vec<u8> {
        let mut b = WriteBatch::new();
        if preface {
            b.push_raw(&PREFACE);
        }
        let none = Bytes::new();
        for f in frames {
            let bytes = |p: &Payload| match p {
                Payload::Bytes(b) => b.clone(),
                Payload::TooLarge(_) => unreachable!("not encodable"),
            };
            match f {
                Owned::Open(id, h) => b.push(*id, 0, OutHeader::Open(h), &none),
                Owned::Message(id, h, p, end) => {
                    let flags = if *end { FLAG_END_STREAM } else { 0 };
                    b.push(*id, flags, OutHeader::Message(h), &bytes(p))
                }
                Owned::HalfClose(id) => b.push(*id, 0, OutHeader::HalfClose, &none),
                Owned::Cancel(id) => b.push(*id, 0, OutHeader::Cancel, &none),
                Owned::Headers(id, h) => b.push(*id, 0, OutHeader::Headers(h), &none),
                Owned::Response(id, h, p) => b.push(*id, 0, OutHeader::Response(h), &bytes(p)),
                Owned::Status(id, h) => b.push(*id, 0, OutHeader::Status(h), &none),
                Owned::GoAway(h) => b.push(0, 0, OutHeader::GoAway(h), &none),
            }
            .unwrap();
        }
        b.to_vec()
    }

    /// Decodes `bytes` fed in the given chunk sizes (cycled), like a socket would deliver them.
    fn decode_chunked(
        bytes: &[u8],
        chunks: &[usize],
        server: bool,
        max: usize,
    ) -> Result<Vec<Owned>, DecodeError> {
        let mut d = if server {
            Decoder::server(max)
        } else {
            Decoder::client(max)
        };
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Frame(f) => out.push(own(f)),
                Decoded::NeedMore(_) => {
                    if pos == bytes.len() {
                        return Ok(out);
                    }
                    let n = chunks[i % chunks.len()].max(1).min(bytes.len() - pos);
                    i += 1;
                    buf.extend_from_slice(&bytes[pos..pos + n]);
                    pos += n;
                }
            }
        }
    }

    fn entry() -> impl Strategy<Value = WireEntry> {
        (
            "[a-z0-9._-]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(key, value)| WireEntry { key, value })
    }

    fn payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 4000..9000),
        ]
        .prop_map(|v| Payload::Bytes(Bytes::from(v)))
    }

    fn id() -> impl Strategy<Value = u32> {
        1..=u32::MAX
    }

    fn frame() -> impl Strategy<Value = Owned> {
        let request = (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 0..6),
            ".{0,30}",
            any::<u8>(),
            any::<bool>(),
        )
            .prop_map(|(a, b, c, d, e, f, g, h, i)| RequestHeader {
                delay_us: a,
                interval_us: b,
                response_size: c,
                response_count: d,
                fail_after: e,
                response_sizes: f,
                fail_message: g,
                fail_code: h,
                report_deadline: i,
            });
        let status = || {
            (
                any::<u32>(),
                ".{0,40}",
                proptest::collection::vec(entry(), 0..4),
            )
                .prop_map(|(code, message, trailers)| StatusHeader {
                    code,
                    message,
                    trailers,
                })
        };
        prop_oneof![
            (
                id(),
                any::<u64>(),
                proptest::collection::vec(entry(), 0..4),
                any::<u8>()
            )
                .prop_map(|(id, timeout_us, metadata, method)| Owned::Open(
                    id,
                    OpenHeader {
                        timeout_us,
                        metadata,
                        method
                    }
                )),
            (id(), request, payload(), any::<bool>())
                .prop_map(|(id, h, p, e)| Owned::Message(id, h, p, e)),
            id().prop_map(Owned::HalfClose),
            id().prop_map(Owned::Cancel),
            (id(), proptest::collection::vec(entry(), 0..4))
                .prop_map(|(id, entries)| Owned::Headers(id, MetadataHeader { entries })),
            (id(), any::<u64>(), any::<u64>(), payload()).prop_map(|(id, m, b, p)| {
                Owned::Response(
                    id,
                    ResponseHeader {
                        received_messages: m,
                        received_bytes: b,
                    },
                    p,
                )
            }),
            (id(), status()).prop_map(|(id, s)| Owned::Status(id, s)),
            status().prop_map(Owned::GoAway),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any sequence of frames decodes to itself, however the bytes are split.
        #[test]
        fn round_trip_under_any_split(
            frames in proptest::collection::vec(frame(), 1..8),
            chunks in proptest::collection::vec(1usize..200, 1..16),
        ) {
            let bytes = encode(&frames, true);
            let got = decode_chunked(&bytes, &chunks, true, usize::MAX).unwrap();
            prop_assert_eq!(got, frames);
        }

        /// Arbitrary bytes never panic the decoder: they decode, wait for more, or fail.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            chunks in proptest::collection::vec(1usize..64, 1..8),
            with_preface in any::<bool>(),
        ) {
            let mut input = if with_preface { PREFACE.to_vec() } else { Vec::new() };
            input.extend_from_slice(&bytes);
            let _ = decode_chunked(&input, &chunks, true, 1 << 16);
            let _ = decode_chunked(&bytes, &chunks, false, 1 << 16);
        }

        /// A valid stream with some bytes flipped never panics either (deeper than random
        /// bytes get: past the prefix into rkyv validation).
        #[test]
        fn corrupted_frames_never_panic(
            frames in proptest::collection::vec(frame(), 1..4),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = encode(&frames, false);
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x | 1;
            }
            let _ = decode_chunked(&bytes, &[7, 13, 1000], false, 1 << 20);
        }
    }

    #[test]
    fn oversized_payload_is_skipped_and_the_stream_goes_on() {
        let big = Owned::Message(
            1,
            RequestHeader::from(&Directives::default()),
            Payload::Bytes(Bytes::from(vec![1u8; 10_000])),
            true,
        );
        let small = Owned::Message(
            3,
            RequestHeader::from(&Directives::default()),
            Payload::Bytes(Bytes::from(vec![2u8; 10])),
            false,
        );
        let bytes = encode(&[big, small], true);
        for chunks in [&[1usize][..], &[100], &[100_000]] {
            let got = decode_chunked(&bytes, chunks, true, 1000).unwrap();
            assert_eq!(got.len(), 2);
            assert!(matches!(
                got[0],
                Owned::Message(1, _, Payload::TooLarge(10_000), true)
            ));
            assert!(
                matches!(&got[1], Owned::Message(3, _, Payload::Bytes(b), false) if b[..] == [2u8; 10])
            );
        }
    }

    /// A decoder dropped in the middle of skipping an oversized payload and reused for another
    /// stream (QUIC pools them) starts from a clean state: no skip left, new limit, offsets from 0.
    #[test]
    fn a_reused_decoder_starts_clean() {
        let msg = |id, n: usize| {
            Owned::Message(
                id,
                RequestHeader::from(&Directives::default()),
                Payload::Bytes(Bytes::from(vec![7u8; n])),
                false,
            )
        };
        let big = encode(&[msg(1, 10_000)], false);
        let mut d = Decoder::frames_only(100);
        // Only part of the oversized frame arrives: the decoder is left skipping.
        let mut buf = BytesMut::from(&big[..200]);
        assert!(matches!(
            d.decode(&mut buf).unwrap(),
            Decoded::Frame(Frame::Message {
                payload: Payload::TooLarge(10_000),
                ..
            })
        ));
        d.reuse_frames_only(20_000);
        let mut buf = BytesMut::from(&big[..]);
        match d.decode(&mut buf).unwrap() {
            Decoded::Frame(Frame::Message {
                payload: Payload::Bytes(b),
                ..
            }) => assert_eq!(b.len(), 10_000),
            other => panic!("expected the whole frame, got {other:?}"),
        }
        assert!(buf.is_empty());
        // Garbage in a reused decoder is reported from offset 0 of its new stream.
        d.reuse_frames_only(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0x7f, 0, 1, 0, 0, 0][..]);
        let e = d.decode(&mut buf).unwrap_err().to_string();
        assert!(e.contains("at byte 0"), "{e}");
    }

    /// A batch reset with frames queued and partly written encodes the next frames as a fresh
    /// batch would; one whose buffer grew past the limit lets the memory go.
    #[test]
    fn a_reset_batch_is_as_good_as_new() {
        let status = StatusHeader::of(&wirebench_core::Status::ok());
        let big = Bytes::from(vec![3u8; 10_000]);
        let mut b = WriteBatch::new();
        b.push(1, 0, OutHeader::Status(&status), &big).unwrap();
        b.push(1, 0, OutHeader::Status(&status), &Bytes::new())
            .unwrap();
        b.advance(5);
        b.reset(1 << 20);
        assert!(b.is_empty());
        b.push(3, 0, OutHeader::Status(&status), &Bytes::from_static(b"hi"))
            .unwrap();
        let mut fresh = WriteBatch::new();
        fresh
            .push(3, 0, OutHeader::Status(&status), &Bytes::from_static(b"hi"))
            .unwrap();
        assert_eq!(b.to_vec(), fresh.to_vec());
        let mut b = WriteBatch::new();
        b.push(
            1,
            0,
            OutHeader::Status(&status),
            &Bytes::from(vec![1u8; 2000]),
        )
        .unwrap();
        b.reset(64);
        assert_eq!(b.head.capacity(), 0);
    }

    #[test]
    fn errors_name_what_and_where() {
        let e = decode_chunked(b"GET / HTTP/1.1\r\n", &[100], true, 100).unwrap_err();
        assert!(matches!(e, DecodeError::BadPreface { .. }), "{e}");
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x7f, 0, 1, 0, 0, 0]);
        let e = decode_chunked(&bytes, &[100], true, 100).unwrap_err();
        assert_eq!(
            e,
            DecodeError::UnknownKind {
                kind: 0x7f,
                offset: 8
            }
        );
        assert!(e.to_string().contains("0x7f") && e.to_string().contains("byte 8"));
        // A CANCEL carrying a payload.
        let bytes = [5u8, 0, 0, 0, 0, 0, 0x04, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5];
        let e = decode_chunked(&bytes, &[100], false, 100).unwrap_err();
        assert!(matches!(e, DecodeError::UnexpectedPayload { .. }), "{e}");
        // OPEN without header, stream 0 on a call, a header that fails validation.
        let e = decode_chunked(&[0, 0, 0, 0, 0, 0, 0x01, 0, 1, 0, 0, 0], &[100], false, 100)
            .unwrap_err();
        assert!(matches!(e, DecodeError::HeaderLength { .. }), "{e}");
        let e = decode_chunked(&[0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0], &[100], false, 100)
            .unwrap_err();
        assert!(matches!(e, DecodeError::StreamId { .. }), "{e}");
        // A STATUS whose message points outside the header.
        let mut bad = vec![0u8, 0, 0, 0, 20, 0, 0x13, 0, 1, 0, 0, 0];
        bad.extend_from_slice(&[0, 0, 0, 0]);
        bad.extend_from_slice(&[0xbf, 0xff, 0xff, 0x3f, 0x00, 0x10, 0x00, 0x00]);
        bad.extend_from_slice(&[0; 8]);
        let e = decode_chunked(&bad, &[100], false, 100).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidHeader { .. }), "{e}");
    }

    /// The unary exchange shown in the `tcp` module docs, byte for byte.
    #[test]
    fn wire_example_is_documented() {
        let open = OpenHeader::new(0, None, &Metadata::new());
        let request = RequestHeader::from(&Directives::default());
        let mut b = WriteBatch::new();
        b.push_raw(&PREFACE);
        b.push(1, 0, OutHeader::Open(&open), &Bytes::new()).unwrap();
        b.push(
            1,
            FLAG_END_STREAM,
            OutHeader::Message(&request),
            &Bytes::from_static(b"abc"),
        )
        .unwrap();
        let client = b.to_vec();
        let mut expected = b"WBRPC/1\n".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0x18, 0, 0x01, 0, 1, 0, 0, 0]);
        expected.extend_from_slice(&[0xff; 8]); // timeout_us: none
        // metadata: empty Vec whose offset points at the header's start (-8), len 0
        expected.extend_from_slice(&[0xf8, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0; 8]); // method 0, padding
        expected.extend_from_slice(&[3, 0, 0, 0, 0x30, 0, 0x02, 0x01, 1, 0, 0, 0]);
        let mut rh = vec![0u8; 48];
        rh[16..24].copy_from_slice(&[0xff; 8]); // response_size, response_count unset
        rh[28..32].copy_from_slice(&(-28i32).to_le_bytes()); // response_sizes: empty
        rh[36..44].copy_from_slice(&[0xff; 8]); // fail_message "" inline: 0xff padding
        expected.extend_from_slice(&rh);
        expected.extend_from_slice(b"abc");
        assert_eq!(client, expected);
        // As documented, out-of-line data must lie before the root: an empty Vec pointing
        // into the root itself (offset 0) is rejected.
        let mut zeroed = expected.clone();
        zeroed[28..32].copy_from_slice(&[0; 4]);
        let e = decode_chunked(&zeroed, &[1000], true, 100).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::InvalidHeader {
                    kind: Kind::Open,
                    ..
                }
            ),
            "{e}"
        );

        let mut b = WriteBatch::new();
        let resp = ResponseHeader::of(&EchoResponse::new(Bytes::from_static(b"abc")));
        b.push(
            1,
            0,
            OutHeader::Response(&resp),
            &Bytes::from_static(b"abc"),
        )
        .unwrap();
        b.push(
            1,
            0,
            OutHeader::Status(&StatusHeader::of(&Status::ok())),
            &Bytes::new(),
        )
        .unwrap();
        let server = b.to_vec();
        let mut expected = vec![3u8, 0, 0, 0, 0x10, 0, 0x12, 0, 1, 0, 0, 0];
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(b"abc");
        expected.extend_from_slice(&[0, 0, 0, 0, 0x14, 0, 0x13, 0, 1, 0, 0, 0]);
        let mut sh = vec![0u8; 20];
        sh[4..12].copy_from_slice(&[0xff; 8]); // message "" inline
        sh[12..16].copy_from_slice(&(-12i32).to_le_bytes()); // trailers: empty
        expected.extend_from_slice(&sh);
        assert_eq!(server, expected);
    }

    #[test]
    fn long_strings_and_vectors_use_documented_out_of_line_form() {
        // A 10-byte status message is stored out of line: (len & 0x3f) | 0x80 | (len >> 6) << 8.
        let s = StatusHeader {
            code: 5,
            message: "0123456789".into(),
            trailers: vec![],
        };
        let bytes = serialize_into(&s, AlignedVec::new()).unwrap();
        let root = &bytes[bytes.len() - 20..];
        assert_eq!(&root[0..4], &[5, 0, 0, 0]);
        let len = u32::from_le_bytes(root[4..8].try_into().unwrap());
        assert_eq!(len, (10 & 0x3f) | 0x80);
        let off = i32::from_le_bytes(root[8..12].try_into().unwrap());
        let at = (bytes.len() - 20 + 4) as i64 + i64::from(off);
        assert_eq!(&bytes[at as usize..at as usize + 10], b"0123456789");
    }
}
