//! The `tcp` client: calls multiplexed over one connection by stream id; a reader task routes
//! each frame to its call; a lone call writes its own request, concurrent calls share the
//! writer task's batched writes.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{ALPN, READ_CHUNK, STREAM_BUFFER};
use wirebench_core::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::Status;
use wirebench_core::transport::{
    CallOptions, CallSender, ClientConfig, Connection, TransportError, UnaryReply, WireBytes,
    spawn_connection_task, until_deadline,
};
use wirebench_wire::check_header_size;
use wirebench_wire::codec::{
    Decoded, Decoder, EncodeError, FLAG_END_STREAM, Frame, OpenHeader, OutHeader, PREFACE, Payload,
    RequestHeader, WriteBatch, metadata_from_wire,
};
use wirebench_wire::writer::{Flush, FrameTx, Outgoing};

/// What a client queues for its writer.
enum Out {
    /// OPEN + MESSAGE(END): a whole unary request.
    Unary {
        id: u32,
        open: OpenHeader,
        request: RequestHeader,
        payload: Bytes,
    },
    Open(u32, OpenHeader),
    Message {
        id: u32,
        request: RequestHeader,
        payload: Bytes,
        end: bool,
    },
    HalfClose(u32),
    Cancel(u32),
}

static EMPTY: Bytes = Bytes::new();

impl Outgoing for Out {
    fn encode(&self, batch: &mut WriteBatch) -> Result<(), EncodeError> {
        match self {
            Out::Unary {
                id,
                open,
                request,
                payload,
            } => {
                batch.push(*id, 0, OutHeader::Open(open), &EMPTY)?;
                batch.push(*id, FLAG_END_STREAM, OutHeader::Message(request), payload)
            }
            Out::Open(id, open) => batch.push(*id, 0, OutHeader::Open(open), &EMPTY),
            Out::Message {
                id,
                request,
                payload,
                end,
            } => {
                let flags = if *end { FLAG_END_STREAM } else { 0 };
                batch.push(*id, flags, OutHeader::Message(request), payload)
            }
            Out::HalfClose(id) => batch.push(*id, 0, OutHeader::HalfClose, &EMPTY),
            Out::Cancel(id) => batch.push(*id, 0, OutHeader::Cancel, &EMPTY),
        }
    }
}

/// A unary call's state, filled by the reader and polled by the caller (no channel, no
/// allocation per call).
#[derive(Default)]
struct UnarySlot {
    headers: Metadata,
    response: Option<EchoResponse>,
    end: Option<Status>,
    waker: Option<Waker>,
}

enum Slot {
    Unary(UnarySlot),
    Stream(mpsc::Sender<CallEvent>),
}

struct Pending {
    calls: HashMap<u32, Slot>,
    /// Set once the connection takes no new calls (the server said GOAWAY, or the connection
    /// is gone): the status every new call fails with, and the calls still open when the
    /// connection ends.
    dead: Option<Status>,
}

struct Shared {
    out: FrameTx,
    received: AtomicU64,
    pending: Mutex<Pending>,
    next_id: AtomicU32,
    max_message_size: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock would be a bug; the state stays usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Registers a call; returns its stream id and how many calls are open with it.
    fn register(&self, slot: Slot) -> Result<(u32, usize), Status> {
        let mut p = self.lock();
        if let Some(dead) = &p.dead {
            return Err(dead.clone());
        }
        let id = self.next_id();
        p.calls.insert(id, slot);
        Ok((id, p.calls.len()))
    }

    /// Tells the server a call is cancelled, without waiting (called from `Drop`).
    fn cancel(self: &Arc<Self>, id: u32) {
        let removed = self.lock().calls.remove(&id).is_some();
        if removed {
            self.send_now(Out::Cancel(id));
        }
    }

    fn send_now(&self, item: Out) {
        // A closed connection has no call left to tell.
        let _ = self.out.send_now(item);
    }

    async fn send(&self, item: Out, flush: Flush) -> Result<(), Status> {
        self.out
            .send(item, flush)
            .await
            .map_err(|_| self.dead_status())
    }

    fn dead_status(&self) -> Status {
        self.lock()
            .dead
            .clone()
            .unwrap_or_else(|| Status::unavailable("tcp connection closed"))
    }

