//! The `grpc` client: tonic's codec over h2 connections driven directly (one task per
//! connection, no tower buffer, no dispatch channel). A unary call runs in the caller's task;
//! a streaming call gets a task that pumps the response into the shared [`EventReceiver`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tonic::body::Body;
use tonic_prost::ProstCodec;

use super::{
    ALPN, FRAMING_SLACK, GrpcOptions, STREAM_BUFFER, from_tonic_metadata, is_transport_error,
    method_path, proto, to_tonic_metadata,
};
use wirebench_core::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{
    CallOptions, CallSender, ClientConfig, Connection, TransportError, UnaryReply, WireBytes,
    spawn_connection_task, until_deadline,
};

/// One HTTP/2 connection as the tower service tonic's client calls, on h2 directly: a
/// request's HEADERS and the body frames ready at once (a unary request's one message) are
/// queued together, so a unary call costs one write and no task of its own.
#[derive(Clone, Debug)]
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    /// Why the connection ended, once it has (the streams only see a generic error).
    ended: Arc<OnceLock<String>>,
}

impl tower::Service<http::Request<Body>> for H2 {
    type Response = http::Response<H2Body>;
    type Error = tonic::Status;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<H2Body>, tonic::Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        // Each call waits for its own stream slot (h2 queues calls beyond the server's
        // SETTINGS_MAX_CONCURRENT_STREAMS per handle): nothing to wait for here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let send = self.send.clone();
        let ended = self.ended.clone();
        Box::pin(async move {
            let lost = |e: h2::Error| connection_lost(&e, &ended);
            let mut send = send.ready().await.map_err(lost)?;
            let (parts, body) = req.into_parts();
            let eos = http_body::Body::is_end_stream(&body);
            let (response, tx) = send
                .send_request(http::Request::from_parts(parts, ()), eos)
                .map_err(lost)?;
            if !eos {
                send_body(body, tx).await;
            }
            let response = response.await.map_err(|e| stream_failed(e, &ended))?;
            Ok(response.map(|recv| H2Body {
                recv,
                data_done: false,
            }))
        })
    }
}

fn connection_lost(e: &h2::Error, ended: &OnceLock<String>) -> tonic::Status {
    match ended.get() {
        Some(why) => tonic::Status::unavailable(format!("grpc connection closed: {why}")),
        None => tonic::Status::unavailable(format!("grpc connection: {e}")),
    }
}

/// A stream reset by the server maps by its reason (gRPC's table); anything else is the
/// connection going.
fn stream_failed(e: h2::Error, ended: &OnceLock<String>) -> tonic::Status {
    if e.is_reset() {
        let mut s = tonic::Status::from_error(Box::new(e));
        if s.code() == tonic::Code::Unknown {
            s = tonic::Status::unavailable(s.message().to_owned());
        }
        s
    } else {
        connection_lost(&e, ended)
    }
}

/// The HTTP/2 reason to reset a stream with for a request body that failed: tonic marks a
/// client cancellation with `CANCEL` in the error's sources.
fn reset_reason(e: &tonic::Status) -> h2::Reason {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(reason) = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        source = err.source();
    }
    h2::Reason::INTERNAL_ERROR
}

/// Sends the request body: the frames ready now inline (with the HEADERS), the rest from a
/// task of its own that respects the stream's flow-control window.
async fn send_body(mut body: Body, mut tx: h2::SendStream<Bytes>) {
    // One frame is held back, so the last one can carry END_STREAM.
    let mut held: Option<Bytes> = None;
    loop {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                // gRPC request bodies have no trailers; data is all there is.
                if let Ok(data) = frame.into_data()
                    && let Some(prev) = held.replace(data)
                    && tx.send_data(prev, false).is_err()
                {
                    return;
                }
            }
            Poll::Ready(None) => {
                let _ = tx.send_data(held.take().unwrap_or_default(), true);
                return;
            }
            Poll::Ready(Some(Err(e))) => {
                tx.send_reset(reset_reason(&e));
                return;
            }
            Poll::Pending => break,
        }
    }
    if let Some(prev) = held.take()
        && tx.send_data(prev, false).is_err()
    {
        return;
    }
    tokio::spawn(pipe_body(body, tx));
}

