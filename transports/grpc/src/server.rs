//! The `grpc` server: hyper's HTTP/2 server per connection (TLS optional), a hand-written
//! router over tonic's codec. Unary calls that need no waiting are answered in the request's
//! own future; waiting unary calls and streams run the shared echo in a task of their own,
//! whose cancellation token fires when hyper drops the call (client reset or gone).
//!
//! A drain closes the listener and asks each connection for HTTP/2's graceful shutdown (hyper
//! sends GOAWAY, serves the streams already open to their end, then closes); the grace's end
//! cancels the handlers still running, as `shutdown` does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tonic::Streaming;
use tonic::body::Body;
use tonic_prost::ProstCodec;

use super::{
    ALPN, FRAMING_SLACK, GrpcOptions, STREAM_BUFFER, from_header_map, from_tonic_status,
    method_path, parse_grpc_timeout, proto, to_tonic_metadata, to_tonic_status,
};
use wirebench_core::call::CallEvent;
use wirebench_core::drain::{DrainReport, ServerTasks, cut_status};
use wirebench_core::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::Status;
use wirebench_core::transport::{Server, ServerConfig, TransportError};
use wirebench_tls::{describe_handshake_error, peer_identity};

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for a connection to send the status of its cancelled calls after
/// GOAWAY.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The server's connection window unless `connection_window` says otherwise (hyper's default
/// is 1 MiB). h2 (0.4.16 on) closes a connection with `GOAWAY(ENHANCE_YOUR_CALM,
/// "too_many_data_frames")` once the small DATA frames it holds unread cost more than a budget
/// of half this window, and hyper has no knob for that budget. gRPC clients send one small
/// frame per small message, so with 1 MiB a handler that fell ~2,100 such frames behind (a
/// 2 ms stall of its thread on a busy 2-vCPU VM) lost its whole connection; at 16 MiB it is
/// ~34,000 frames.
pub(super) const DEFAULT_SERVER_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// A running `grpc` server.
#[derive(Debug)]
pub struct GrpcServer {
    addr: SocketAddr,
    tasks: ServerTasks,
}

impl Server for GrpcServer {
    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    async fn shutdown(self) {
        self.tasks.shutdown().await;
    }

    /// Each connection sends GOAWAY (hyper's graceful shutdown) and ends once its streams have.
    async fn drain(self, grace: Duration) -> DrainReport {
        self.tasks.drain(grace).await
    }
}

/// What every call of a server shares.
#[derive(Debug)]
struct Shared {
    echo: Arc<Echo>,
    /// The HTTP/2 layer's message limit (the payload limit is the echo's, checked exactly).
    decode_limit: usize,
    /// Cancelled on shutdown; every waiting handler's token is a child of it.
    shutdown: CancellationToken,
    /// Cancelled on drain (and with `shutdown`, its parent): stop accepting, GOAWAY.
    draining: CancellationToken,
    /// Where handler tasks run.
    calls: TaskTracker,
}

