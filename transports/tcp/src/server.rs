//! The `tcp` server: one reader per connection routes frames to calls; unary calls that need no
//! waiting are answered inline by the reader (no task, no timer), the rest get a task each.
//! Under TLS the same reader and writer run over the two halves of a rustls stream.
//!
//! A drain ends the accept loop (dropping the listener), and each connection sends GOAWAY,
//! refuses OPENs that arrive after it, and closes once its last call has ended; the grace's
//! end, like `shutdown`, cancels whatever still runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ALPN, READ_CHUNK, STREAM_BUFFER};
use wirebench_core::drain::{DrainReport, ServerTasks};
use wirebench_core::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{Server, TransportError};
use wirebench_tls::{ServerTls, describe_handshake_error, peer_identity};
use wirebench_wire::codec::{
    ArchivedOpenHeader, DecodeError, Decoded, Decoder, EncodeError, Frame, MetadataHeader,
    OutHeader, Payload, ResponseHeader, StatusHeader, WriteBatch, metadata_from_wire,
};
use wirebench_wire::writer::{Flush, FrameTx, Outgoing};

/// How long a client may take to complete its TLS handshake before the server drops it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server queues for its writer.
enum Out {
    Headers(u32, MetadataHeader),
    Response(u32, ResponseHeader, Bytes),
    Status(u32, StatusHeader),
    /// A whole unary answer: HEADERS? RESPONSE? STATUS.
    Unary {
        id: u32,
        headers: Option<MetadataHeader>,
        response: Option<(ResponseHeader, Bytes)>,
        status: StatusHeader,
    },
    GoAway(StatusHeader),
}

static EMPTY: Bytes = Bytes::new();

impl Outgoing for Out {
    fn encode(&self, batch: &mut WriteBatch) -> Result<(), EncodeError> {
        match self {
            Out::Headers(id, h) => batch.push(*id, 0, OutHeader::Headers(h), &EMPTY),
            Out::Response(id, h, p) => batch.push(*id, 0, OutHeader::Response(h), p),
            Out::Status(id, h) => batch.push(*id, 0, OutHeader::Status(h), &EMPTY),
            Out::Unary {
                id,
                headers,
                response,
                status,
            } => {
                if let Some(h) = headers {
                    batch.push(*id, 0, OutHeader::Headers(h), &EMPTY)?;
                }
                if let Some((h, p)) = response {
                    batch.push(*id, 0, OutHeader::Response(h), p)?;
                }
                batch.push(*id, 0, OutHeader::Status(status), &EMPTY)
            }
            Out::GoAway(h) => batch.push(0, 0, OutHeader::GoAway(h), &EMPTY),
        }
    }
}

impl Out {
    fn unary(id: u32, o: UnaryOutcome) -> Out {
        Out::Unary {
            id,
            headers: (!o.headers.is_empty()).then(|| MetadataHeader::of(&o.headers)),
            response: o.response.map(|r| (ResponseHeader::of(&r), r.payload)),
            status: StatusHeader::of(&o.status),
        }
    }
}

/// A running `tcp` server.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    tasks: ServerTasks,
}