/// What the request-body pipe waits for.
enum PipeEvent {
    Frame(Option<Result<http_body::Frame<Bytes>, tonic::Status>>),
    /// The server reset the stream: nothing more to send.
    Reset,
}

async fn pipe_body(mut body: Body, mut tx: h2::SendStream<Bytes>) {
    loop {
        let event = std::future::poll_fn(|cx| {
            if tx.poll_reset(cx).is_ready() {
                return Poll::Ready(PipeEvent::Reset);
            }
            Pin::new(&mut body).poll_frame(cx).map(PipeEvent::Frame)
        })
        .await;
        match event {
            PipeEvent::Reset => return,
            PipeEvent::Frame(None) => {
                let _ = tx.send_data(Bytes::new(), true);
                return;
            }
            PipeEvent::Frame(Some(Err(e))) => {
                tx.send_reset(reset_reason(&e));
                return;
            }
            PipeEvent::Frame(Some(Ok(frame))) => {
                if let Ok(mut data) = frame.into_data() {
                    // Backpressure: send no more than the peer's window allows.
                    while !data.is_empty() {
                        tx.reserve_capacity(data.len());
                        let granted = match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
                            Some(Ok(n)) => n,
                            Some(Err(_)) | None => return,
                        };
                        if granted == 0 {
                            continue;
                        }
                        let chunk = data.split_to(granted.min(data.len()));
                        if tx.send_data(chunk, false).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// A response body over an h2 receive stream, releasing flow-control capacity as it is read.
struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                // RST_STREAM(NO_ERROR) ends the body without failing it (RFC 9113 8.1).
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(t) => Poll::Ready(t.map(|t| Ok(http_body::Frame::trailers(t)))),
            Err(e) if e.reason() == Some(h2::Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

type Client = tonic::client::Grpc<H2>;

/// The client's stream window unless `stream_window` says otherwise (hyper's default).
const DEFAULT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The client's connection window unless `connection_window` says otherwise (hyper's).
const DEFAULT_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The client's budget for unread small DATA frames (h2 charges each frame under 256 bytes
/// 256 minus its size): as the server's, half its 16 MiB connection window, ~34,000 frames.
const SMALL_FRAME_BUDGET: usize = 8 * 1024 * 1024;

/// Bytes moved by a connection, counted below TLS.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
}

/// An I/O stream that counts its bytes.
struct Counted<T> {
    inner: T,
    counters: Arc<Counters>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A `grpc` client connection: one or more HTTP/2 connections (option `connections`), calls
/// spread over them round-robin.
pub struct GrpcConnection {
    clients: Box<[Client]>,
    tasks: Box<[AbortHandle]>,
    next: AtomicUsize,
    max_message_size: usize,
    closed: AtomicBool,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for GrpcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConnection")
            .field("connections", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Drop for GrpcConnection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn codec() -> ProstCodec<proto::EchoRequest, proto::EchoResponse> {
    ProstCodec::default()
}

fn path(method: Method) -> PathAndQuery {
    PathAndQuery::from_static(method_path(method))
}

/// A status the client saw, as the model's: losing the connection is `UNAVAILABLE` whatever
/// tonic could not classify.
fn client_status(s: &tonic::Status) -> Status {
    let status = super::from_tonic_status(s);
    if is_transport_error(s) && matches!(status.code(), Code::Unknown | Code::Internal) {
        return Status::unavailable(format!("grpc connection lost: {}", status.message()));
    }
    status
}

fn invalid_metadata(e: wirebench_core::metadata::MetadataError) -> Status {
    Status::internal(format!("server sent invalid metadata: {e}"))
}

/// Splits response headers into initial metadata and, for a trailers-only response (headers
/// carrying `grpc-status`), trailing metadata.
fn response_headers(
    md: &tonic::metadata::MetadataMap,
) -> Result<(Metadata, Option<Metadata>), Status> {
    let parsed = from_tonic_metadata(md).map_err(invalid_metadata)?;
    if md.get("grpc-status").is_some() {
        Ok((Metadata::new(), Some(parsed)))
    } else {
        Ok((parsed, None))
    }
}

fn too_large(n: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "response message of {n} bytes exceeds the client's limit of {max} bytes"
    ))
}

impl GrpcConnection {
    pub(super) async fn connect(
        config: &ClientConfig,
        endpoint: &str,
        options: GrpcOptions,
    ) -> Result<GrpcConnection, TransportError> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let origin: http::Uri =
            format!("{scheme}://{endpoint}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| TransportError::Endpoint {
                    endpoint: endpoint.to_owned(),
                    reason: format!("expected host:port ({e})"),
                })?;
        let counters = Arc::new(Counters::default());
        let n = options.connections.unwrap_or(1);
        let decode_limit = config.max_message_size.saturating_add(FRAMING_SLACK);
        let setup = async {
            let mut clients = Vec::with_capacity(n);
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                let (h2, task) = open(config, endpoint, &options, &counters).await?;
                clients.push(
                    tonic::client::Grpc::with_origin(h2, origin.clone())
                        .max_decoding_message_size(decode_limit),
                );
                tasks.push(task);
            }
            Ok::<_, TransportError>((clients, tasks))
        };
        let (clients, tasks) = tokio::time::timeout(config.connect_timeout, setup)
            .await
            .map_err(|_| TransportError::Timeout(format!("connecting to {endpoint}")))??;
        Ok(GrpcConnection {
            clients: clients.into(),
            tasks: tasks.into(),
            next: AtomicUsize::new(0),
            max_message_size: config.max_message_size,
            closed: AtomicBool::new(false),
            counters,
        })
    }

    fn client(&self) -> Result<Client, Status> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Status::unavailable("grpc connection closed by the client"));
        }
        let i = if self.clients.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()
        };
        Ok(self.clients[i].clone())
    }
}

