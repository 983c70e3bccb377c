//! The `quic` server: one task per connection accepts streams, one task per stream runs its
//! call. A unary call that needs no waiting is answered as soon as its request is read; other
//! calls run the shared echo while the same task watches the stream for the client's reset or
//! STOP_SENDING, which cancel the handler's token.
//!
//! A drain refuses new connections and streams (see the wire docs), waits for the stream
//! tasks — each holds on until the client acknowledged its answer — then closes every
//! connection with `SHUTDOWN`, as `shutdown` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::VarInt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::stream::{FrameReader, FrameWriter, ReadFail, WriteFail};
use super::{ALPN, PIN_MARK, QuicOptions, STREAM_BUFFER, codes};
use wirebench_core::drain::{DrainReport, Grace, ServerTasks, cut_status};
use wirebench_core::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::Status;
use wirebench_core::transport::{Server, ServerConfig, TransportError};
use wirebench_tls::{peer_identity, to_hex};
use wirebench_wire::codec::{
    Frame, MetadataHeader, OutHeader, Payload, ResponseHeader, StatusHeader, metadata_from_wire,
};

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

static EMPTY: Bytes = Bytes::new();

/// A running `quic` server.
#[derive(Debug)]
pub struct QuicServer {
    addr: SocketAddr,
    /// SHA-256 of a self-signed certificate, published in the endpoint.
    pin: Option<[u8; 32]>,
    endpoint: quinn::Endpoint,
    /// Stream tasks are the calls in flight (one per call).
    tasks: ServerTasks,
}

impl Server for QuicServer {
    fn endpoint(&self) -> String {
        match &self.pin {
            Some(pin) => format!("{}{PIN_MARK}{}", self.addr, to_hex(pin)),
            None => self.addr.to_string(),
        }
    }

    async fn shutdown(self) {
        // Closed before the tasks learn of it: a connection task that ended first would drop
        // its connection, which quinn closes with code 0 instead of SHUTDOWN.
        self.endpoint
            .close(VarInt::from_u32(codes::SHUTDOWN), b"server shutting down");
        self.tasks.shutdown().await;
        // Give the CONNECTION_CLOSE frames a moment to leave; never hang on it.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    async fn drain(self, grace: Duration) -> DrainReport {
        let g = Grace::begin(grace, &self.tasks.calls);
        // New connections are refused, each connection stops granting streams and refuses
        // those the client could still open; a call's task ends once its answer is
        // acknowledged, so closing after them loses nothing.
        self.tasks.draining.cancel();
        g.settle(&self.tasks.calls).await;
        let report = g.report(&self.tasks.calls);
        self.shutdown().await;
        report
    }
}

#[derive(Debug)]
struct Shared {
    echo: Arc<Echo>,
    shutdown: CancellationToken,
    /// Cancelled on drain (and with `shutdown`, its parent).
    draining: CancellationToken,
    /// Where stream tasks run.
    calls: TaskTracker,
}

impl QuicServer {
    pub(super) async fn bind(
        config: &ServerConfig,
        echo: Arc<Echo>,
        options: QuicOptions,
    ) -> Result<QuicServer, TransportError> {
        let listen = &config.listen;
        let tls_err = |reason: String| TransportError::Tls {
            endpoint: listen.clone(),
            reason,
        };
        let (tls, pin) = match &config.tls {
            Some(t) => (t.clone(), None),
            None => {
                let t = wirebench_tls::self_signed_server().map_err(|e| tls_err(e.to_string()))?;
                let pin = wirebench_tls::leaf_sha256(&t);
                (t, pin)
            }
        };
        let mut rustls =
            wirebench_tls::server_config(&tls, &[ALPN]).map_err(|e| tls_err(e.to_string()))?;
        if options.zero_rtt {
            // QUIC allows only 0 or u32::MAX here.
            rustls.max_early_data_size = u32::MAX;
        }
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
            .map_err(|e| tls_err(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(options.transport_config(true)));
        let addr: SocketAddr = tokio::net::lookup_host(listen.as_str())
            .await
            .map_err(|e| TransportError::io(format!("resolving {listen}"), e))?
            .next()
            .ok_or_else(|| TransportError::Endpoint {
                endpoint: listen.clone(),
                reason: "resolves to no address".into(),
            })?;
        let endpoint = quinn::Endpoint::server(server_config, addr)
            .map_err(|e| TransportError::io(format!("binding {listen} (UDP)"), e))?;
        let addr = endpoint
            .local_addr()
            .map_err(|e| TransportError::io("reading the bound address", e))?;
        let shutdown = CancellationToken::new();
        let draining = shutdown.child_token();
        let calls = TaskTracker::new();
        let shared = Arc::new(Shared {
            echo,
            shutdown: shutdown.clone(),
            draining: draining.clone(),
            calls: calls.clone(),
        });
        let conns = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared, conns.clone()));
        Ok(QuicServer {
            addr,
            pin,
            endpoint,
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

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, conns: TaskTracker) {
    loop {
        let incoming = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { return };
        if shared.draining.is_cancelled() {
            // CONNECTION_REFUSED at once: the client does not wait out its handshake timeout.
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        conns.spawn(async move {
            let peer = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("quic {peer}: refused: {e}");
                    return;
                }
            };
            let conn = tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                c = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting) => c,
            };
            let conn = match conn {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!("quic {peer}: handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("quic {peer}: handshake timed out");
                    return;
                }
            };
            serve_connection(conn, shared).await;
        });
    }
}

