//! The write side of a connection, shared by everyone who sends on it. A sender encodes its
//! frames straight into the connection's batch and, when no write is under way, may write it
//! itself with one non-blocking vectored write: a lone call's request (or a read's replies)
//! reach the socket without a queue or a hand-off to another task, which on a loaded or pinned
//! machine costs a scheduler round per message. What the socket does not take at once, and
//! frames a sender leaves for batching (many calls in flight, streams), go to the connection's
//! writer task, which drains the batch with vectored writes so concurrent calls share syscalls.
//!
//! One lock guards the socket's write half and the batch; it is held for an encode or one
//! non-blocking write, never across an await.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::future::poll_fn;
use tokio::io::AsyncWrite;

use crate::codec::{EncodeError, WriteBatch};

/// Senders wait for room while this many bytes are queued (payloads are referenced, not
/// copied, so this bounds what a slow peer holds back rather than memory alone).
const HIGH_WATER: usize = 1024 * 1024;
/// Slices handed to one `write_vectored` call.
const MAX_SLICES: usize = 64;

/// Something a sender can put on the wire.
pub trait Outgoing {
    /// Appends this item's frames to `batch`.
    fn encode(&self, batch: &mut WriteBatch) -> Result<(), EncodeError>;
}

/// When the frames a sender queues go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Write them now from the sender when no write is under way (lowest latency).
    Now,
    /// Leave them to the writer task, so frames queued by concurrent senders meanwhile share
    /// its next write.
    Batch,
    /// Leave them queued: the sender calls [`FrameTx::flush`] once it has queued the rest
    /// (the server's replies to every frame of one read go out in one write).
    Later,
}

/// The connection can take no more frames: it was closed, or a write failed.
#[derive(Debug, Clone, Copy)]
pub struct Closed;

struct State {
    w: Pin<Box<dyn AsyncWrite + Send>>,
    batch: WriteBatch,
    /// The writer task owns the batch: it was woken for it or waits for the socket. Senders
    /// then only append.
    active: bool,
    /// Close once the batch is written (asked, or the last sender is gone).
    closing: bool,
    /// The write side is shut down, or a write failed (with this message).
    done: bool,
    failed: Option<(std::io::ErrorKind, String)>,
    senders: usize,
    writer: Option<Waker>,
    /// Senders waiting for the batch to fall under [`HIGH_WATER`].
    waiting: Vec<Waker>,
}

struct Wire {
    state: Mutex<State>,
    written: AtomicU64,
}

impl Wire {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug; the state stays consistent (every
        // step leaves it so before anything that could panic).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn closed(&self) -> bool {
        self.closing || self.done || self.failed.is_some()
    }

    /// Hands the batch to the writer task.
    fn activate(&mut self) {
        if !self.active {
            self.active = true;
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        if self.failed.is_none() {
            self.failed = Some((e.kind(), e.to_string()));
        }
        // Whoever waits learns of it: the writer task returns the error, senders get `Closed`.
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        self.wake_waiting();
    }

    fn wake_waiting(&mut self) {
        for w in self.waiting.drain(..) {
            w.wake();
        }
    }

    /// Writes until the batch is empty and flushed (`Ready(Ok)`), the socket is full
    /// (`Pending`, with `cx` registered for writability), or a write fails.
    fn write_some(
        &mut self,
        cx: &mut Context<'_>,
        written: &AtomicU64,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.batch.is_empty() {
                // A TLS stream may keep records it could not yet put on the socket: push them
                // out (a no-op on a plain TCP stream).
                return self.w.as_mut().poll_flush(cx);
            }
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let k = self.batch.io_slices(&mut slices);
                match self.w.as_mut().poll_write_vectored(cx, &slices[..k]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            self.batch.advance(n);
            written.fetch_add(n as u64, Ordering::Relaxed);
            if self.batch.len() < HIGH_WATER && !self.waiting.is_empty() {
                self.wake_waiting();
            }
        }
    }

    /// A sender's write: what the socket takes now goes, the rest is the writer task's.
    fn write_direct(&mut self, written: &AtomicU64) {
        let mut cx = Context::from_waker(Waker::noop());
        match self.write_some(&mut cx, written) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => self.fail(&e),
            // The socket is full: the writer task waits for it (its own poll replaces the
            // no-op waker registered here; readiness is a state, so no wake-up is lost).
            Poll::Pending => self.activate(),
        }
    }