/// Opens one HTTP/2 connection (TLS first when configured).
async fn open(
    config: &ClientConfig,
    endpoint: &str,
    options: &GrpcOptions,
    counters: &Arc<Counters>,
) -> Result<(H2, AbortHandle), TransportError> {
    let stream = TcpStream::connect(endpoint)
        .await
        .map_err(|e| TransportError::io(format!("connecting to {endpoint}"), e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| TransportError::io("setting TCP_NODELAY", e))?;
    let counted = Counted {
        inner: stream,
        counters: counters.clone(),
    };
    let Some(tls) = &config.tls else {
        return handshake(counted, options, endpoint, config).await;
    };
    let stream = wirebench_tls::dial(counted, tls, ALPN, endpoint).await?;
    handshake(stream, options, endpoint, config).await
}

async fn handshake<I>(
    io: I,
    options: &GrpcOptions,
    endpoint: &str,
    config: &ClientConfig,
) -> Result<(H2, AbortHandle), TransportError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::client::Builder::new();
    // Until the server's SETTINGS arrive its stream limit is unknown: open one stream at a
    // time rather than have streams over its limit refused (gRPC clients wait for the
    // server's preface the same way).
    builder.initial_max_send_streams(1);
    // h2's own defaults (64 KiB windows) throttle large messages and leave little room for
    // responses buffered before their callers read them: default to hyper's windows, as the
    // server does.
    builder.initial_window_size(options.stream_window.unwrap_or(DEFAULT_STREAM_WINDOW));
    let connection_window = options
        .connection_window
        .unwrap_or(DEFAULT_CONNECTION_WINDOW);
    builder.initial_connection_window_size(connection_window);
    // h2's guard against floods of small DATA frames closes the connection once the unread
    // ones cost more than its budget (by default half the connection window: ~10,800 frames
    // of a small message at 5 MiB). A server streaming small messages to a caller that reads
    // late fills it within flow control: give the client the server's tolerance.
    builder.data_frame_budget((connection_window as usize / 2).max(SMALL_FRAME_BUDGET));
    let (send, mut conn) = builder
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| TransportError::Protocol(format!("HTTP/2 handshake with {endpoint}: {e}")))?;
    // h2 has no keepalive timer of its own (hyper's lives above it): with `keepalive` set, a
    // PING goes out every interval and an unanswered one ends the connection.
    let pinger = config
        .keepalive
        .and_then(|k| conn.ping_pong().map(|p| (p, k)));
    let endpoint = endpoint.to_owned();
    let ended = Arc::new(OnceLock::new());
    let reason = ended.clone();
    let task = spawn_connection_task(config.local_tasks, async move {
        // The reason is recorded before the connection (and with it the streams) is dropped,
        // so the failing calls can name it.
        let why = tokio::select! {
            r = &mut conn => match r {
                Ok(()) => "by the server".to_owned(),
                Err(e) => {
                    tracing::debug!("grpc connection to {endpoint} ended: {e}");
                    e.to_string()
                }
            },
            why = keepalive_pings(pinger) => why,
        };
        let _ = reason.set(why);
    });
    Ok((H2 { send, ended }, task))
}