async fn serve_connection(conn: quinn::Connection, shared: Arc<Shared>) {
    let identity: Option<Arc<str>> = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| peer_identity(&certs))
        .map(Arc::from);
    // Created once, not per stream: each `cancelled()` registers with its token.
    let stop = shared.shutdown.cancelled();
    let drain = shared.draining.cancelled();
    tokio::pin!(stop, drain);
    let mut draining = false;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => {
                conn.close(VarInt::from_u32(codes::SHUTDOWN), b"server shutting down");
                return;
            }
            _ = &mut drain, if !draining => {
                // No more stream credit; what the client was already granted is refused below.
                draining = true;
                conn.set_max_concurrent_bi_streams(VarInt::from_u32(0));
                continue;
            }
            a = conn.accept_bi() => a,
        };
        match accepted {
            Ok((mut send, mut recv)) if draining => {
                let _ = send.reset(VarInt::from_u32(codes::DRAINING));
                let _ = recv.stop(VarInt::from_u32(codes::DRAINING));
            }
            Ok((send, recv)) => {
                let shared = shared.clone();
                let identity = identity.clone();
                let calls = shared.calls.clone();
                // Boxed: a call's future is a couple of KiB, and tokio moves a task's future
                // (spawning, finishing) by copying it; behind a box only the pointer moves.
                calls.spawn(Box::pin(serve_stream(send, recv, shared, identity)));
            }
            Err(e) => {
                tracing::debug!("quic {}: connection ended: {e}", conn.remote_address());
                return;
            }
        }
    }
}

/// What a client's frame means to the server.
enum Incoming {
    Message(Result<EchoRequest, Status>, bool),
    HalfClose,
    Cancel,
    Protocol(String),
}

fn incoming(frame: Frame<'_>, max: usize) -> Incoming {
    match frame {
        Frame::Message {
            header,
            payload,
            end,
            ..
        } => Incoming::Message(
            match payload {
                Payload::Bytes(b) => Ok(header.request(b)),
                Payload::TooLarge(n) => Err(Status::resource_exhausted(format!(
                    "request message of {n} bytes exceeds the server's limit of {max} bytes"
                ))),
            },
            end,
        ),
        Frame::HalfClose(_) => Incoming::HalfClose,
        Frame::Cancel(_) => Incoming::Cancel,
        Frame::Open(..) => Incoming::Protocol("OPEN twice on one stream".into()),
        Frame::GoAway(_) => Incoming::Protocol("GOAWAY is not used on quic".into()),
        Frame::Headers(..) | Frame::Response { .. } | Frame::Status(..) => {
            Incoming::Protocol("a server-only frame from the client".into())
        }
    }
}

/// The call's head from its OPEN frame.
fn open_head(
    frame: Frame<'_>,
    identity: &Option<Arc<str>>,
) -> Result<Result<CallHead, Status>, String> {
    let Frame::Open(_, open) = frame else {
        return Err("the stream does not start with OPEN".into());
    };
    let metadata = match metadata_from_wire(&open.metadata) {
        Ok(md) => md,
        Err(e) => {
            return Ok(Err(Status::invalid_argument(format!(
                "invalid request metadata: {e}"
            ))));
        }
    };
    Ok(Ok(CallHead {
        method: Method::from_u8(open.method).unwrap_or(Method::Unimplemented),
        metadata,
        deadline: open.timeout().map(|t| Instant::now() + t),
        peer_identity: identity.clone(),
    }))
}

fn protocol_error(reader: &mut FrameReader, writer: &mut FrameWriter, why: &str) {
    tracing::debug!("quic stream: protocol error: {why}");
    reader.stop(codes::PROTOCOL_ERROR);
    writer.reset(codes::PROTOCOL_ERROR);
}

