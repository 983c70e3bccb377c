//! `inproc`: the floor. No I/O at all: a unary call runs the shared echo logic in the caller's
//! task (a task of its own only when it must wait), streams go through tokio channels to a
//! handler task. What it measures is the harness's own cost.
//!
//! A drain closes the server to new connections and calls (`UNAVAILABLE`) and waits for the
//! handler tasks of the calls in flight, up to its grace.

use crate::transport::NetworkPath;
use std::net::SocketAddr;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use crate::drain::{DrainReport, Grace, cut_status};
use crate::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use crate::message::{EchoRequest, EchoResponse, Method};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::transport::{
    CallOptions, CallSender, Capabilities, Capability, ClientConfig, Connection, Server,
    ServerConfig, Transport, TransportError, UnaryReply, until_deadline,
};

/// Messages buffered per direction of a stream before the sender waits.
const STREAM_BUFFER: usize = 64;

/// The `inproc` transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inproc;

#[derive(Debug)]
struct Shared {
    echo: Arc<Echo>,
    /// Set on shutdown and drain: new calls fail with `UNAVAILABLE`.
    closed: AtomicBool,
    /// Cancelled on shutdown: every running handler and waiting client sees it.
    shutdown: CancellationToken,
    /// Handler tasks: the calls in flight that wait or stream.
    calls: TaskTracker,
}

fn registry() -> &'static Mutex<HashMap<u64, Weak<Shared>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Weak<Shared>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

const SCHEME: &str = "inproc:";

/// A running `inproc` server (lives in this process; its endpoint is `inproc:N`).
#[derive(Debug)]
pub struct InprocServer {
    id: u64,
    shared: Arc<Shared>,
}

impl Server for InprocServer {
    fn endpoint(&self) -> String {
        format!("{SCHEME}{}", self.id)
    }

    async fn shutdown(self) {
        self.close();
        self.shared.shutdown.cancel();
        self.shared.calls.close();
        self.shared.calls.wait().await;
    }

    async fn drain(self, grace: Duration) -> DrainReport {
        let g = Grace::begin(grace, &self.shared.calls);
        self.close();
        g.settle(&self.shared.calls).await;
        let report = g.report(&self.shared.calls);
        self.shutdown().await;
        report
    }
}

impl InprocServer {
    /// Admits nothing more: new calls fail with `UNAVAILABLE`, new connections find no server.
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Ok(mut r) = registry().lock() {
            r.remove(&self.id);
        }
    }
}

/// A connection to an `inproc` server.
#[derive(Debug)]
pub struct InprocConnection {
    shared: Arc<Shared>,
    closed: AtomicBool,
    max_message_size: usize,
}

impl Transport for Inproc {
    type Connection = InprocConnection;
    type Server = InprocServer;
    type Broker = crate::NoBroker;
    type Yardstick = crate::NoYardstick;

    fn name(&self) -> &'static str {
        "inproc"
    }

    fn capabilities(&self) -> Capabilities {
        const GAPS: &[(Capability, &str)] = &[
            (
                Capability::WireBytes,
                "inproc has no wire: calls pass through tokio channels, so there are no bytes \
                 to count",
            ),
            (
                Capability::ByteStreamWire,
                "inproc has no wire: messages pass through tokio channels",
            ),
            (
                Capability::Tls,
                "inproc has no wire to encrypt: calls never leave the process",
            ),
            (
                Capability::MutualTls,
                "inproc has no wire to encrypt: calls never leave the process",
            ),
            (
                Capability::MaxConcurrentStreams,
                "inproc has no connection to limit: every call gets its own handler at once",
            ),
            (
                Capability::Broker,
                "inproc is point-to-point RPC, not a message broker",
            ),
            (
                Capability::OutOfProcess,
                "inproc passes calls through channels inside one process: its server runs in \
                 the client's process",
            ),
            (
                Capability::NetworkFaults,
                "inproc has no network hop: calls pass through channels inside the process, so \
                 there is nothing for the fault proxy to sit on",
            ),
            (
                Capability::Datagrams,
                "inproc has no wire: nothing travels in datagrams",
            ),
            (
                Capability::DeadPeerDetection,
                "inproc's peer is in the same process: it cannot go silent while the client \
                 runs, so there is nothing to probe",
            ),
            (
                Capability::Reconnect,
                "an inproc connection is bound to one server instance; a restarted server is a \
                 new instance, reached by connecting again",
            ),
            (
                Capability::StreamHop,
                "inproc has no network hop: there is no byte stream for a proxy to cut or reset",
            ),
        ];
        Capabilities::all_except(GAPS)
    }

    async fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> Result<InprocServer, TransportError> {
        config.options.check_known("inproc", &[])?;
        if config.tls.is_some() {
            return Err(TransportError::Unsupported(
                "inproc has no wire to encrypt: serve it without TLS".into(),
            ));
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            echo,
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            calls: TaskTracker::new(),
        });
        registry()
            .lock()
            .map_err(|_| TransportError::Config("inproc registry poisoned".into()))?
            .insert(id, Arc::downgrade(&shared));
        Ok(InprocServer { id, shared })
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<InprocConnection, TransportError> {
        config.options.check_known("inproc", &[])?;
        if config.tls.is_some() {
            return Err(TransportError::Unsupported(
                "inproc has no wire to encrypt: connect without TLS".into(),
            ));
        }
        let bad = |reason: &str| TransportError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let id: u64 = endpoint
            .strip_prefix(SCHEME)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("expected inproc:N (an inproc server of this process)"))?;
        let shared = registry()
            .lock()
            .map_err(|_| TransportError::Config("inproc registry poisoned".into()))?
            .get(&id)
            .and_then(Weak::upgrade)
            .ok_or_else(|| bad("no such inproc server in this process"))?;
        Ok(InprocConnection {
            shared,
            closed: AtomicBool::new(false),
            max_message_size: config.max_message_size,
        })
    }

    fn network_path(&self, _endpoint: &str) -> Result<NetworkPath, TransportError> {
        Err(TransportError::Unsupported(
            "inproc calls travel over in-process channels: there is no network path to put a \
             fault proxy on"
                .into(),
        ))
    }

    fn endpoint_via(&self, endpoint: &str, _via: SocketAddr) -> Result<String, TransportError> {
        self.network_path(endpoint).map(|_| endpoint.to_owned())
    }
}