/// Pings every interval; returns (why the peer is considered dead) once a PING goes
/// unanswered for an interval. Never returns without a pinger.
async fn keepalive_pings(pinger: Option<(h2::PingPong, Duration)>) -> String {
    let Some((mut ping_pong, every)) = pinger else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection itself failed: its own error ends the select first, or soon.
            Ok(Err(e)) => return format!("keepalive PING failed: {e}"),
            Err(_) => {
                return format!(
                    "the peer did not answer a keepalive PING within {every:?}: considered dead"
                );
            }
        }
    }
}

fn request<T>(message: T, options: &CallOptions) -> Result<tonic::Request<T>, Status> {
    let mut req = tonic::Request::new(message);
    if !options.metadata.is_empty() {
        *req.metadata_mut() = to_tonic_metadata(&options.metadata)?;
    }
    if let Some(t) = options.timeout {
        req.set_timeout(t);
    }
    Ok(req)
}

impl Connection for GrpcConnection {
    type Sender = GrpcSender;
    type Receiver = EventReceiver<GrpcCancel>;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        let mut client = self.client()?;
        let req = self::request(proto::EchoRequest::from(request), options)?;
        let max = self.max_message_size;
        until_deadline(options.deadline(), async move {
            let st = |s: tonic::Status| client_status(&s);
            client.ready().await.map_err(st)?;
            let (md, mut body, _) = client
                .server_streaming(req, path(Method::Unary), codec())
                .await
                .map_err(st)?
                .into_parts();
            let (headers, trailers_only) = response_headers(&md)?;
            let Some(message) = body.message().await.map_err(st)?.map(EchoResponse::from) else {
                return Err(Status::internal(
                    "server ended a unary call with OK but no response",
                ));
            };
            if message.payload.len() > max {
                return Err(too_large(message.payload.len(), max));
            }
            if body.message().await.map_err(st)?.is_some() {
                return Err(Status::internal(
                    "server sent two responses to a unary call",
                ));
            }
            let trailers = match body.trailers().await.map_err(st)? {
                Some(t) => from_tonic_metadata(&t).map_err(invalid_metadata)?,
                None => trailers_only.unwrap_or_default(),
            };
            Ok(UnaryReply {
                headers,
                message,
                trailers,
            })
        })
        .await
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(GrpcSender, EventReceiver<GrpcCancel>), Status> {
        let client = self.client()?;
        let deadline = options.deadline();
        let (req_tx, mut req_rx) = mpsc::channel::<proto::EchoRequest>(STREAM_BUFFER);
        // hyper polls the request body only once the request's HEADERS are handed to h2: the
        // first poll says the server can see the call.
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let mut started = Some(started_tx);
        let requests = futures::stream::poll_fn(move |cx| {
            if let Some(s) = started.take() {
                let _ = s.send(());
            }
            req_rx.poll_recv(cx)
        });
        let mut req = self::request(requests, options)?;
        let handle = req.cancellation_handle();
        let (ev_tx, ev_rx) = mpsc::channel(STREAM_BUFFER);
        let task = tokio::spawn(pump(client, method, req, ev_tx, self.max_message_size));
        let mut cancel = GrpcCancel {
            handle: Some(handle),
            task: task.abort_handle(),
        };
        // Queued behind the server's stream limit, the call waits here; a call that failed
        // before starting drops the signal and reports its status on the receiving half.
        if until_deadline(deadline, async { Ok(started_rx.await) })
            .await
            .is_err()
        {
            cancel.cancel();
            return Err(Status::deadline_exceeded(
                "deadline exceeded before the call could start (client)",
            ));
        }
        Ok((
            GrpcSender { tx: Some(req_tx) },
            EventReceiver::new(ev_rx, deadline, cancel),
        ))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
    }