    fn push<O: Outgoing>(&mut self, item: &O, flush: Flush, written: &AtomicU64) {
        if let Err(e) = item.encode(&mut self.batch) {
            // Callers check sizes before sending; reaching this is a bug, not bad input.
            tracing::error!("dropping a frame that cannot be encoded: {e}");
            return;
        }
        if self.active {
            return;
        }
        match flush {
            Flush::Now => self.write_direct(written),
            Flush::Batch => self.activate(),
            Flush::Later => {}
        }
    }
}

/// A sender on a connection's write side. Clones share it; the write side closes once the
/// last clone is dropped (or [`FrameTx::close`] is called).
pub struct FrameTx {
    wire: Arc<Wire>,
}

impl std::fmt::Debug for FrameTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameTx")
            .field("written", &self.written())
            .finish_non_exhaustive()
    }
}

impl Clone for FrameTx {
    fn clone(&self) -> FrameTx {
        self.wire.lock().senders += 1;
        FrameTx {
            wire: self.wire.clone(),
        }
    }
}

impl Drop for FrameTx {
    fn drop(&mut self) {
        let mut st = self.wire.lock();
        st.senders -= 1;
        if st.senders == 0 {
            st.closing = true;
            st.activate();
        }
    }
}

impl FrameTx {
    /// The write side of a connection: the sender, and the writer task to spawn. `preface`
    /// goes first.
    pub fn new<W>(w: W, preface: Option<&[u8]>) -> (FrameTx, WriterTask)
    where
        W: AsyncWrite + Send + 'static,
    {
        let mut batch = WriteBatch::new();
        if let Some(p) = preface {
            batch.push_raw(p);
        }
        let wire = Arc::new(Wire {
            state: Mutex::new(State {
                w: Box::pin(w),
                active: !batch.is_empty(),
                batch,
                closing: false,
                done: false,
                failed: None,
                senders: 1,
                writer: None,
                waiting: Vec::new(),
            }),
            written: AtomicU64::new(0),
        });
        (FrameTx { wire: wire.clone() }, WriterTask { wire })
    }

