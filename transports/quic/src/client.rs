//! The `quic` client: a quinn connection of its own (one UDP socket), one stream per call. A
//! unary call runs entirely in the caller's task; a streaming call gets a reader task that
//! feeds the shared [`EventReceiver`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::stream::{
    FrameReader, FrameWriter, ReadFail, WriteFail, connection_status, write_status,
};
use super::{ALPN, QuicOptions, STREAM_BUFFER, codes, parse_endpoint};
use wirebench_core::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::Status;
use wirebench_core::transport::{
    CallOptions, CallSender, ClientConfig, Connection, TransportError, UnaryReply, WireBytes,
    until_deadline,
};
use wirebench_tls::ClientTls;
use wirebench_wire::check_header_size;
use wirebench_wire::codec::{
    FLAG_END_STREAM, Frame, OpenHeader, OutHeader, Payload, RequestHeader, metadata_from_wire,
};

static EMPTY: Bytes = Bytes::new();

/// A `quic` client connection.
#[derive(Debug)]
pub struct QuicConnection {
    conn: quinn::Connection,
    /// Keeps the UDP socket and its driver alive.
    _endpoint: quinn::Endpoint,
    max_message_size: usize,
    /// A connection made in 0-RTT: `None` while it is still handshaking, then whether the
    /// server accepted the early data. `None` outside when the connection never used 0-RTT.
    handshake: Option<watch::Receiver<Option<bool>>>,
}

impl Drop for QuicConnection {
    fn drop(&mut self) {
        self.conn
            .close(quinn::VarInt::from_u32(codes::NO_ERROR), b"client closed");
    }
}

