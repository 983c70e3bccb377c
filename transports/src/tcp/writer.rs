//! The write side of a connection: one task drains a queue of outgoing frames, packs whatever
//! is queued into one batch and writes it with a vectored write, so concurrent calls share
//! syscalls instead of each paying for one.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::codec::{EncodeError, WriteBatch};

/// Stop packing more frames into a batch once it holds this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// Slices handed to one `write_vectored` call.
const MAX_SLICES: usize = 64;

/// Something the writer can put on the wire.
pub(crate) trait Outgoing: Send + 'static {
    /// Appends this item's frames to `batch`.
    fn encode(&self, batch: &mut WriteBatch) -> Result<(), EncodeError>;
    /// True for the item that asks the writer to flush and close the connection.
    fn is_close(&self) -> bool {
        false
    }
}

/// Writes everything `rx` yields until every sender is gone (or a close item arrives), then
/// shuts the write side down. `preface` goes first.
pub(crate) async fn write_loop<W, O>(
    mut w: W,
    mut rx: mpsc::Receiver<O>,
    preface: Option<&'static [u8]>,
    written: &AtomicU64,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    O: Outgoing,
{
    let mut batch = WriteBatch::new();
    if let Some(p) = preface {
        batch.push_raw(p);
    }
    let mut closing = false;
    while !closing {
        if batch.is_empty() {
            match rx.recv().await {
                Some(item) => closing |= push(&mut batch, &item),
                None => break,
            }
        }
        while !closing && batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(item) => closing |= push(&mut batch, &item),
                Err(_) => break,
            }
        }
        flush(&mut w, &mut batch, written).await?;
    }
    flush(&mut w, &mut batch, written).await?;
    w.shutdown().await
}

fn push<O: Outgoing>(batch: &mut WriteBatch, item: &O) -> bool {
    if item.is_close() {
        return true;
    }
    if let Err(e) = item.encode(batch) {
        // Callers check sizes before queueing; reaching this is a bug, not bad input.
        tracing::error!("dropping a frame that cannot be encoded: {e}");
    }
    false
}

async fn flush<W: AsyncWrite + Unpin>(
    w: &mut W,
    batch: &mut WriteBatch,
    written: &AtomicU64,
) -> std::io::Result<()> {
    while !batch.is_empty() {
        let n = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let k = batch.io_slices(&mut slices);
            w.write_vectored(&slices[..k]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        batch.advance(n);
        written.fetch_add(n as u64, Ordering::Relaxed);
    }
    // A TLS stream may keep records it could not yet put on the socket: push them out now (a
    // no-op on a plain TCP stream).
    w.flush().await
}