    fn wire_bytes(&self) -> Option<WireBytes> {
        Some(WireBytes {
            sent: self.counters.sent.load(Ordering::Relaxed),
            received: self.counters.received.load(Ordering::Relaxed),
        })
    }
}

/// Runs a streaming call: sends the request stream, forwards headers, responses and the final
/// status to the receiving half.
async fn pump<S>(
    mut client: Client,
    method: Method,
    req: tonic::Request<S>,
    events: mpsc::Sender<CallEvent>,
    max: usize,
) where
    S: futures::Stream<Item = proto::EchoRequest> + Send + 'static,
{
    let st = |s: tonic::Status| client_status(&s);
    let end = async {
        client.ready().await.map_err(st)?;
        let (md, mut body, _) = client
            .streaming(req, path(method), codec())
            .await
            .map_err(st)?
            .into_parts();
        let (headers, trailers_only) = response_headers(&md)?;
        if events.send(CallEvent::Headers(headers)).await.is_err() {
            return Ok(None);
        }
        loop {
            match body.message().await.map_err(st)? {
                Some(m) => {
                    if m.payload.len() > max {
                        return Err(too_large(m.payload.len(), max));
                    }
                    if events.send(CallEvent::Message(m.into())).await.is_err() {
                        // The receiver is gone (which cancelled the call).
                        return Ok(None);
                    }
                }
                None => {
                    let trailers = match body.trailers().await.map_err(st)? {
                        Some(t) => from_tonic_metadata(&t).map_err(invalid_metadata)?,
                        None => trailers_only.unwrap_or_default(),
                    };
                    return Ok(Some(Status::ok().with_metadata(trailers)));
                }
            }
        }
    }
    .await;
    let status = match end {
        Ok(Some(status)) => status,
        Ok(None) => return,
        Err(status) => status,
    };
    let _ = events.send(CallEvent::End(status)).await;
}

/// Cancels a `grpc` call: `RST_STREAM(CANCEL)` on its HTTP/2 stream.
#[derive(Debug)]
pub struct GrpcCancel {
    handle: Option<tonic::CancellationHandle>,
    task: AbortHandle,
}

impl CancelSignal for GrpcCancel {
    fn cancel(&mut self) {
        // Fails the request body, which makes hyper reset the stream with CANCEL even while
        // the response headers are still awaited; dropping the response (the aborted task)
        // covers a request already fully sent.
        if let Some(h) = self.handle.take() {
            h.cancel();
        }
        self.task.abort();
    }
}

/// The sending half of a `grpc` stream.
#[derive(Debug)]
pub struct GrpcSender {
    tx: Option<mpsc::Sender<proto::EchoRequest>>,
}

impl CallSender for GrpcSender {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        let tx = self.tx.as_ref().ok_or_else(call_ended)?;
        tx.send(request.into()).await.map_err(|_| call_ended())
    }

    async fn close_send(&mut self) -> Result<(), Status> {
        self.tx = None;
        Ok(())
    }
}