    /// Queues `item`, waiting while the batch is over its high-water mark, and writes it as
    /// `flush` says.
    pub async fn send<O: Outgoing>(&self, item: O, flush: Flush) -> Result<(), Closed> {
        poll_fn(|cx| {
            let mut st = self.wire.lock();
            if st.closed() {
                return Poll::Ready(Err(Closed));
            }
            if st.batch.len() >= HIGH_WATER {
                // Frames left for a later flush count too: the writer drains them now.
                st.activate();
                st.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
            st.push(&item, flush, &self.wire.written);
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Queues `item` without waiting for room and leaves it to the writer task (for small
    /// control frames sent where nothing can wait: `Drop`, the reader).
    pub fn send_now<O: Outgoing>(&self, item: O) -> Result<(), Closed> {
        let mut st = self.wire.lock();
        if st.closed() {
            return Err(Closed);
        }
        st.push(&item, Flush::Batch, &self.wire.written);
        Ok(())
    }

    /// Writes what [`Flush::Later`] left queued.
    pub fn flush(&self) {
        let mut st = self.wire.lock();
        if !st.active && !st.batch.is_empty() && !st.closed() {
            st.write_direct(&self.wire.written);
        }
    }

    /// Writes what is queued, then shuts the write side down; later sends fail.
    pub fn close(&self) {
        let mut st = self.wire.lock();
        st.closing = true;
        st.activate();
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.wire.written.load(Ordering::Relaxed)
    }
}

/// The connection's writer task: writes what senders leave to it, until the write side is
/// closed (then shuts it down) or a write fails.
pub struct WriterTask {
    wire: Arc<Wire>,
}

impl std::fmt::Debug for WriterTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterTask(..)")
    }
}

impl WriterTask {
    pub async fn run(self) -> std::io::Result<()> {
        let wire = &self.wire;
        poll_fn(|cx| {
            let mut st = wire.lock();
            if let Some((kind, msg)) = &st.failed {
                return Poll::Ready(Err(std::io::Error::new(*kind, msg.clone())));
            }
            if !st.active {
                match &st.writer {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.writer = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            match st.write_some(cx, &wire.written) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => {
                    st.fail(&e);
                    Poll::Ready(Err(e))
                }
                Poll::Ready(Ok(())) => {
                    st.active = false;
                    st.wake_waiting();
                    if st.closing {
                        return Poll::Ready(Ok(()));
                    }
                    st.writer = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        let shut = poll_fn(|cx| wire.lock().w.as_mut().poll_shutdown(cx)).await;
        let mut st = wire.lock();
        st.done = true;
        st.wake_waiting();
        shut
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, duplex};

    use super::*;

    /// Raw bytes as one "frame".
    struct Raw(Vec<u8>);

    impl Outgoing for Raw {
        fn encode(&self, batch: &mut WriteBatch) -> Result<(), EncodeError> {
            batch.push_raw(&self.0);
            Ok(())
        }
    }

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_sender_writes_without_the_writer_task() {
        let (w, mut r) = duplex(1 << 16);
        // The writer task is never run: only the sender's own write can deliver.
        let (tx, _writer) = FrameTx::new(w, None);
        tx.send(Raw(b"hello".to_vec()), Flush::Now).await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(LIMIT, r.read_exact(&mut got))
            .await
            .expect("direct write arrived")
            .unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(tx.written(), 5);
    }

    #[tokio::test]
    async fn later_frames_wait_for_flush_and_go_in_one_write() {
        let (w, mut r) = duplex(1 << 16);
        let (tx, _writer) = FrameTx::new(w, None);
        tx.send(Raw(b"ab".to_vec()), Flush::Later).await.unwrap();
        tx.send(Raw(b"cd".to_vec()), Flush::Later).await.unwrap();
        let mut buf = [0u8; 8];
        let mut cx = Context::from_waker(Waker::noop());
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        assert!(
            Pin::new(&mut r).poll_read(&mut cx, &mut rb).is_pending(),
            "nothing is written before flush"
        );
        tx.flush();
        let n = tokio::time::timeout(LIMIT, r.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"abcd");
    }

    #[tokio::test]
    async fn a_slow_reader_holds_senders_back_and_order_is_kept() {
        // A pipe far smaller than the frames: most of each frame waits in the batch.
        let (w, mut r) = duplex(4096);
        let (tx, writer) = FrameTx::new(w, Some(b"P"));
        let writer = tokio::spawn(writer.run());
        let frame = |i: u8| Raw(vec![i; 700 * 1024]);
        let sender = tokio::spawn(async move {
            for i in 1..=4u8 {
                tx.send(frame(i), Flush::Now).await.unwrap();
            }
            // Dropping the last sender closes the write side once everything is written.
        });
        // Nothing is read yet: the third frame finds the batch over its high-water mark, so
        // the sender cannot finish however long it runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sender.is_finished(), "the sender waits for room");
        let mut all = Vec::new();
        tokio::time::timeout(LIMIT, r.read_to_end(&mut all))
            .await
            .expect("everything arrives, then EOF")
            .unwrap();
        tokio::time::timeout(LIMIT, sender).await.unwrap().unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(all.len(), 1 + 4 * 700 * 1024);
        assert_eq!(all[0], b'P');
        for (i, chunk) in all[1..].chunks(700 * 1024).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == i as u8 + 1),
                "frame {i} in order"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_write_fails_senders_and_the_writer_task() {
        let (w, r) = duplex(64);
        let (tx, writer) = FrameTx::new(w, None);
        let writer = tokio::spawn(writer.run());
        drop(r);
        // The first send may be taken (or fail at once); once the failure is seen every send
        // fails and the writer task reports it.
        let _ = tx.send(Raw(vec![1; 128]), Flush::Now).await;
        let err = tokio::time::timeout(LIMIT, writer)
            .await
            .expect("writer ends")
            .unwrap()
            .expect_err("the write failed");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(tx.send(Raw(vec![2]), Flush::Now).await.is_err());
        assert!(tx.send_now(Raw(vec![3])).is_err());
    }

    #[tokio::test]
    async fn close_writes_what_is_queued_then_ends() {
        let (w, mut r) = duplex(1 << 16);
        let (tx, writer) = FrameTx::new(w, None);
        let writer = tokio::spawn(writer.run());
        tx.send(Raw(b"last".to_vec()), Flush::Later).await.unwrap();
        tx.close();
        assert!(tx.send(Raw(b"late".to_vec()), Flush::Now).await.is_err());
        let mut all = Vec::new();
        tokio::time::timeout(LIMIT, r.read_to_end(&mut all))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(all, b"last");
        writer.await.unwrap().unwrap();
    }
}