    /// Refuses new calls with `status` (the latest GOAWAY's reason wins); calls already open
    /// go on.
    fn go_away(&self, status: Status) {
        self.lock().dead = Some(status);
    }

    /// Fails every call still waiting and refuses new ones. A GOAWAY received before says why
    /// better than the end of the connection does: its status is kept. A unary answer already
    /// in (its last frames may come just before the server closes) stays for its caller.
    fn fail_all(&self, status: Status) {
        let mut wakers = Vec::new();
        let mut streams = Vec::new();
        let status = {
            let mut p = self.lock();
            let status = p.dead.get_or_insert(status).clone();
            p.calls.retain(|_, slot| match slot {
                Slot::Unary(u) => {
                    if u.end.is_none() {
                        u.end = Some(status.clone());
                        wakers.extend(u.waker.take());
                    }
                    true
                }
                Slot::Stream(tx) => {
                    streams.push(tx.clone());
                    false
                }
            });
            status
        };
        for w in wakers {
            w.wake();
        }
        for tx in streams {
            let _ = tx.try_send(CallEvent::End(status.clone()));
        }
    }
}

/// A `tcp` client connection.
pub struct TcpConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection").finish_non_exhaustive()
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        self.shared.out.close();
    }
}

impl TcpConnection {
    /// Connects (TLS handshake included when configured) and starts the connection's reader
    /// and writer tasks.
    pub(crate) async fn connect(
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<TcpConnection, TransportError> {
        let connect = async {
            let stream = TcpStream::connect(endpoint)
                .await
                .map_err(|e| TransportError::io(format!("connecting to {endpoint}"), e))?;
            stream
                .set_nodelay(true)
                .map_err(|e| TransportError::io("setting TCP_NODELAY", e))?;
            let Some(tls) = &config.tls else {
                let (rd, wr) = stream.into_split();
                return Ok(TcpConnection::over(rd, wr, config));
            };
            let stream = wirebench_tls::dial(stream, tls, ALPN, endpoint).await?;
            let (rd, wr) = tokio::io::split(stream);
            Ok(TcpConnection::over(rd, wr, config))
        };
        tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| TransportError::Timeout(format!("connecting to {endpoint}")))?
    }

    /// A connection over any byte pipe (a socket, a TLS stream, an in-memory duplex).
    pub(crate) fn over<R, W>(rd: R, wr: W, config: &ClientConfig) -> TcpConnection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Send + 'static,
    {
        let (out, writer) = FrameTx::new(wr, Some(&PREFACE));
        let shared = Arc::new(Shared {
            out,
            received: AtomicU64::new(0),
            pending: Mutex::new(Pending {
                calls: HashMap::new(),
                dead: None,
            }),
            next_id: AtomicU32::new(1),
            max_message_size: config.max_message_size,
        });
        let writer_shared = shared.clone();
        let local = config.local_tasks;
        spawn_connection_task(local, async move {
            if let Err(e) = writer.run().await {
                writer_shared.fail_all(Status::unavailable(format!("tcp write failed: {e}")));
            }
        });
        let reader_shared = shared.clone();
        spawn_connection_task(local, async move {
            let status = read_loop(rd, &reader_shared).await;
            reader_shared.fail_all(status);
        });
        TcpConnection { shared }
    }

    fn poll_unary(
        &self,
        id: u32,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<UnaryReply, Status>> {
        let mut p = self.shared.lock();
        let Some(Slot::Unary(slot)) = p.calls.get_mut(&id) else {
            let status = p
                .dead
                .clone()
                .unwrap_or_else(|| Status::unavailable("tcp connection closed"));
            return Poll::Ready(Err(status));
        };
        if slot.end.is_none() {
            match &slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let Some(Slot::Unary(slot)) = p.calls.remove(&id) else {
            unreachable!("slot checked above");
        };
        let mut status = slot.end.unwrap_or_else(Status::ok);
        Poll::Ready(match slot.response {
            Some(message) if status.is_ok() => Ok(UnaryReply {
                headers: slot.headers,
                message,
                trailers: status.take_metadata(),
            }),
            _ if status.is_ok() => Err(Status::internal(
                "server ended a unary call with OK but no response",
            )),
            _ => Err(status),
        })
    }
}

/// Cancels the call if dropped before it completed.
struct UnaryGuard<'a> {
    shared: &'a Arc<Shared>,
    id: u32,
}

impl Drop for UnaryGuard<'_> {
    fn drop(&mut self) {
        self.shared.cancel(self.id);
    }
}