impl GrpcServer {
    pub(super) async fn bind(
        config: &ServerConfig,
        echo: Arc<Echo>,
        options: GrpcOptions,
    ) -> Result<GrpcServer, TransportError> {
        let listen = &config.listen;
        let acceptor = wirebench_tls::Acceptor::for_server(config.tls.as_ref(), ALPN, listen)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TransportError::io(format!("binding {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TransportError::io("reading the bound address", e))?;
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .initial_stream_window_size(options.stream_window)
            .initial_connection_window_size(
                options
                    .connection_window
                    .unwrap_or(DEFAULT_SERVER_CONNECTION_WINDOW),
            )
            .max_concurrent_streams(options.max_concurrent_streams);
        if options.adaptive_window {
            http2.adaptive_window(true);
        }
        let shutdown = CancellationToken::new();
        let draining = shutdown.child_token();
        let calls = TaskTracker::new();
        let shared = Arc::new(Shared {
            decode_limit: echo.config().max_message_size.saturating_add(FRAMING_SLACK),
            echo,
            shutdown: shutdown.clone(),
            draining: draining.clone(),
            calls: calls.clone(),
        });
        let conns = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            acceptor,
            http2,
            shared,
            conns.clone(),
        ));
        Ok(GrpcServer {
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
}

type Http2 = hyper::server::conn::http2::Builder<TokioExecutor>;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<wirebench_tls::Acceptor>,
    http2: Http2,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let draining = shared.draining.clone();
    loop {
        let accepted = tokio::select! {
            // Draining or stopping: the listener is dropped on return, refusing newcomers.
            _ = draining.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have, retry shortly.
                tracing::warn!("grpc accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!("grpc {peer}: cannot set TCP_NODELAY: {e}");
        }
        let shared = shared.clone();
        let http2 = http2.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let Some(acceptor) = tls else {
                serve_connection(stream, None, &http2, shared).await;
                return;
            };
            // A drain abandons a handshake: the connection has no calls yet.
            let handshake = tokio::select! {
                _ = shared.draining.cancelled() => return,
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    let identity = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(peer_identity)
                        .map(Arc::from);
                    serve_connection(tls, identity, &http2, shared).await;
                }
                Ok(Err(e)) => tracing::debug!("grpc {peer}: {}", describe_handshake_error(&e)),
                Err(_) => tracing::debug!("grpc {peer}: TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection<I>(io: I, identity: Option<Arc<str>>, http2: &Http2, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stop = shared.shutdown.clone();
    let draining = shared.draining.clone();
    let service = EchoService { shared, identity };
    let conn = http2.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("grpc connection ended: {e}");
            }
            return;
        }
        _ = draining.cancelled() => {}
    }
    // GOAWAY: the client opens no new stream here; hyper serves the open ones to their end and
    // then closes the connection. Draining, that is the whole story unless the grace runs out.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.cancelled() => {}
    }
    // Stopping: the handlers are cancelled; give them a moment to send their status.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn).await;
}

/// The service of one connection: routes a request to its method.
#[derive(Clone, Debug)]
struct EchoService {
    shared: Arc<Shared>,
    /// The client certificate's identity under mutual TLS.
    identity: Option<Arc<str>>,
}

type Reply = http::Response<Body>;

impl hyper::service::Service<http::Request<Incoming>> for EchoService {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let identity = self.identity.clone();
        Box::pin(async move { Ok(route(shared, identity, req).await) })
    }
}

fn method_of(path: &str) -> Option<Method> {
    Method::ALL.into_iter().find(|m| method_path(*m) == path)
}

fn head_of(
    method: Method,
    headers: &http::HeaderMap,
    identity: Option<Arc<str>>,
) -> Result<CallHead, Status> {
    let deadline = match headers.get("grpc-timeout") {
        None => None,
        Some(v) => Some(
            Instant::now()
                + parse_grpc_timeout(v.as_bytes()).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "malformed grpc-timeout {:?} (1 to 8 digits and a unit H, M, S, m, u, n)",
                        String::from_utf8_lossy(v.as_bytes())
                    ))
                })?,
        ),
    };
    let metadata = from_header_map(headers)
        .map_err(|e| Status::invalid_argument(format!("invalid request metadata: {e}")))?;
    Ok(CallHead {
        method,
        metadata,
        deadline,
        peer_identity: identity,
    })
}