/// What a server's frame means to the client.
enum Event {
    Headers(Result<Metadata, Status>),
    Response(Result<EchoResponse, Status>),
    Status(Status),
    Protocol(&'static str),
}

fn event(frame: Frame<'_>, max: usize) -> Event {
    match frame {
        Frame::Headers(_, h) => Event::Headers(
            metadata_from_wire(&h.entries)
                .map_err(|e| Status::internal(format!("server sent invalid metadata: {e}"))),
        ),
        Frame::Response {
            header, payload, ..
        } => Event::Response(match payload {
            Payload::Bytes(b) => Ok(header.response(b)),
            Payload::TooLarge(n) => Err(Status::resource_exhausted(format!(
                "response message of {n} bytes exceeds the client's limit of {max} bytes"
            ))),
        }),
        Frame::Status(_, h) => Event::Status(h.status()),
        Frame::GoAway(_) => Event::Protocol("GOAWAY is not used on quic"),
        Frame::Open(..) | Frame::Message { .. } | Frame::HalfClose(_) | Frame::Cancel(_) => {
            Event::Protocol("a client-only frame from the server")
        }
    }
}

/// True for QUIC's CRYPTO_ERROR range (a TLS alert).
fn is_tls(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Why one attempt at a unary call failed.
enum Attempt {
    Failed(Status),
    /// Sent as 0-RTT early data and rejected: never processed, safe to send again.
    ZeroRttRejected,
}

impl From<Status> for Attempt {
    fn from(s: Status) -> Attempt {
        Attempt::Failed(s)
    }
}

fn read_attempt(e: ReadFail) -> Attempt {
    match e {
        ReadFail::ZeroRttRejected => Attempt::ZeroRttRejected,
        e => Attempt::Failed(e.status("server")),
    }
}

fn write_attempt(e: WriteFail) -> Attempt {
    match e {
        WriteFail::Quic(quinn::WriteError::ZeroRttRejected) => Attempt::ZeroRttRejected,
        WriteFail::Quic(e) => Attempt::Failed(write_status(&e, "server")),
        WriteFail::Encode(e) => Attempt::Failed(Status::resource_exhausted(format!(
            "request could not be encoded: {e}"
        ))),
    }
}

/// A unary call's stream: reset and stopped if dropped before the call completed (the
/// caller's deadline passed or it gave up).
struct UnaryStream {
    reader: FrameReader,
    writer: FrameWriter,
    done: bool,
}

impl Drop for UnaryStream {
    fn drop(&mut self) {
        if !self.done {
            self.writer.reset(codes::CANCELLED);
            self.reader.stop(codes::CANCELLED);
        }
    }
}

impl QuicConnection {
    pub(super) async fn connect(
        config: &ClientConfig,
        endpoint: &str,
        options: QuicOptions,
    ) -> Result<QuicConnection, TransportError> {
        let (addr, pin) = parse_endpoint(endpoint)?;
        let tls_err = |reason: String| TransportError::Tls {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let tls = match (&config.tls, pin) {
            (Some(t), _) => t.clone(),
            (None, Some(pin)) => ClientTls::pinned(pin),
            (None, None) => {
                return Err(tls_err(
                    "QUIC always uses TLS: give the client TLS settings, or connect to the \
                     endpoint a server without TLS settings reports (it carries \
                     #cert-sha256=...)"
                        .into(),
                ));
            }
        };
        let rustls = wirebench_tls::client_config(&tls, &[ALPN], options.zero_rtt)
            .map_err(|e| tls_err(e.to_string()))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
            .map_err(|e| tls_err(e.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = options.transport_config(false);
        if let Some(every) = config.keepalive {
            // Dead-peer detection: ack-eliciting PINGs every interval keep a live path busy,
            // and an idle timeout of two intervals ends a path that stopped answering (the
            // peers agree on the smaller idle timeout, so the client's bound holds).
            transport.keep_alive_interval(Some(every));
            if let Ok(idle) = quinn::IdleTimeout::try_from(every.saturating_mul(2)) {
                transport.max_idle_timeout(Some(idle));
            }
        }
        client_config.transport_config(Arc::new(transport));
        let connect = async {
            let remote: SocketAddr = tokio::net::lookup_host(addr)
                .await
                .map_err(|e| TransportError::io(format!("resolving {addr}"), e))?
                .next()
                .ok_or_else(|| TransportError::Endpoint {
                    endpoint: endpoint.to_owned(),
                    reason: "resolves to no address".into(),
                })?;
            let local: SocketAddr = if remote.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let quinn_endpoint = quinn::Endpoint::client(local)
                .map_err(|e| TransportError::io("binding a UDP socket", e))?;
            let connecting = quinn_endpoint
                .connect_with(client_config, remote, tls.server_name())
                .map_err(|e| TransportError::Endpoint {
                    endpoint: endpoint.to_owned(),
                    reason: e.to_string(),
                })?;
            let handshake_err = |e: quinn::ConnectionError| match e {
                // TLS alerts travel as QUIC's CRYPTO_ERROR codes, 0x100 + alert.
                quinn::ConnectionError::TransportError(t) if is_tls(t.code) => {
                    tls_err(t.to_string())
                }
                quinn::ConnectionError::ConnectionClosed(c) if is_tls(c.error_code) => {
                    tls_err(format!("the server refused the handshake: {c}"))
                }
                e => TransportError::Protocol(format!("QUIC handshake with {endpoint}: {e}")),
            };
            let (conn, handshake) = if options.zero_rtt {
                match connecting.into_0rtt() {
                    Ok((conn, accepted)) => {
                        let (tx, rx) = watch::channel(None);
                        tokio::spawn(async move {
                            let accepted = accepted.await;
                            let _ = tx.send(Some(accepted));
                        });
                        (conn, Some(rx))
                    }
                    // No ticket for this server yet: a full handshake.
                    Err(connecting) => (connecting.await.map_err(handshake_err)?, None),
                }
            } else {
                (connecting.await.map_err(handshake_err)?, None)
            };
            Ok::<_, TransportError>((conn, quinn_endpoint, handshake))
        };
        let (conn, quinn_endpoint, handshake) =
            tokio::time::timeout(config.connect_timeout, connect)
                .await
                .map_err(|_| TransportError::Timeout(format!("connecting to {endpoint}")))??;
        Ok(QuicConnection {
            conn,
            _endpoint: quinn_endpoint,
            max_message_size: config.max_message_size,
            handshake,
        })
    }

    /// `None` when the connection was made with a full handshake; with 0-RTT, whether the
    /// server has accepted the early data (false while the handshake is still running).
    pub fn zero_rtt(&self) -> Option<bool> {
        self.handshake.as_ref().map(|h| h.borrow().unwrap_or(false))
    }

    /// True when the connection was made in 0-RTT and its handshake is still running.
    fn early(&self) -> bool {
        self.handshake
            .as_ref()
            .is_some_and(|h| h.borrow().is_none())
    }

    /// Waits until the handshake is complete (immediately unless connected in 0-RTT).
    async fn handshake_done(&self) -> Result<(), Status> {
        if let Some(h) = &self.handshake {
            let mut h = h.clone();
            h.wait_for(Option::is_some)
                .await
                .map_err(|_| Status::unavailable("quic handshake did not complete"))?;
        }
        Ok(())
    }

    async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), Status> {
        self.conn.open_bi().await.map_err(|e| connection_status(&e))
    }

    async fn unary_once(
        &self,
        open: &OpenHeader,
        request: &RequestHeader,
        payload: &Bytes,
    ) -> Result<UnaryReply, Attempt> {
        let (send, recv) = self.open_stream().await?;
        let mut s = UnaryStream {
            reader: FrameReader::new(recv, self.max_message_size),
            writer: FrameWriter::new(send),
            done: false,
        };
        s.writer
            .push(0, OutHeader::Open(open), &EMPTY)
            .map_err(write_attempt)?;
        s.writer
            .push(FLAG_END_STREAM, OutHeader::Message(request), payload)
            .map_err(write_attempt)?;
        s.writer.flush().await.map_err(write_attempt)?;
        s.writer.finish();
        let max = self.max_message_size;
        let mut headers = Metadata::new();
        let mut message = None;
        let status = loop {
            let ev = s
                .reader
                .next(|f| event(f, max))
                .await
                .map_err(read_attempt)?;
            match ev {
                Some(Event::Headers(md)) => headers = md?,
                Some(Event::Response(r)) => message = Some(r?),
                Some(Event::Status(status)) => break status,
                Some(Event::Protocol(why)) => {
                    s.writer.reset(codes::PROTOCOL_ERROR);
                    s.reader.stop(codes::PROTOCOL_ERROR);
                    s.done = true;
                    return Err(
                        Status::internal(format!("protocol error from server: {why}")).into(),
                    );
                }
                None => {
                    return Err(Status::internal("server ended the stream without a status").into());
                }
            }
        };
        // The FIN follows the status at once; reading it spares a STOP_SENDING on drop.
        let _ = s.reader.finish().await;
        s.done = true;
        let mut status = status;
        match message {
            Some(message) if status.is_ok() => Ok(UnaryReply {
                headers,
                message,
                trailers: status.take_metadata(),
            }),
            _ if status.is_ok() => {
                Err(Status::internal("server ended a unary call with OK but no response").into())
            }
            _ => Err(status.into()),
        }
    }
}

impl Connection for QuicConnection {
    type Sender = QuicSender;
    type Receiver = EventReceiver<QuicCancel>;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        check_header_size(&options.metadata, &request.directives)?;
        let open = OpenHeader::new(Method::Unary.as_u8(), options.timeout, &options.metadata);
        let header = RequestHeader::from(&request.directives);
        until_deadline(options.deadline(), async {
            // Only calls marked replay-safe may go out as 0-RTT early data.
            if !options.replay_safe && self.early() {
                self.handshake_done().await?;
            }
            match self.unary_once(&open, &header, &request.payload).await {
                Ok(r) => Ok(r),
                Err(Attempt::Failed(s)) => Err(s),
                Err(Attempt::ZeroRttRejected) => {
                    self.handshake_done().await?;
                    match self.unary_once(&open, &header, &request.payload).await {
                        Ok(r) => Ok(r),
                        Err(Attempt::Failed(s)) => Err(s),
                        Err(Attempt::ZeroRttRejected) => Err(Status::unavailable(
                            "0-RTT data rejected after the handshake",
                        )),
                    }
                }
            }
        })
        .await
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(QuicSender, EventReceiver<QuicCancel>), Status> {
        check_header_size(&options.metadata, &Default::default())?;
        let deadline = options.deadline();
        let open = OpenHeader::new(method.as_u8(), options.timeout, &options.metadata);
        let (send, recv) = until_deadline(deadline, async {
            // Streams never use 0-RTT.
            self.handshake_done().await?;
            self.open_stream().await
        })
        .await?;
        let mut writer = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv, self.max_message_size);
        // Writing OPEN makes the stream, and so the call, visible to the server.
        if let Err(e) = writer.write(0, OutHeader::Open(&open), &EMPTY).await {
            writer.reset(codes::CANCELLED);
            reader.stop(codes::CANCELLED);
            return Err(match write_attempt(e) {
                Attempt::Failed(s) => s,
                Attempt::ZeroRttRejected => Status::unavailable("0-RTT data rejected"),
            });
        }
        let token = CancellationToken::new();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(read_call(reader, tx, token.clone(), self.max_message_size));
        Ok((
            QuicSender {
                writer,
                token: token.clone(),
                closed: false,
            },
            EventReceiver::new(rx, deadline, QuicCancel(token)),
        ))
    }

    async fn close(&self) {
        self.conn
            .close(quinn::VarInt::from_u32(codes::NO_ERROR), b"client closed");
    }

    fn wire_bytes(&self) -> Option<WireBytes> {
        let stats = self.conn.stats();
        Some(WireBytes {
            sent: stats.udp_tx.bytes,
            received: stats.udp_rx.bytes,
        })
    }
}

/// Reads a streaming call's frames into its event channel until the status, a failure, or
/// the client's cancel (which stops the server's sending side with `CANCELLED`).
async fn read_call(
    mut reader: FrameReader,
    tx: mpsc::Sender<CallEvent>,
    token: CancellationToken,
    max: usize,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = token.cancelled() => {
                reader.stop(codes::CANCELLED);
                return;
            }
            n = reader.next(|f| event(f, max)) => n,
        };
        let ev = match next {
            Ok(Some(Event::Headers(Ok(md)))) => CallEvent::Headers(md),
            Ok(Some(Event::Response(Ok(m)))) => CallEvent::Message(m),
            Ok(Some(Event::Headers(Err(s)) | Event::Response(Err(s)))) => {
                // The call is over for us: tell the server too.
                token.cancel();
                reader.stop(codes::CANCELLED);
                let _ = tx.send(CallEvent::End(s)).await;
                return;
            }
            Ok(Some(Event::Status(status))) => {
                let _ = tx.send(CallEvent::End(status)).await;
                let _ = reader.finish().await;
                return;
            }
            Ok(Some(Event::Protocol(why))) => {
                token.cancel();
                reader.stop(codes::PROTOCOL_ERROR);
                let s = Status::internal(format!("protocol error from server: {why}"));
                let _ = tx.send(CallEvent::End(s)).await;
                return;
            }
            Ok(None) => {
                let s = Status::internal("server ended the stream without a status");
                let _ = tx.send(CallEvent::End(s)).await;
                return;
            }
            Err(e) => {
                token.cancel();
                let _ = tx.send(CallEvent::End(e.status("server"))).await;
                return;
            }
        };
        if tx.send(ev).await.is_err() {
            // The receiver is gone, which cancelled the call.
            reader.stop(codes::CANCELLED);
            return;
        }
    }
}

/// Cancels a `quic` call: its reader stops the server's sending side and the sender resets
/// its own (both with code `CANCELLED`).
#[derive(Debug)]
pub struct QuicCancel(CancellationToken);

impl CancelSignal for QuicCancel {
    fn cancel(&mut self) {
        self.0.cancel();
    }
}

/// The sending half of a `quic` stream.
pub struct QuicSender {
    writer: FrameWriter,
    token: CancellationToken,
    closed: bool,
}

impl std::fmt::Debug for QuicSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicSender")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl QuicSender {
    fn ended(&mut self) -> Status {
        if !self.closed {
            self.closed = true;
            self.writer.reset(codes::CANCELLED);
        }
        call_ended()
    }
}

impl CallSender for QuicSender {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        if self.closed || self.token.is_cancelled() {
            return Err(self.ended());
        }
        check_header_size(&Metadata::new(), &request.directives)?;
        let header = RequestHeader::from(&request.directives);
        match self
            .writer
            .write(0, OutHeader::Message(&header), &request.payload)
            .await
        {
            Ok(()) => Ok(()),
            Err(WriteFail::Encode(e)) => Err(Status::resource_exhausted(format!(
                "request could not be encoded: {e}"
            ))),
            // The server stopped reading or the connection went: the status is on the
            // receiving half.
            Err(WriteFail::Quic(_)) => Err(self.ended()),
        }
    }

    async fn close_send(&mut self) -> Result<(), Status> {
        if !self.closed {
            self.closed = true;
            self.writer.finish();
        }
        Ok(())
    }
}

impl Drop for QuicSender {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if self.token.is_cancelled() {
            self.writer.reset(codes::CANCELLED);
        } else {
            // Dropping the sender half-closes, as on every transport.
            self.writer.finish();
        }
    }
}
