//! Frames over one QUIC stream: a reader that feeds the shared `tcp` decoder from a
//! `RecvStream`, and a writer that encodes with the shared `WriteBatch` into a `SendStream`
//! without copying large payloads. Their codec buffers come from a per-thread spare pool and go
//! back to it when the stream ends: with a stream per call, fresh ones would cost every call
//! several allocations on each side.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, ReadError, RecvStream, SendStream, VarInt, WriteError};

use super::codes;
use wirebench_core::status::Status;
use wirebench_wire::codec::{Decoded, Decoder, EncodeError, Frame, OutHeader, WriteBatch};

/// The most a single read takes from quinn.
const READ_CHUNK: usize = 64 * 1024;
/// The frame prefix's stream id on QUIC (ignored by receivers, must be non-zero).
pub(super) const FRAME_STREAM_ID: u32 = 1;

/// Spare decoders and write batches kept per thread (enough for every call in flight on a busy
/// connection; beyond it, a finished stream's buffers are freed).
const SPARE_MAX: usize = 256;
/// A write batch whose buffer grew past this (a large header) is not kept.
const SPARE_KEEP_BYTES: usize = 16 * 1024;

/// Codec buffers of finished streams, waiting for the next stream on this thread.
#[derive(Default)]
struct Spare {
    decoders: Vec<Decoder>,
    writers: Vec<(WriteBatch, Vec<Bytes>)>,
}

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::new(Spare::default());
}

/// Takes a spare from the list `pick` names, if this thread has one.
fn take_spare<T>(pick: fn(&mut Spare) -> &mut Vec<T>) -> Option<T> {
    // During thread exit the pool may be gone already: then there is no spare.
    SPARE
        .try_with(|s| pick(&mut s.borrow_mut()).pop())
        .ok()
        .flatten()
}

/// Keeps `item` in the list `pick` names, unless it is full (or the pool is gone: then the
/// item is just freed).
fn give_spare<T>(pick: fn(&mut Spare) -> &mut Vec<T>, item: T) {
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        let list = pick(&mut s);
        if list.len() < SPARE_MAX {
            list.push(item);
        }
    });
}

fn spare_decoder(max_payload: usize) -> Decoder {
    match take_spare(|s| &mut s.decoders) {
        Some(mut d) => {
            d.reuse_frames_only(max_payload);
            d
        }
        None => Decoder::frames_only(max_payload),
    }
}

/// Why reading a stream stopped.
#[derive(Debug)]
pub(super) enum ReadFail {
    /// The peer reset its sending side with this code.
    Reset(VarInt),
    /// The connection is gone.
    Lost(ConnectionError),
    /// The stream ended in the middle of a frame.
    Truncated(usize),
    /// The bytes are not valid frames.
    Protocol(String),
    /// The stream was opened in 0-RTT and the server rejected the early data.
    ZeroRttRejected,
    /// The stream was already stopped or finished locally.
    Closed,
}

impl ReadFail {
    fn from_quinn(e: ReadError) -> ReadFail {
        match e {
            ReadError::Reset(code) => ReadFail::Reset(code),
            ReadError::ConnectionLost(c) => ReadFail::Lost(c),
            ReadError::ZeroRttRejected => ReadFail::ZeroRttRejected,
            ReadError::ClosedStream | ReadError::IllegalOrderedRead => ReadFail::Closed,
        }
    }

    /// The status a call fails with when its stream fails this way.
    pub(super) fn status(&self, side: &str) -> Status {
        match self {
            ReadFail::Reset(code) if code.into_inner() == u64::from(codes::PROTOCOL_ERROR) => {
                Status::internal(format!("the {side} reset the stream: protocol error"))
            }
            ReadFail::Reset(code) if code.into_inner() == u64::from(codes::CANCELLED) => {
                Status::cancelled(format!("the {side} cancelled the call"))
            }
            ReadFail::Reset(code) if code.into_inner() == u64::from(codes::DRAINING) => {
                Status::unavailable(format!("the {side} is draining: call not accepted"))
            }
            ReadFail::Reset(code) => {
                Status::unavailable(format!("the {side} reset the stream (code {code})"))
            }
            ReadFail::Lost(e) => connection_status(e),
            ReadFail::Truncated(n) => Status::internal(format!(
                "the {side} ended the stream in the middle of a frame ({n} bytes of it received)"
            )),
            ReadFail::Protocol(m) => {
                Status::internal(format!("protocol error from the {side}: {m}"))
            }
            ReadFail::ZeroRttRejected => Status::unavailable("0-RTT data rejected by the server"),
            ReadFail::Closed => Status::internal("stream already closed"),
        }
    }
}

/// The status open calls fail with when the connection is gone.
pub(super) fn connection_status(e: &ConnectionError) -> Status {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() == u64::from(codes::SHUTDOWN) =>
        {
            Status::unavailable("quic server shutting down")
        }
        ConnectionError::LocallyClosed => {
            Status::unavailable("quic connection closed by the client")
        }
        e => Status::unavailable(format!("quic connection lost: {e}")),
    }
}