impl Connection for TcpConnection {
    type Sender = TcpSender;
    type Receiver = EventReceiver<TcpCancel>;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        let deadline = options.deadline();
        let open = OpenHeader::new(Method::Unary.as_u8(), options.timeout, &options.metadata);
        let header = RequestHeader::from(&request.directives);
        check_header_size(&options.metadata, &request.directives)?;
        let (id, in_flight) = self.shared.register(Slot::Unary(UnarySlot::default()))?;
        let _guard = UnaryGuard {
            shared: &self.shared,
            id,
        };
        let out = Out::Unary {
            id,
            open,
            request: header,
            payload: request.payload,
        };
        until_deadline(deadline, async {
            // A lone call writes its request itself; with others in flight the writer task
            // packs the requests queued meanwhile into one write.
            let flush = if in_flight == 1 {
                Flush::Now
            } else {
                Flush::Batch
            };
            self.shared.send(out, flush).await?;
            poll_fn(|cx| self.poll_unary(id, cx)).await
        })
        .await
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(TcpSender, EventReceiver<TcpCancel>), Status> {
        check_header_size(&options.metadata, &Default::default())?;
        let deadline = options.deadline();
        let open = OpenHeader::new(method.as_u8(), options.timeout, &options.metadata);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (id, _) = self.shared.register(Slot::Stream(tx))?;
        if let Err(e) = self.shared.send(Out::Open(id, open), Flush::Batch).await {
            self.shared.lock().calls.remove(&id);
            return Err(e);
        }
        let sender = TcpSender {
            shared: self.shared.clone(),
            id,
            closed: false,
        };
        let cancel = TcpCancel {
            shared: self.shared.clone(),
            id,
        };
        Ok((sender, EventReceiver::new(rx, deadline, cancel)))
    }

    fn wire_bytes(&self) -> Option<WireBytes> {
        Some(WireBytes {
            sent: self.shared.out.written(),
            received: self.shared.received.load(Ordering::Relaxed),
        })
    }

    async fn close(&self) {
        self.shared.out.close();
        self.shared
            .fail_all(Status::unavailable("tcp connection closed by the client"));
    }
}

/// Cancels a `tcp` call: a CANCEL frame for its stream id.
pub struct TcpCancel {
    shared: Arc<Shared>,
    id: u32,
}

impl std::fmt::Debug for TcpCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpCancel({})", self.id)
    }
}

impl CancelSignal for TcpCancel {
    fn cancel(&mut self) {
        self.shared.cancel(self.id);
    }
}

/// The sending half of a `tcp` stream.
pub struct TcpSender {
    shared: Arc<Shared>,
    id: u32,
    closed: bool,
}

impl std::fmt::Debug for TcpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpSender({})", self.id)
    }
}

impl TcpSender {
    fn live(&self) -> bool {
        !self.closed && self.shared.lock().calls.contains_key(&self.id)
    }
}

impl CallSender for TcpSender {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        if !self.live() {
            return Err(call_ended());
        }
        check_header_size(&Metadata::new(), &request.directives)?;
        let item = Out::Message {
            id: self.id,
            request: RequestHeader::from(&request.directives),
            payload: request.payload,
            end: false,
        };
        self.shared.send(item, Flush::Batch).await
    }

    async fn close_send(&mut self) -> Result<(), Status> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.shared
            .send(Out::HalfClose(self.id), Flush::Batch)
            .await
    }
}

impl Drop for TcpSender {
    fn drop(&mut self) {
        if !self.closed && self.shared.lock().calls.contains_key(&self.id) {
            self.shared.send_now(Out::HalfClose(self.id));
        }
    }
}