async fn route(
    shared: Arc<Shared>,
    identity: Option<Arc<str>>,
    req: http::Request<Incoming>,
) -> Reply {
    let Some(method) = method_of(req.uri().path()) else {
        return tonic::Status::unimplemented(format!(
            "method {} is not implemented by the echo service",
            req.uri().path()
        ))
        .into_http();
    };
    let head = match head_of(method, req.headers(), identity) {
        Ok(h) => h,
        Err(status) => return to_tonic_status(&status).into_http(),
    };
    let mut grpc =
        tonic::server::Grpc::new(ProstCodec::<proto::EchoResponse, proto::EchoRequest>::default())
            .max_decoding_message_size(shared.decode_limit);
    if method == Method::Unary {
        // tonic calls the service once; taking its inputs out avoids copying the call's head.
        let mut inputs = Some((shared, head));
        let svc = tower::service_fn(move |r: tonic::Request<proto::EchoRequest>| {
            let inputs = inputs.take();
            async move {
                let (shared, head) = inputs.ok_or_else(called_twice)?;
                unary(shared, head, r.into_inner()).await
            }
        });
        grpc.server_streaming(svc, req).await
    } else {
        // tonic's request stream reports a client's RST_STREAM(CANCEL) as a clean end of the
        // requests, like a half-close: the body wrapper tells them apart through the token.
        let token = shared.shutdown.child_token();
        let req = req.map(|body| ResetAware {
            inner: body,
            token: token.clone(),
        });
        let mut inputs = Some((shared, head, token));
        let svc = tower::service_fn(move |r: tonic::Request<Streaming<proto::EchoRequest>>| {
            let inputs = inputs.take();
            async move {
                let (shared, head, token) = inputs.ok_or_else(called_twice)?;
                stream(shared, head, token, r.into_inner()).await
            }
        });
        grpc.streaming(svc, req).await
    }
}

/// A request body that cancels the call's token when the stream fails (reset by the client,
/// connection lost) before passing the error on.
struct ResetAware {
    inner: Incoming,
    token: CancellationToken,
}

impl http_body::Body for ResetAware {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Err(_)) = &frame {
            self.token.cancel();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn called_twice() -> tonic::Status {
    tonic::Status::internal("call service invoked twice")
}

/// The body of a unary answer: at most the response, then the final status.
type UnaryBody = futures::stream::Iter<
    std::iter::Chain<
        std::option::IntoIter<Result<proto::EchoResponse, tonic::Status>>,
        std::option::IntoIter<Result<proto::EchoResponse, tonic::Status>>,
    >,
>;

async fn unary(
    shared: Arc<Shared>,
    head: CallHead,
    request: proto::EchoRequest,
) -> Result<tonic::Response<UnaryBody>, tonic::Status> {
    let outcome = match shared.echo.unary_now(&head, request.into()) {
        Ok(outcome) => outcome,
        Err(request) => {
            // The call must wait: its handler runs in a task of its own that observes the
            // deadline, and the client's reset through the token (hyper drops this future,
            // and with it the guard).
            let token = shared.shutdown.child_token();
            let guard = token.clone().drop_guard();
            let (tx, rx) = oneshot::channel();
            let echo = shared.echo.clone();
            let stopping = shared.shutdown.clone();
            shared.calls.spawn(async move {
                let mut outcome = echo.unary(&head, request, &token).await;
                outcome.status = cut_status(outcome.status, &stopping);
                let _ = tx.send(outcome);
            });
            let outcome = rx
                .await
                .map_err(|_| tonic::Status::internal("unary handler ended without an answer"))?;
            guard.disarm();
            outcome
        }
    };
    unary_reply(outcome)
}

fn unary_reply(o: UnaryOutcome) -> Result<tonic::Response<UnaryBody>, tonic::Status> {
    let UnaryOutcome {
        headers,
        response,
        status,
    } = o;
    let (first, last) = match response {
        Some(r) if status.is_ok() => (Some(Ok(r.into())), Some(Err(to_tonic_status(&status)))),
        // A failure with no initial metadata is a trailers-only response.
        _ if headers.is_empty() => return Err(to_tonic_status(&status)),
        _ => (None, Some(Err(to_tonic_status(&status)))),
    };
    let metadata = to_tonic_metadata(&headers).map_err(|s| to_tonic_status(&s))?;
    let body = futures::stream::iter(first.into_iter().chain(last));
    Ok(tonic::Response::from_parts(
        metadata,
        body,
        tonic::Extensions::new(),
    ))
}

async fn stream(
    shared: Arc<Shared>,
    head: CallHead,
    token: CancellationToken,
    requests: Streaming<proto::EchoRequest>,
) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
    // Dropped by hyper with this future (client reset before any reply) or with the body
    // (reset later): either way the handler observes the cancellation.
    let guard = token.clone().drop_guard();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let echo = shared.echo.clone();
    let stopping = shared.shutdown.clone();
    shared.calls.spawn(async move {
        let mut call = GrpcServerCall {
            requests,
            events: tx,
            token: token.clone(),
        };
        let status = echo.handle(&head, &mut call, &token).await;
        let status = cut_status(status, &stopping);
        let _ = call.events.send(CallEvent::End(status)).await;
    });
    let mut body = ResponseStream {
        rx,
        first: None,
        end: None,
        done: false,
        _guard: guard,
    };
    // gRPC sends the response headers once: wait for the handler's first word.
    let metadata = match body.rx.recv().await {
        Some(CallEvent::Headers(md)) => to_tonic_metadata(&md).map_err(|s| to_tonic_status(&s))?,
        Some(CallEvent::Message(m)) => {
            body.first = Some(m);
            Default::default()
        }
        Some(CallEvent::End(status)) if status.is_ok() => {
            body.end = Some(status);
            Default::default()
        }
        Some(CallEvent::End(status)) => return Err(to_tonic_status(&status)),
        None => {
            return Err(tonic::Status::internal(
                "stream handler ended without status",
            ));
        }
    };
    Ok(tonic::Response::from_parts(
        metadata,
        body,
        tonic::Extensions::new(),
    ))
}