async fn serve_stream(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    shared: Arc<Shared>,
    identity: Option<Arc<str>>,
) {
    let mut writer = FrameWriter::new(send);
    answer(recv, &mut writer, &shared, identity).await;
    if shared.draining.is_cancelled() {
        // Draining: the connection is closed once no call runs, and a close drops what the
        // client has not acknowledged yet, so the call holds on until its answer arrived.
        tokio::select! {
            _ = writer.send.stopped() => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
}

async fn answer(
    recv: quinn::RecvStream,
    writer: &mut FrameWriter,
    shared: &Shared,
    identity: Option<Arc<str>>,
) {
    let max = shared.echo.config().max_message_size;
    let mut reader = FrameReader::new(recv, max);
    let head = match reader.next(|f| open_head(f, &identity)).await {
        Ok(Some(Ok(Ok(head)))) => head,
        Ok(Some(Ok(Err(status)))) => {
            let _ = write_status(writer, &status).await;
            writer.finish();
            reader.stop(codes::NO_ERROR);
            return;
        }
        Ok(Some(Err(why))) => return protocol_error(&mut reader, writer, &why),
        Err(ReadFail::Protocol(why)) => return protocol_error(&mut reader, writer, &why),
        // Ended or reset before OPEN: nothing to answer.
        Ok(None) | Err(_) => return,
    };
    if head.method == Method::Unary {
        serve_unary(head, reader, writer, shared).await;
    } else {
        // Boxed: the streaming machinery would otherwise size every call's task, unary ones
        // included (spawning copies the whole future).
        Box::pin(serve_streaming(head, reader, writer, shared)).await;
    }
}

async fn write_status(writer: &mut FrameWriter, status: &Status) -> Result<(), WriteFail> {
    match writer
        .write(0, OutHeader::Status(&StatusHeader::of(status)), &EMPTY)
        .await
    {
        Err(WriteFail::Encode(e)) => {
            // Trailers too large for a header: say so instead of the status.
            let fallback =
                Status::resource_exhausted(format!("the call's status could not be sent: {e}"));
            writer
                .write(0, OutHeader::Status(&StatusHeader::of(&fallback)), &EMPTY)
                .await
        }
        r => r,
    }
}

async fn write_unary(writer: &mut FrameWriter, o: UnaryOutcome) -> Result<(), WriteFail> {
    let pushed = (|| {
        if !o.headers.is_empty() {
            writer.push(
                0,
                OutHeader::Headers(&MetadataHeader::of(&o.headers)),
                &EMPTY,
            )?;
        }
        if let Some(r) = &o.response {
            writer.push(0, OutHeader::Response(&ResponseHeader::of(r)), &r.payload)?;
        }
        writer.push(0, OutHeader::Status(&StatusHeader::of(&o.status)), &EMPTY)
    })();
    match pushed {
        Ok(()) => writer.flush().await,
        Err(WriteFail::Encode(e)) => {
            // Drop whatever was queued; the status says why.
            let status =
                Status::resource_exhausted(format!("the call's answer could not be encoded: {e}"));
            writer.discard();
            write_status(writer, &status).await
        }
        Err(e) => Err(e),
    }
}

/// Resolves when the client gives up on the call: it resets its side of the stream, stops
/// ours, or the connection goes. Reads only after the client's last frame (its requests are
/// all read), so it cannot steal a request.
async fn client_gone(reader: &mut FrameReader, stopped: impl std::future::Future) {
    tokio::pin!(stopped);
    tokio::select! {
        r = reader.finish() => {
            if r.is_ok() {
                // Ended cleanly: only STOP_SENDING can still say the client gave up.
                stopped.await;
            }
        }
        _ = &mut stopped => {}
    }
}

async fn serve_unary(
    head: CallHead,
    mut reader: FrameReader,
    writer: &mut FrameWriter,
    shared: &Shared,
) {
    let max = shared.echo.config().max_message_size;
    let request = match reader.next(|f| incoming(f, max)).await {
        Ok(Some(Incoming::Message(r, _))) => r,
        Ok(Some(Incoming::HalfClose)) | Ok(None) => Err(Status::invalid_argument(
            "unary call carried no request message",
        )),
        Ok(Some(Incoming::Cancel)) | Err(ReadFail::Reset(_)) | Err(ReadFail::Lost(_)) => return,
        Ok(Some(Incoming::Protocol(why))) => {
            return protocol_error(&mut reader, writer, &why);
        }
        Err(e) => {
            let why = format!("{e:?}");
            return protocol_error(&mut reader, writer, &why);
        }
    };
    let request = match request {
        Ok(r) => r,
        Err(status) => {
            if write_status(writer, &status).await.is_ok() {
                writer.finish();
            }
            let _ = reader.finish().await;
            return;
        }
    };
    let outcome = match shared.echo.unary_now(&head, request) {
        Ok(outcome) => outcome,
        // Boxed, as the streaming path is: only calls that wait pay for the waiting state.
        Err(request) => {
            match Box::pin(wait_unary(&head, request, &mut reader, writer, shared)).await {
                Some(outcome) => outcome,
                // Nobody is listening any more.
                None => return,
            }
        }
    };
    if write_unary(writer, outcome).await.is_ok() {
        writer.finish();
    }
    let _ = reader.finish().await;
}

/// Runs a unary call that waits (a delay, a deadline to honour) while watching the stream,
/// so that the handler observes a client that gives up; `None` when it did.
async fn wait_unary(
    head: &CallHead,
    request: EchoRequest,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    shared: &Shared,
) -> Option<UnaryOutcome> {
    let token = shared.shutdown.child_token();
    let stopped = writer.send.stopped();
    let answer = shared.echo.unary(head, request, &token);
    tokio::pin!(answer);
    let gone = client_gone(reader, stopped);
    tokio::pin!(gone);
    let mut gone_done = false;
    let mut outcome = loop {
        tokio::select! {
            o = &mut answer => break o,
            _ = &mut gone, if !gone_done => {
                gone_done = true;
                token.cancel();
            }
        }
    };
    if gone_done {
        return None;
    }
    outcome.status = cut_status(outcome.status, &shared.shutdown);
    Some(outcome)
}

async fn serve_streaming(
    head: CallHead,
    mut reader: FrameReader,
    writer: &mut FrameWriter,
    shared: &Shared,
) {
    let max = shared.echo.config().max_message_size;
    let token = shared.shutdown.child_token();
    let stopped = writer.send.stopped();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let mut call = QuicServerCall {
        rx,
        writer,
        token: token.clone(),
    };
    let read = async {
        let tx = tx;
        loop {
            match reader.next(|f| incoming(f, max)).await {
                Ok(Some(Incoming::Message(r, end))) => {
                    let failed = r.is_err();
                    if tx.send(r).await.is_err() || failed {
                        // The handler finished, or will with this error: stop reading.
                        break;
                    }
                    if end {
                        break;
                    }
                }
                Ok(Some(Incoming::HalfClose)) | Ok(None) => break,
                Ok(Some(Incoming::Cancel)) | Err(ReadFail::Reset(_)) | Err(ReadFail::Lost(_)) => {
                    token.cancel();
                    break;
                }
                Ok(Some(Incoming::Protocol(why))) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("protocol error: {why}"))))
                        .await;
                    reader.stop(codes::PROTOCOL_ERROR);
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.status("client"))).await;
                    reader.stop(codes::PROTOCOL_ERROR);
                    break;
                }
            }
        }
        // Half-closed (the channel's end tells the handler); a later reset still cancels.
        drop(tx);
        if !token.is_cancelled() && matches!(reader.finish().await, Err(ReadFail::Reset(_))) {
            token.cancel();
        }
        std::future::pending::<()>().await;
    };
    let watch_stop = async {
        // Some(code): the client stopped reading; Err: the connection went. Ok(None) comes
        // only after our own FIN was acknowledged, when the call is over.
        if !matches!(stopped.await, Ok(None)) {
            token.cancel();
        }
        std::future::pending::<()>().await;
    };
    let handle = async {
        let status = shared.echo.handle(&head, &mut call, &token).await;
        if !token.is_cancelled() && write_status(call.writer, &status).await.is_ok() {
            call.writer.finish();
        }
    };
    tokio::select! {
        _ = handle => {}
        _ = read => {}
        _ = watch_stop => {}
    }
}