/// The status a call fails with when writing its stream failed.
pub(super) fn write_status(e: &WriteError, side: &str) -> Status {
    match e {
        WriteError::Stopped(code) if code.into_inner() == u64::from(codes::PROTOCOL_ERROR) => {
            Status::internal(format!("the {side} stopped the stream: protocol error"))
        }
        WriteError::Stopped(code) if code.into_inner() == u64::from(codes::DRAINING) => {
            Status::unavailable(format!("the {side} is draining: call not accepted"))
        }
        WriteError::Stopped(_) => Status::cancelled(format!("the {side} stopped reading the call")),
        WriteError::ConnectionLost(c) => connection_status(c),
        WriteError::ZeroRttRejected => Status::unavailable("0-RTT data rejected by the server"),
        WriteError::ClosedStream => Status::internal("stream already closed"),
    }
}

/// Reads frames from one stream.
pub(super) struct FrameReader {
    pub(super) recv: RecvStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl FrameReader {
    pub(super) fn new(recv: RecvStream, max_payload: usize) -> FrameReader {
        FrameReader {
            recv,
            buf: BytesMut::new(),
            decoder: spare_decoder(max_payload),
        }
    }

    /// The next frame, turned into a `T` by `f` while its header is borrowed; `None` at the
    /// stream's end (FIN) between frames.
    pub(super) async fn next<T>(
        &mut self,
        f: impl FnOnce(Frame<'_>) -> T,
    ) -> Result<Option<T>, ReadFail> {
        let mut f = Some(f);
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Decoded::Frame(frame)) => {
                    let Some(f) = f.take() else {
                        unreachable!("the loop returns after using f");
                    };
                    return Ok(Some(f(frame)));
                }
                // A frame larger than what arrived is read in as many chunks as it takes.
                Ok(Decoded::NeedMore(_)) => {}
                Err(e) => return Err(ReadFail::Protocol(e.to_string())),
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadFail::Truncated(self.buf.len()))
                };
            }
        }
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, ReadFail> {
        match self.recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                if self.buf.is_empty() {
                    // Take the chunk as it is: no copy when a frame lies in one chunk.
                    self.buf = BytesMut::from(chunk.bytes);
                } else {
                    self.buf.extend_from_slice(&chunk.bytes);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(ReadFail::from_quinn(e)),
        }
    }

    /// Waits for the end of the stream after the last frame; bytes after it are a protocol
    /// error. Reading the FIN keeps quinn from sending STOP_SENDING when the stream is dropped.
    pub(super) async fn finish(&mut self) -> Result<(), ReadFail> {
        loop {
            if !self.buf.is_empty() {
                return Err(ReadFail::Protocol(format!(
                    "{} bytes after the call's last frame",
                    self.buf.len()
                )));
            }
            if !self.fill().await? {
                return Ok(());
            }
        }
    }

    /// Stops the peer's sending side with `code`.
    pub(super) fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(VarInt::from_u32(code));
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        // An empty stand-in: `AlignedVec::new` does not allocate.
        let decoder = std::mem::replace(&mut self.decoder, Decoder::unallocated());
        give_spare(|s| &mut s.decoders, decoder);
    }
}

/// Writes frames to one stream.
pub(super) struct FrameWriter {
    pub(super) send: SendStream,
    batch: WriteBatch,
    chunks: Vec<Bytes>,
}

/// Why a write failed.
#[derive(Debug)]
pub(super) enum WriteFail {
    /// The stream or connection refused it.
    Quic(WriteError),
    /// The frame could not be encoded (a header over 64 KiB).
    Encode(EncodeError),
}

impl FrameWriter {
    pub(super) fn new(send: SendStream) -> FrameWriter {
        let (batch, chunks) = take_spare(|s| &mut s.writers)
            .unwrap_or_else(|| (WriteBatch::new(), Vec::with_capacity(4)));
        FrameWriter {
            send,
            batch,
            chunks,
        }
    }

    /// Queues one frame (written by [`flush`](Self::flush)).
    pub(super) fn push(
        &mut self,
        flags: u8,
        header: OutHeader<'_>,
        payload: &Bytes,
    ) -> Result<(), WriteFail> {
        self.batch
            .push(FRAME_STREAM_ID, flags, header, payload)
            .map_err(WriteFail::Encode)
    }

    /// Writes everything queued.
    pub(super) async fn flush(&mut self) -> Result<(), WriteFail> {
        self.batch.take_chunks(&mut self.chunks);
        let result = self.send.write_all_chunks(&mut self.chunks).await;
        self.chunks.clear();
        result.map_err(WriteFail::Quic)
    }

    /// Queues and writes one frame.
    pub(super) async fn write(
        &mut self,
        flags: u8,
        header: OutHeader<'_>,
        payload: &Bytes,
    ) -> Result<(), WriteFail> {
        self.push(flags, header, payload)?;
        self.flush().await
    }

    /// Drops whatever is queued and not yet written.
    pub(super) fn discard(&mut self) {
        self.batch.take_chunks(&mut self.chunks);
        self.chunks.clear();
    }

    /// Ends the sending side (FIN).
    pub(super) fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Abandons the sending side with `code`.
    pub(super) fn reset(&mut self, code: u32) {
        let _ = self.send.reset(VarInt::from_u32(code));
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut chunks = std::mem::take(&mut self.chunks);
        batch.reset(SPARE_KEEP_BYTES);
        chunks.clear();
        give_spare(|s| &mut s.writers, (batch, chunks));
    }
}
