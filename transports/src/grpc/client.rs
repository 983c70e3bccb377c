//! The `grpc` client: tonic's codec over hyper HTTP/2 connections driven directly (one task
//! per connection, no tower buffer). A unary call runs in the caller's task; a streaming call
//! gets a task that pumps the response into the shared [`EventReceiver`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
use crate::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use crate::message::{EchoRequest, EchoResponse, Method};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::tls::describe_handshake_error;
use crate::transport::{
    CallOptions, CallSender, ClientConfig, Connection, TransportError, UnaryReply, WireBytes,
    until_deadline,
};

/// One HTTP/2 connection as the tower service tonic's client calls.
#[derive(Clone, Debug)]
struct H2 {
    send: SendRequest<Body>,
    /// Why the connection ended, once it has (hyper only tells its requests "canceled").
    ended: Arc<OnceLock<String>>,
}

impl tower::Service<http::Request<Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = tonic::Status;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, tonic::Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        let ended = &self.ended;
        self.send
            .poll_ready(cx)
            .map_err(|e| connection_lost(&e, ended))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let sent = self.send.send_request(req);
        let ended = self.ended.clone();
        Box::pin(async move { sent.await.map_err(|e| connection_lost(&e, &ended)) })
    }
}

fn connection_lost(e: &hyper::Error, ended: &OnceLock<String>) -> tonic::Status {
    match ended.get() {
        Some(why) => tonic::Status::unavailable(format!("grpc connection closed: {why}")),
        None => tonic::Status::unavailable(format!("grpc connection: {e}")),
    }
}

type Client = tonic::client::Grpc<H2>;

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

fn invalid_metadata(e: crate::metadata::MetadataError) -> Status {
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
        return handshake(counted, options, endpoint).await;
    };
    let tls_err = |reason: String| TransportError::Tls {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let rustls = tls
        .rustls_config(&[ALPN], false)
        .map_err(|e| tls_err(e.to_string()))?;
    let name = tls
        .rustls_server_name()
        .map_err(|e| tls_err(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(rustls))
        .connect(name, counted)
        .await
        .map_err(|e| tls_err(describe_handshake_error(&e)))?;
    if let Some(p) = stream.get_ref().1.alpn_protocol()
        && p != ALPN
    {
        return Err(tls_err(format!(
            "server chose ALPN protocol {:?}, not h2",
            String::from_utf8_lossy(p)
        )));
    }
    handshake(stream, options, endpoint).await
}

async fn handshake<I>(
    io: I,
    options: &GrpcOptions,
    endpoint: &str,
) -> Result<(H2, AbortHandle), TransportError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // Until the server's SETTINGS arrive its stream limit is unknown: open one stream at
        // a time rather than have streams over its limit refused (gRPC clients wait for the
        // server's preface the same way).
        .initial_max_send_streams(1)
        .initial_stream_window_size(options.stream_window)
        .initial_connection_window_size(options.connection_window);
    if options.adaptive_window {
        builder.adaptive_window(true);
    }
    let (send, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| TransportError::Protocol(format!("HTTP/2 handshake with {endpoint}: {e}")))?;
    let endpoint = endpoint.to_owned();
    let ended = Arc::new(OnceLock::new());
    let reason = ended.clone();
    let task = tokio::spawn(async move {
        // The reason is recorded before the connection (and with it the requests' dispatch)
        // is dropped, so the failing requests can name it.
        let why = match conn.await {
            Ok(()) => "by the server".to_owned(),
            Err(e) => {
                let why = std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                tracing::debug!("grpc connection to {endpoint} ended: {why}");
                why
            }
        };
        let _ = reason.set(why);
    });
    Ok((H2 { send, ended }, task.abort_handle()))
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