impl TcpServer {
    pub(crate) async fn bind(
        listen: &str,
        echo: Arc<Echo>,
        tls: Option<&ServerTls>,
    ) -> Result<TcpServer, TransportError> {
        let acceptor = wirebench_tls::Acceptor::for_server(tls, ALPN, listen)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TransportError::io(format!("binding {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TransportError::io("reading the bound address", e))?;
        let stop = Signals::new();
        let shutdown = stop.now.clone();
        let draining = stop.draining.clone();
        let conns = TaskTracker::new();
        let calls = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            echo,
            acceptor,
            stop,
            conns.clone(),
            calls.clone(),
        ));
        Ok(TcpServer {
            addr,
            tasks: ServerTasks {
                shutdown,
                draining,
                accept,
                conns,
                calls,
            },
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Server for TcpServer {
    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    async fn shutdown(self) {
        self.tasks.shutdown().await;
    }

    async fn drain(self, grace: Duration) -> DrainReport {
        self.tasks.drain(grace).await
    }
}

/// The server's two stop signals, as every connection watches them.
#[derive(Clone, Debug)]
pub(crate) struct Signals {
    /// Stop at once.
    pub(crate) now: CancellationToken,
    /// Stop admitting calls (cancelled by `now` too).
    pub(crate) draining: CancellationToken,
}

impl Signals {
    /// Fresh signals: `draining` is a child of `now`, so stopping at once stops admitting too.
    pub(crate) fn new() -> Signals {
        let now = CancellationToken::new();
        let draining = now.child_token();
        Signals { now, draining }
    }
}

async fn accept_loop(
    listener: TcpListener,
    echo: Arc<Echo>,
    tls: Option<wirebench_tls::Acceptor>,
    stop: Signals,
    conns: TaskTracker,
    calls: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            // Draining or stopping: the listener is dropped on return, refusing newcomers.
            _ = stop.draining.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!("tcp {peer}: cannot set TCP_NODELAY: {e}");
                }
                let echo = echo.clone();
                let stop = stop.clone();
                let calls = calls.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let Some(acceptor) = tls else {
                        let (rd, wr) = stream.into_split();
                        let conn = ConnInfo {
                            peer,
                            identity: None,
                        };
                        serve_connection(rd, wr, conn, echo, stop, calls).await;
                        return;
                    };
                    // The handshake runs in the connection's own task: a slow or silent client
                    // never holds up the accept loop. A drain abandons it: it has no calls.
                    let handshake = tokio::select! {
                        _ = stop.draining.cancelled() => return,
                        h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h,
                    };
                    let tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!("tcp {peer}: {}", describe_handshake_error(&e));
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("tcp {peer}: TLS handshake timed out");
                            return;
                        }
                    };
                    let identity = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(peer_identity)
                        .map(Arc::from);
                    let (rd, wr) = tokio::io::split(tls);
                    let conn = ConnInfo { peer, identity };
                    serve_connection(rd, wr, conn, echo, stop, calls).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have, retry shortly.
                tracing::warn!("tcp accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A call the reader knows about.
enum Entry {
    /// A unary call waiting for its request message.
    Opened(CallHead),
    /// A call with a handler task: its request channel (None once half-closed) and its token.
    Running {
        tx: Option<mpsc::Sender<Result<EchoRequest, Status>>>,
        cancel: CancellationToken,
    },
}

/// Who is on the other end of a connection.
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// The client certificate's identity under mutual TLS.
    pub(crate) identity: Option<Arc<str>>,
}

struct Conn {
    echo: Arc<Echo>,
    out: FrameTx,
    calls: HashMap<u32, Entry>,
    done_tx: mpsc::UnboundedSender<u32>,
    done_rx: mpsc::UnboundedReceiver<u32>,
    /// Where handler tasks run (the server's calls in flight).
    tracker: TaskTracker,
    peer: SocketAddr,
    identity: Option<Arc<str>>,
    /// GOAWAY sent: new OPENs are refused, the connection closes once `calls` is empty.
    draining: bool,
}

/// Why a connection's read loop stopped.
enum Stop {
    Eof,
    Shutdown,
    /// Drained: GOAWAY was sent and every call has ended.
    Drained,
    Protocol(Violation),
    Io(std::io::Error),
}

/// How a client broke the wire protocol: the connection ends with a GOAWY saying so.
#[derive(Debug, thiserror::Error)]
enum Violation {
    /// Bytes that are not frames.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The connection closed in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes of it received)")]
    Truncated(usize),
    /// An OPEN for a stream id already in use.
    #[error("stream id {0} opened twice")]
    OpenedTwice(u32),
    /// A MESSAGE after the stream's half-close.
    #[error("stream {0}: message after half-close")]
    AfterHalfClose(u32),
    /// The client sent GOAWAY (a server-only frame).
    #[error("client sent GOAWAY: {0}")]
    ClientGoAway(String),
    /// Another server-only frame.
    #[error("client sent a server-only frame")]
    ServerOnlyFrame,
}

/// Serves one connection (any byte pipe: a socket, a TLS stream, an in-memory duplex) until
/// the client leaves, breaks the protocol, or the server stops.
pub(crate) async fn serve_connection<R, W>(
    rd: R,
    wr: W,
    info: ConnInfo,
    echo: Arc<Echo>,
    signals: Signals,
    tracker: TaskTracker,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let (out_tx, writer) = FrameTx::new(wr, None);
    let writer = tokio::spawn(writer.run());
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        echo,
        out: out_tx,
        calls: HashMap::new(),
        done_tx,
        done_rx,
        tracker,
        peer,
        identity: info.identity,
        draining: false,
    };
    let stop = conn.read_loop(rd, &signals).await;
    let goaway = match &stop {
        Stop::Eof | Stop::Drained => None,
        Stop::Shutdown => Some(Status::unavailable("server shutting down")),
        Stop::Protocol(msg) => {
            tracing::warn!("tcp {peer}: closing connection: {msg}");
            Some(Status::internal(format!("protocol error: {msg}")))
        }
        Stop::Io(e) => {
            tracing::debug!("tcp {peer}: read failed: {e}");
            None
        }
    };
    // The client is gone or being sent away: every handler still running sees a cancel.
    for (_, entry) in conn.calls.drain() {
        if let Entry::Running { cancel, .. } = entry {
            cancel.cancel();
        }
    }
    if let Some(status) = goaway {
        let _ = conn
            .out
            .send(Out::GoAway(StatusHeader::of(&status)), Flush::Now)
            .await;
    }
    drop(conn);
    // The writer ends once every handler has dropped its sender, then shuts the socket.
    let _ = writer.await;
}

impl Conn {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut rd: R, signals: &Signals) -> Stop {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut decoder = Decoder::server(self.echo.config().max_message_size);
        // Created once: a fresh `cancelled()` per read would register with the token each time.
        let stop_now = signals.now.cancelled();
        let drain = signals.draining.cancelled();
        tokio::pin!(stop_now, drain);
        loop {
            let step = match decoder.decode(&mut buf) {
                Ok(Decoded::Frame(frame)) => self.on_frame(frame),
                Ok(Decoded::NeedMore(n)) => {
                    // The replies to every frame of this read go out in one write.
                    self.out.flush();
                    buf.reserve(n.max(READ_CHUNK));
                    let read = tokio::select! {
                        biased;
                        r = rd.read_buf(&mut buf) => Some(r),
                        _ = &mut stop_now => return Stop::Shutdown,
                        _ = &mut drain, if !self.draining => {
                            // `draining` is a child of `now`: cancelled with it, too.
                            if signals.now.is_cancelled() {
                                return Stop::Shutdown;
                            }
                            self.draining = true;
                            let why = Status::unavailable(
                                "server draining: no new calls on this connection",
                            );
                            let goaway = Out::GoAway(StatusHeader::of(&why));
                            if self.out.send(goaway, Flush::Now).await.is_err() {
                                return Stop::Eof;
                            }
                            None
                        }
                        Some(id) = self.done_rx.recv(), if self.draining => {
                            self.calls.remove(&id);
                            None
                        }
                    };
                    match read {
                        None => Ok(Step::Done),
                        Some(Ok(0)) if buf.is_empty() => return Stop::Eof,
                        Some(Ok(0)) => {
                            return Stop::Protocol(Violation::Truncated(buf.len()));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Stop::Io(e),
                    }
                }
                Err(e) => return Stop::Protocol(e.into()),
            };
            match step {
                Ok(Step::Done) => {}
                Ok(Step::Send(item)) => {
                    if self.out.send(item, Flush::Later).await.is_err() {
                        return Stop::Eof;
                    }
                }
                Ok(Step::Deliver(tx, item)) => {
                    // Backpressure: a handler that is not reading holds back this connection
                    // (and the replies queued so far go out before it waits).
                    if tx.capacity() == 0 {
                        self.out.flush();
                    }
                    let _ = tx.send(item).await;
                }
                Err(msg) => return Stop::Protocol(msg),
            }
            if self.draining {
                // Drained once no call is left: the client will open none here after GOAWAY.
                self.reap();
                if self.calls.is_empty() {
                    return Stop::Drained;
                }
            }
        }
    }