impl InprocConnection {
    fn check_open(&self) -> Result<(), Status> {
        if self.closed.load(Ordering::Acquire) || self.shared.closed.load(Ordering::Acquire) {
            return Err(Status::unavailable("inproc server or connection closed"));
        }
        Ok(())
    }

    fn head(&self, method: Method, options: &CallOptions) -> CallHead {
        CallHead {
            method,
            metadata: options.metadata.clone(),
            deadline: options.deadline(),
            peer_identity: None,
        }
    }

    fn check_response(&self, r: &EchoResponse) -> Result<(), Status> {
        check_client_limit(self.max_message_size, r)
    }
}

fn check_client_limit(max: usize, r: &EchoResponse) -> Result<(), Status> {
    if r.payload.len() > max {
        return Err(Status::resource_exhausted(format!(
            "response message of {} bytes exceeds the client's limit of {max} bytes",
            r.payload.len()
        )));
    }
    Ok(())
}

fn into_reply(o: UnaryOutcome) -> Result<UnaryReply, Status> {
    match o.response {
        Some(message) if o.status.is_ok() => {
            let mut status = o.status;
            Ok(UnaryReply {
                headers: o.headers,
                message,
                trailers: status.take_metadata(),
            })
        }
        _ => Err(o.status),
    }
}

impl Connection for InprocConnection {
    type Sender = InprocSender;
    type Receiver = EventReceiver<TokenCancel>;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        self.check_open()?;
        let head = self.head(Method::Unary, options);
        let reply = match self.shared.echo.unary_now(&head, request) {
            Ok(outcome) => into_reply(outcome)?,
            Err(request) => {
                // The call must wait: its handler gets a task of its own so that it observes
                // the client's cancellation (this future dropped) or the deadline by itself.
                let token = self.shared.shutdown.child_token();
                let _guard = token.clone().drop_guard();
                let (tx, rx) = oneshot::channel();
                let echo = self.shared.echo.clone();
                let deadline = head.deadline;
                self.shared.calls.spawn(async move {
                    let outcome = echo.unary(&head, request, &token).await;
                    let _ = tx.send(outcome);
                });
                let mut outcome = until_deadline(deadline, async {
                    rx.await
                        .map_err(|_| Status::unavailable("inproc handler ended without answer"))
                })
                .await?;
                if !outcome.status.is_ok() {
                    outcome.status = cut_status(outcome.status, &self.shared.shutdown);
                }
                into_reply(outcome)?
            }
        };
        self.check_response(&reply.message)?;
        Ok(reply)
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(InprocSender, EventReceiver<TokenCancel>), Status> {
        self.check_open()?;
        let head = self.head(method, options);
        let deadline = head.deadline;
        let (req_tx, req_rx) = mpsc::channel(STREAM_BUFFER);
        let (ev_tx, ev_rx) = mpsc::channel(STREAM_BUFFER);
        let token = self.shared.shutdown.child_token();
        let shared = self.shared.clone();
        let server_token = token.clone();
        let max = self.max_message_size;
        self.shared.calls.spawn(async move {
            let mut call = InprocServerCall {
                rx: req_rx,
                tx: ev_tx,
                max,
            };
            let status = shared.echo.handle(&head, &mut call, &server_token).await;
            let status = cut_status(status, &shared.shutdown);
            let _ = call.tx.send(CallEvent::End(status)).await;
        });
        Ok((
            InprocSender { tx: Some(req_tx) },
            EventReceiver::new(ev_rx, deadline, TokenCancel(token)),
        ))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Cancels an `inproc` call by cancelling its handler's token.
#[derive(Debug)]
pub struct TokenCancel(CancellationToken);

impl CancelSignal for TokenCancel {
    fn cancel(&mut self) {
        self.0.cancel();
    }
}

/// The sending half of an `inproc` stream.
#[derive(Debug)]
pub struct InprocSender {
    tx: Option<mpsc::Sender<EchoRequest>>,
}

impl CallSender for InprocSender {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        let tx = self.tx.as_ref().ok_or_else(call_ended)?;
        tx.send(request).await.map_err(|_| call_ended())
    }

    async fn close_send(&mut self) -> Result<(), Status> {
        self.tx = None;
        Ok(())
    }
}

struct InprocServerCall {
    rx: mpsc::Receiver<EchoRequest>,
    tx: mpsc::Sender<CallEvent>,
    max: usize,
}

impl ServerCall for InprocServerCall {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        Ok(self.rx.recv().await)
    }

    async fn send_headers(&mut self, headers: Metadata) -> Result<(), Status> {
        self.tx
            .send(CallEvent::Headers(headers))
            .await
            .map_err(|_| Status::cancelled("client went away"))
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        // The client's receive limit is enforced where the message would cross the wire.
        check_client_limit(self.max, &response)?;
        self.tx
            .send(CallEvent::Message(response))
            .await
            .map_err(|_| Status::cancelled("client went away"))
    }
}