/// The server side of a streaming call for the shared echo.
///
/// When the client gives up (reset, STOP_SENDING, connection lost) the call cancels its
/// token and never completes: the echo runs every operation under that token, so it observes
/// the cancellation itself.
struct QuicServerCall<'a> {
    rx: mpsc::Receiver<Result<EchoRequest, Status>>,
    writer: &'a mut FrameWriter,
    token: CancellationToken,
}

impl QuicServerCall<'_> {
    async fn client_gone<T>(&self) -> T {
        self.token.cancel();
        std::future::pending().await
    }

    async fn write(&mut self, header: OutHeader<'_>, payload: &Bytes) -> Result<(), Status> {
        match self.writer.write(0, header, payload).await {
            Ok(()) => Ok(()),
            Err(WriteFail::Encode(e)) => Err(Status::resource_exhausted(format!(
                "frame could not be encoded: {e}"
            ))),
            Err(WriteFail::Quic(_)) => self.client_gone().await,
        }
    }
}

impl ServerCall for QuicServerCall<'_> {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        let next = self.rx.recv().await;
        // A reset closes the channel too: it is not a half-close.
        if self.token.is_cancelled() {
            return self.client_gone().await;
        }
        next.transpose()
    }

    async fn send_headers(&mut self, headers: Metadata) -> Result<(), Status> {
        self.write(OutHeader::Headers(&MetadataHeader::of(&headers)), &EMPTY)
            .await
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        let header = ResponseHeader::of(&response);
        self.write(OutHeader::Response(&header), &response.payload)
            .await
    }
}