    fn reap(&mut self) {
        while let Ok(id) = self.done_rx.try_recv() {
            self.calls.remove(&id);
        }
    }

    fn head(&self, open: &ArchivedOpenHeader) -> Result<CallHead, Status> {
        let metadata = metadata_from_wire(&open.metadata)
            .map_err(|e| Status::invalid_argument(format!("invalid request metadata: {e}")))?;
        let method = Method::from_u8(open.method).unwrap_or(Method::Unimplemented);
        Ok(CallHead {
            method,
            metadata,
            deadline: open.timeout().map(|t| Instant::now() + t),
            peer_identity: self.identity.clone(),
        })
    }

    fn on_frame(&mut self, frame: Frame<'_>) -> Result<Step, Violation> {
        match frame {
            Frame::Open(id, open) => {
                self.reap();
                if self.calls.contains_key(&id) {
                    return Err(Violation::OpenedTwice(id));
                }
                if self.draining {
                    // Sent before our GOAWAY reached the client: refused, it dials again.
                    let status = Status::unavailable("server draining: call not accepted");
                    return Ok(Step::Send(Out::Status(id, StatusHeader::of(&status))));
                }
                let head = match self.head(open) {
                    Ok(h) => h,
                    Err(status) => {
                        return Ok(Step::Send(Out::Status(id, StatusHeader::of(&status))));
                    }
                };
                if head.method == Method::Unary {
                    self.calls.insert(id, Entry::Opened(head));
                } else {
                    self.spawn_stream(id, head);
                }
                Ok(Step::Done)
            }
            Frame::Message {
                stream_id: id,
                header,
                payload,
                end,
            } => {
                let request = match payload {
                    Payload::Bytes(b) => Ok(header.request(b)),
                    Payload::TooLarge(n) => Err(Status::resource_exhausted(format!(
                        "request message of {n} bytes exceeds the server's limit of {} bytes",
                        self.echo.config().max_message_size
                    ))),
                };
                match self.calls.get_mut(&id) {
                    None => Ok(Step::Done),
                    Some(Entry::Opened(_)) => {
                        let Some(Entry::Opened(head)) = self.calls.remove(&id) else {
                            unreachable!("entry checked above");
                        };
                        Ok(self.unary(id, head, request))
                    }
                    Some(Entry::Running { tx, .. }) => {
                        let Some(sender) = tx.clone() else {
                            return Err(Violation::AfterHalfClose(id));
                        };
                        if end {
                            *tx = None;
                        }
                        match sender.try_send(request) {
                            Ok(()) => Ok(Step::Done),
                            Err(mpsc::error::TrySendError::Full(item)) => {
                                Ok(Step::Deliver(sender, item))
                            }
                            // The handler finished: the message is moot.
                            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Step::Done),
                        }
                    }
                }
            }
            Frame::HalfClose(id) => {
                match self.calls.get_mut(&id) {
                    Some(Entry::Running { tx, .. }) => *tx = None,
                    Some(Entry::Opened(_)) => {
                        self.calls.remove(&id);
                        let status =
                            Status::invalid_argument("unary call carried no request message");
                        return Ok(Step::Send(Out::Status(id, StatusHeader::of(&status))));
                    }
                    None => {}
                }
                Ok(Step::Done)
            }
            Frame::Cancel(id) => {
                if let Some(Entry::Running { cancel, .. }) = self.calls.remove(&id) {
                    cancel.cancel();
                }
                Ok(Step::Done)
            }
            Frame::GoAway(h) => Err(Violation::ClientGoAway(h.status().to_string())),
            Frame::Headers(..) | Frame::Response { .. } | Frame::Status(..) => {
                Err(Violation::ServerOnlyFrame)
            }
        }
    }