/// The response body of a streaming call: the handler's responses, then its status as the
/// trailers (tonic sends an `Err` item as the trailers, an OK status included).
struct ResponseStream {
    rx: mpsc::Receiver<CallEvent>,
    first: Option<EchoResponse>,
    end: Option<Status>,
    done: bool,
    _guard: DropGuard,
}

impl futures::Stream for ResponseStream {
    type Item = Result<proto::EchoResponse, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(m) = self.first.take() {
            return Poll::Ready(Some(Ok(m.into())));
        }
        if let Some(end) = self.end.take() {
            self.done = true;
            return Poll::Ready(Some(Err(to_tonic_status(&end))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            return match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(CallEvent::Message(m)) => Poll::Ready(Some(Ok(m.into()))),
                // The echo sends headers once, before any response: there is none here.
                Some(CallEvent::Headers(_)) => continue,
                Some(CallEvent::End(status)) => {
                    self.done = true;
                    Poll::Ready(Some(Err(to_tonic_status(&status))))
                }
                None => {
                    self.done = true;
                    Poll::Ready(Some(Err(tonic::Status::internal(
                        "stream handler ended without status",
                    ))))
                }
            };
        }
    }
}

/// The server side of a streaming call for the shared echo.
///
/// When the client is gone (its stream reset, its connection closed) the call cancels its
/// token and never completes: the echo runs every call operation under that token, so it then
/// observes the cancellation itself instead of a transport error.
struct GrpcServerCall {
    requests: Streaming<proto::EchoRequest>,
    events: mpsc::Sender<CallEvent>,
    token: CancellationToken,
}

impl GrpcServerCall {
    async fn client_gone<T>(&self) -> T {
        self.token.cancel();
        std::future::pending().await
    }
}

impl ServerCall for GrpcServerCall {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        let next = self.requests.message().await;
        // A reset shows as the end of the requests (or an error): the body wrapper has
        // cancelled the token by then.
        if self.token.is_cancelled() {
            return self.client_gone().await;
        }
        match next {
            Ok(m) => Ok(m.map(EchoRequest::from)),
            Err(s) => Err(from_tonic_status(&s)),
        }
    }

    async fn send_headers(&mut self, headers: Metadata) -> Result<(), Status> {
        if self.events.send(CallEvent::Headers(headers)).await.is_err() {
            return self.client_gone().await;
        }
        Ok(())
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        if self
            .events
            .send(CallEvent::Message(response))
            .await
            .is_err()
        {
            return self.client_gone().await;
        }
        Ok(())
    }
}
