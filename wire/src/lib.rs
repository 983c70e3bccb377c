//! The wire of the `tcp` transport (and, one call per QUIC stream, of `quic`): length-prefixed
//! frames with rkyv headers read in place, calls multiplexed over one connection by stream id —
//! as a sans-IO codec ([`codec`]: bytes in, frames out; frames in, byte slices out) and the
//! write batching both transports drive ([`writer`]). Depends on `wirebench-core` only; the
//! fuzz targets and the codec benches use it without any transport.
//!
//! # Wire format (version 1)
//!
//! Everything is little-endian. A client opens a TCP connection and sends the 8-byte
//! **preface** `WBRPC/1\n` (`57 42 52 50 43 2f 31 0a`), then frames; the server sends frames
//! only (no preface). Both sides may write frames of different calls interleaved.
//!
//! ## Frame
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `payload_len`: u32, bytes of payload after the header |
//! | 4 | 2 | `header_len`: u16, bytes of header after this 12-byte prefix |
//! | 6 | 1 | `kind` (table below) |
//! | 7 | 1 | `flags`: bit 0 = `END_STREAM` (MESSAGE only: the client half-closes after it) |
//! | 8 | 4 | `stream_id`: u32, chosen by the client, non-zero, unique among the connection's open calls (0 only on GOAWAY) |
//! | 12 | `header_len` | the header: an rkyv archive of the kind's header type |
//! | 12 + `header_len` | `payload_len` | the payload (MESSAGE and RESPONSE only; 0 elsewhere) |
//!
//! | kind | name | direction | header | payload |
//! |---|---|---|---|---|
//! | `0x01` | OPEN | client → server | `OpenHeader` | none |
//! | `0x02` | MESSAGE | client → server | `RequestHeader` | request payload |
//! | `0x03` | HALF_CLOSE | client → server | none (`header_len` 0) | none |
//! | `0x04` | CANCEL | client → server | none | none |
//! | `0x11` | HEADERS | server → client | `MetadataHeader` | none |
//! | `0x12` | RESPONSE | server → client | `ResponseHeader` | response payload |
//! | `0x13` | STATUS | server → client | `StatusHeader` | none |
//! | `0x20` | GOAWAY | either, stream 0 | `StatusHeader` | none |
//!
//! A call: the client sends OPEN, then MESSAGEs (the last may carry `END_STREAM`, or a
//! HALF_CLOSE follows); the server answers with an optional HEADERS, RESPONSEs, and exactly
//! one STATUS, which ends the call. A unary call is OPEN + MESSAGE(`END_STREAM`), answered
//! by \[HEADERS\] RESPONSE STATUS (or STATUS alone on error). CANCEL ends a call from the client
//! side; the server's handler observes it and sends nothing more for that stream id.
//! Frames for a stream id the receiver does not know (a call already ended or cancelled) are
//! ignored.
//!
//! ## GOAWAY and drain
//!
//! A server's GOAWAY (stream 0) says it takes no new calls on this connection, and why (its
//! status code and message). From then on the client opens no call there (its library fails
//! new calls at once with `UNAVAILABLE`, so the caller connects again, elsewhere or to the
//! restarted server); calls already open go on and end as usual, unless the server closes
//! the connection first, which fails those still open with `UNAVAILABLE`. A server sends it:
//!
//! - **shutting down at once**, with code 14 `UNAVAILABLE`, or on a **protocol error**, with
//!   code 13 `INTERNAL` (below): it closes the connection right after, every call still open
//!   fails;
//! - **draining**, with code 14 `UNAVAILABLE` (message `server draining: ...`): it keeps
//!   reading the connection and answering the calls already open (their MESSAGE,
//!   HALF_CLOSE and CANCEL frames still count), answers an OPEN that arrives after its GOAWAY
//!   (sent before the client saw it) with STATUS 14 `UNAVAILABLE` at once, and closes the
//!   connection as soon as no call is open. When its grace runs out first, it cancels the
//!   calls left, sends a second GOAWAY and closes: those calls fail with `UNAVAILABLE`. A
//!   draining server accepts no new connection either (its listener is closed).
//!
//! A server that receives GOAWAY from a client treats it as a protocol error.
//!
//! Errors that close the connection (after a GOAWAY with code 13 `INTERNAL` naming the
//! problem and its byte offset): a wrong preface, an unknown kind, a header present where
//! the kind allows none or missing where it needs one, a payload on a kind without payload,
//! a header that fails rkyv validation, stream id 0 on a call frame, a stream id opened twice,
//! a MESSAGE after the call's half-close, a server-only frame sent by a client (and vice
//! versa), a frame cut off by the end of the connection.
//!
//! Errors that fail only the call: a MESSAGE (or RESPONSE) payload larger than the receiver's
//! maximum message size fails that call with `RESOURCE_EXHAUSTED`; its bytes are skipped
//! without being buffered and the connection stays usable. An unknown method fails with
//! `UNIMPLEMENTED`; invalid metadata with `INVALID_ARGUMENT`.
//!
//! ## Headers (rkyv 0.8 archives, default format)
//!
//! A header is exactly the bytes rkyv 0.8 produces with its default features (little-endian,
//! aligned primitives, 32-bit relative pointers): variable-length data first, the root struct
//! last, so the root occupies the header's final `size_of` bytes. The receiver copies the
//! header into a 16-byte-aligned buffer (reused per connection) and validates it in place;
//! it is never deserialized into another structure. A writer in another language produces:
//!
//! - structs laid out as C structs (`repr(C)`: fields in order, each at a multiple of its
//!   alignment, total size rounded up to the largest alignment);
//! - `u8`/`bool` (bool is 0 or 1), `u32`, `u64` in little-endian at their natural alignment;
//! - `Vec<T>` as 8 bytes, alignment 4: `i32` offset of the first element, relative to the
//!   address of this offset field itself, then `u32` element count; the elements lie before
//!   the root struct, aligned for `T` (an empty Vec points at the header's first byte when
//!   nothing precedes the root: offset = minus the field's position; never into the root);
//! - `String` as 8 bytes, alignment 4: when at most 8 bytes long, the bytes inline, padded
//!   with `0xff`; otherwise `u32` `(len & 0x3f) | 0x80 | ((len >> 6) << 8)` then `i32` offset
//!   (relative to the start of the string field) of the UTF-8 bytes, which lie before the
//!   root;
//! - every out-of-line object is placed before the root, each subtree before its parent, as
//!   rkyv's validator checks (serializing children depth-first, then the parent, yields this).
//!
//! | type | layout (offset: field) | size |
//! |---|---|---|
//! | `OpenHeader` | 0: `timeout_us` u64 (µs from arrival; `u64::MAX` = none), 8: `metadata` Vec<WireEntry>, 16: `method` u8 (0 Unary, 1 ServerStream, 2 ClientStream, 3 Bidi) | 24 |
//! | `WireEntry` | 0: `key` String, 8: `value` Vec<u8> (keys ending `-bin` are binary, others printable ASCII) | 16 |
//! | `RequestHeader` | 0: `delay_us` u64, 8: `interval_us` u64, 16: `response_size` u32 (`u32::MAX` = echo the payload), 20: `response_count` u32 (`u32::MAX` = one), 24: `fail_after` u32, 28: `response_sizes` Vec<u32>, 36: `fail_message` String, 44: `fail_code` u8 (0 = do not fail), 45: `report_deadline` bool | 48 |
//! | `ResponseHeader` | 0: `received_messages` u64, 8: `received_bytes` u64 | 16 |
//! | `MetadataHeader` | 0: `entries` Vec<WireEntry> | 8 |
//! | `StatusHeader` | 0: `code` u32 (gRPC code), 4: `message` String (UTF-8), 12: `trailers` Vec<WireEntry> | 20 |
//!
//! The directive semantics are those of [`Directives`](wirebench_core::message::Directives); generated
//! payloads follow [`pattern`](wirebench_core::message::pattern). An example unary exchange, byte for
//! byte, is checked by this module's tests (`wire_example_is_documented`):
//!
//! ```text
//! client: 57 42 52 50 43 2f 31 0a                            preface
//!         00 00 00 00 18 00 01 00 01 00 00 00                OPEN, stream 1, header 24 B
//!         ff ff ff ff ff ff ff ff f8 ff ff ff 00 00 00 00    timeout none, metadata [] (offset -8)
//!         00 00 00 00 00 00 00 00                            method 0 (Unary) + padding
//!         03 00 00 00 30 00 02 01 01 00 00 00                MESSAGE, END_STREAM, header 48 B, payload 3 B
//!         00 .. (48-byte RequestHeader: delays 0, response_size and response_count
//!         ff ff ff ff, fail_after 0, response_sizes [] (offset -28), fail_message ""
//!         (eight ff), fail_code 0, report_deadline 0, padding)
//!         61 62 63                                           payload "abc"
//! server: 03 00 00 00 10 00 12 00 01 00 00 00 + 16-byte ResponseHeader (zeros) + 61 62 63
//!         00 00 00 00 14 00 13 00 01 00 00 00 + 20-byte StatusHeader (code 0, message ""
//!         as eight ff, trailers [] with offset -12)
//! ```
//!
//!
//! TLS and flow control are the transports' own: see `wirebench-tcp` and `wirebench-quic`.

pub mod codec;
pub mod writer;

use wirebench_core::{Directives, Metadata, Status};

/// Refuses, before anything is queued, a call whose header could not be encoded (the header
/// is limited to 64 KiB, mostly metadata).
pub fn check_header_size(metadata: &Metadata, directives: &Directives) -> Result<(), Status> {
    let estimate = 128
        + metadata.encoded_len()
        + 24 * metadata.len()
        + 4 * directives.response_sizes.len()
        + directives.fail.as_ref().map_or(0, |f| f.message.len());
    if estimate > codec::MAX_HEADER_LEN {
        return Err(Status::resource_exhausted(format!(
            "call header of about {estimate} bytes (metadata and directives) exceeds the tcp \
             wire's {} byte header limit",
            codec::MAX_HEADER_LEN
        )));
    }
    Ok(())
}