    fn unary(&mut self, id: u32, head: CallHead, request: Result<EchoRequest, Status>) -> Step {
        let request = match request {
            Ok(r) => r,
            Err(status) => return Step::Send(Out::Status(id, StatusHeader::of(&status))),
        };
        match self.echo.unary_now(&head, request) {
            Ok(outcome) => Step::Send(Out::unary(id, outcome)),
            Err(request) => {
                let cancel = CancellationToken::new();
                self.calls.insert(
                    id,
                    Entry::Running {
                        tx: None,
                        cancel: cancel.clone(),
                    },
                );
                let echo = self.echo.clone();
                let out = self.out.clone();
                let done = self.done_tx.clone();
                self.tracker.spawn(async move {
                    let outcome = echo.unary(&head, request, &cancel).await;
                    if !cancel.is_cancelled() {
                        let _ = out.send(Out::unary(id, outcome), Flush::Now).await;
                    }
                    let _ = done.send(id);
                });
                Step::Done
            }
        }
    }

    fn spawn_stream(&mut self, id: u32, head: CallHead) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let cancel = CancellationToken::new();
        self.calls.insert(
            id,
            Entry::Running {
                tx: Some(tx),
                cancel: cancel.clone(),
            },
        );
        let echo = self.echo.clone();
        let out = self.out.clone();
        let done = self.done_tx.clone();
        let peer = self.peer;
        self.tracker.spawn(async move {
            let mut call = TcpServerCall {
                id,
                rx,
                out: out.clone(),
            };
            let status = echo.handle(&head, &mut call, &cancel).await;
            if !cancel.is_cancelled()
                && out
                    .send(Out::Status(id, StatusHeader::of(&status)), Flush::Batch)
                    .await
                    .is_err()
            {
                tracing::debug!("tcp {peer}: stream {id} ended after its connection");
            }
            let _ = done.send(id);
        });
    }
}

enum Step {
    Done,
    Send(Out),
    Deliver(
        mpsc::Sender<Result<EchoRequest, Status>>,
        Result<EchoRequest, Status>,
    ),
}

struct TcpServerCall {
    id: u32,
    rx: mpsc::Receiver<Result<EchoRequest, Status>>,
    out: FrameTx,
}

impl ServerCall for TcpServerCall {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        self.rx.recv().await.transpose()
    }

    async fn send_headers(&mut self, headers: Metadata) -> Result<(), Status> {
        self.out
            .send(
                Out::Headers(self.id, MetadataHeader::of(&headers)),
                Flush::Batch,
            )
            .await
            .map_err(|_| Status::new(Code::Cancelled, "connection closed"))
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        let header = ResponseHeader::of(&response);
        self.out
            .send(
                Out::Response(self.id, header, response.payload),
                Flush::Batch,
            )
            .await
            .map_err(|_| Status::new(Code::Cancelled, "connection closed"))
    }
}