/// Reads frames until the connection ends; returns the status pending calls fail with.
async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, shared: &Arc<Shared>) -> Status {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = Decoder::client(shared.max_message_size);
    loop {
        let routed = match decoder.decode(&mut buf) {
            Ok(Decoded::Frame(frame)) => route(shared, frame),
            Ok(Decoded::NeedMore(n)) => {
                buf.reserve(n.max(READ_CHUNK));
                match rd.read_buf(&mut buf).await {
                    Ok(0) if buf.is_empty() => {
                        return Status::unavailable("tcp connection closed by the server");
                    }
                    Ok(0) => {
                        return Status::unavailable(format!(
                            "tcp connection closed by the server in the middle of a frame \
                             ({} bytes of it received)",
                            buf.len()
                        ));
                    }
                    Ok(n) => {
                        shared.received.fetch_add(n as u64, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => return Status::unavailable(format!("tcp read failed: {e}")),
                }
            }
            Err(e) => {
                tracing::warn!("closing tcp connection: {e}");
                return Status::internal(format!("protocol error from server: {e}"));
            }
        };
        match routed {
            Routed::Done => {}
            Routed::Wait(tx, ev) => {
                // The stream's buffer is full: wait (this holds back every stream of the
                // connection, which is the connection-level backpressure documented in `tcp`).
                let _ = tx.send(ev).await;
            }
            Routed::Fatal(status) => return status,
        }
    }
}

enum Routed {
    Done,
    Wait(mpsc::Sender<CallEvent>, CallEvent),
    /// The connection cannot go on: every call fails with this.
    Fatal(Status),
}

fn route(shared: &Arc<Shared>, frame: Frame<'_>) -> Routed {
    let (id, event) = match frame {
        Frame::Headers(id, h) => match metadata_from_wire(&h.entries) {
            Ok(md) => (id, CallEvent::Headers(md)),
            Err(e) => (
                id,
                CallEvent::End(Status::internal(format!(
                    "server sent invalid metadata: {e}"
                ))),
            ),
        },
        Frame::Response {
            stream_id,
            header,
            payload,
        } => match payload {
            Payload::Bytes(b) => (stream_id, CallEvent::Message(header.response(b))),
            Payload::TooLarge(n) => {
                let status = Status::resource_exhausted(format!(
                    "response message of {n} bytes exceeds the client's limit of {} bytes",
                    shared.max_message_size
                ));
                let routed = deliver(shared, stream_id, CallEvent::End(status));
                // The server may still be sending: tell it the call is over for us.
                shared.send_now(Out::Cancel(stream_id));
                return routed;
            }
        },
        Frame::Status(id, h) => (id, CallEvent::End(h.status())),
        Frame::GoAway(h) => {
            // No new calls here (they fail at once, so the caller dials again); calls already
            // open keep reading until they end or the server closes the connection.
            let s = h.status();
            shared.go_away(Status::unavailable(format!(
                "server sent GOAWAY, no new calls on this connection: {s}"
            )));
            return Routed::Done;
        }
        Frame::Open(..) | Frame::Message { .. } | Frame::HalfClose(_) | Frame::Cancel(_) => {
            return Routed::Fatal(Status::internal(
                "protocol error: server sent a client-only frame",
            ));
        }
    };
    deliver(shared, id, event)
}

fn deliver(shared: &Arc<Shared>, id: u32, event: CallEvent) -> Routed {
    let mut p = shared.lock();
    let end = matches!(event, CallEvent::End(_));
    match p.calls.get_mut(&id) {
        // A call that was cancelled or timed out: late frames are dropped.
        None => Routed::Done,
        // The first end wins (a locally detected error beats the server's later status).
        Some(Slot::Unary(slot)) if slot.end.is_some() => Routed::Done,
        Some(Slot::Unary(slot)) => {
            match event {
                CallEvent::Headers(md) => slot.headers = md,
                CallEvent::Message(m) => slot.response = Some(m),
                CallEvent::End(s) => slot.end = Some(s),
            }
            if end && let Some(w) = slot.waker.take() {
                w.wake();
            }
            Routed::Done
        }
        Some(Slot::Stream(tx)) => {
            let result = tx.try_send(event);
            let tx = tx.clone();
            if end {
                p.calls.remove(&id);
            }
            match result {
                Ok(()) => Routed::Done,
                Err(mpsc::error::TrySendError::Full(ev)) => Routed::Wait(tx, ev),
                // The receiver is gone (dropped, which cancelled the call).
                Err(mpsc::error::TrySendError::Closed(_)) => Routed::Done,
            }
        }
    }
}
