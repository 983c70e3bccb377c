//! The `nats` server: attaches to a broker (or starts a private one), joins the service's queue
//! group on `<prefix>.*`, and adapts the shared `Echo`: unary requests that need no waiting are
//! answered inline by the request loop (no task), the rest get a task each.
//!
//! Two loops: the request loop reads only the service subjects, so the hot path polls one
//! subscription per message; the control loop takes stream frames, unary cancellations and
//! finished calls. They share the tables of running calls (locked briefly, never across an
//! await, and never on the plain unary path).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::client::traits::Publisher as _;
use async_nats::message::OutboundMessage;
use async_nats::{Client, HeaderMap, HeaderValue, Message, Subject};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::broker::NatsProcess;
use super::client::{connect_client, publish};
use super::wire::{self, Frame, WireError};
use super::{Endpoint, QUEUE_GROUP, Target, cancel_subject};
use wirebench_core::drain::{DrainReport, Grace};
use wirebench_core::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use wirebench_brokerrpc::flow::{Credit, DEFAULT_WINDOW, Grants};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{ClientConfig, Server, TransportError};

/// How long the broker may take to confirm a starting server's subscriptions.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown step may wait on the broker (which may be gone).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The method a subject's last token names (exactly as [`Method::name`] spells it).
fn method_of(token: &str) -> Method {
    match token {
        "Unary" => Method::Unary,
        "ServerStream" => Method::ServerStream,
        "ClientStream" => Method::ClientStream,
        "Bidi" => Method::Bidi,
        _ => Method::Unimplemented,
    }
}

/// A running `nats` server: one member of its service's queue group. Boxed inside: servers of
/// every transport share one enum, and a broker client (plus maybe a broker) is large.
#[derive(Debug)]
pub struct NatsServer(Box<Running>);

#[derive(Debug)]
struct Running {
    endpoint: Endpoint,
    client: Client,
    shutdown: CancellationToken,
    /// Cancelled on drain (and with `shutdown`, its parent): the request loop drains the
    /// service subscription.
    draining: CancellationToken,
    requests: JoinHandle<()>,
    control: JoinHandle<()>,
    tracker: TaskTracker,
    /// The private broker this server started, stopped with it.
    broker: Option<NatsProcess>,
}

impl NatsServer {
    /// Serves `echo` as described by `listen` (see [`Target`]).
    pub(crate) async fn start(
        target: Target,
        echo: Arc<Echo>,
    ) -> Result<NatsServer, TransportError> {
        let (url, prefix, broker) = match target {
            Target::Attach(e) => (e.url, e.prefix, None),
            Target::Private(addr) => {
                let p = NatsProcess::start(addr).await?;
                (p.url(), None, Some(p))
            }
        };
        let client = connect_client(&url, &ClientConfig::default(), std::sync::Weak::new()).await?;
        let prefix = match prefix {
            Some(p) => p,
            // A fresh, unique token: the client library's inbox names are NUIDs.
            None => {
                let inbox = client.new_inbox();
                let token = inbox.rsplit('.').next().unwrap_or(&inbox).to_owned();
                format!("wb.echo.{token}")
            }
        };
        let sub_err = |what: &str, e: async_nats::SubscribeError| {
            TransportError::Protocol(format!("subscribing to {what}: {e}"))
        };
        let requests = client
            .queue_subscribe(Subject::from(format!("{prefix}.*")), QUEUE_GROUP.to_owned())
            .await
            .map_err(|e| sub_err("the service subjects", e))?;
        let cancels = client
            .subscribe(cancel_subject(&prefix))
            .await
            .map_err(|e| sub_err("the cancel subject", e))?;
        let inbox = client.new_inbox();
        let mut frames = client
            .subscribe(Subject::from(format!("{inbox}.*")))
            .await
            .map_err(|e| sub_err("the server inbox", e))?;
        // Once the broker has our subscriptions, a client connecting next finds a responder
        // (and a peer draining out of the queue group leaves us to take its calls). `flush` only
        // writes them out: our own message coming back proves the broker has processed them, as
        // it handles one connection's operations in order.
        let ready = Subject::from(format!("{inbox}.ready"));
        client
            .publish(ready.clone(), Bytes::new())
            .await
            .map_err(|e| {
                TransportError::Protocol(format!("publishing to the server inbox: {e}"))
            })?;
        let confirmed = async {
            while let Some(m) = frames.next().await {
                if m.subject == ready {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, confirmed).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(TransportError::Protocol(
                    "the broker connection closed while subscribing".into(),
                ));
            }
            Err(_) => {
                return Err(TransportError::Timeout(format!(
                    "the broker did not confirm the server's subscriptions within \
                     {SUBSCRIBE_TIMEOUT:?}"
                )));
            }
        }
        let shutdown = CancellationToken::new();
        let draining = shutdown.child_token();
        let tracker = TaskTracker::new();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let service = Arc::new(Service {
            echo,
            client: client.clone(),
            method_prefix: format!("{prefix}."),
            inbox_prefix: format!("{inbox}."),
            calls: Mutex::new(Calls::default()),
            next_cid: AtomicU64::new(1),
            done_tx,
            tracker: tracker.clone(),
        });
        let requests = tokio::spawn(service.clone().request_loop(
            requests,
            shutdown.clone(),
            draining.clone(),
        ));
        let control =
            tokio::spawn(service.control_loop(frames, cancels, done_rx, shutdown.clone()));
        Ok(NatsServer(Box::new(Running {
            endpoint: Endpoint {
                url,
                prefix: Some(prefix),
            },
            client,
            shutdown,
            draining,
            requests,
            control,
            tracker,
            broker,
        })))
    }
}

impl Server for NatsServer {
    fn endpoint(&self) -> String {
        self.0.endpoint.to_string()
    }

    async fn shutdown(self) {
        self.0.stop(false).await;
    }

    async fn drain(self, grace: Duration) -> DrainReport {
        let mut r = *self.0;
        let g = Grace::begin(grace, &r.tracker);
        r.draining.cancel();
        // The request loop ends once the broker has taken our UNSUB: no request reaches this
        // server any more (its queue-group peers get them), and those it had sent before are
        // answered or running.
        let requests_done = g.within(&mut r.requests).await.is_some();
        g.settle(&r.tracker).await;
        let report = g.report(&r.tracker);
        r.stop(requests_done).await;
        report
    }
}

impl Running {
    /// Stops at once (what `drain` ends with): calls still running are told the server is
    /// going and their handlers cancelled; a private broker is stopped last.
    async fn stop(self, requests_done: bool) {
        self.shutdown.cancel();
        if !requests_done {
            let _ = self.requests.await;
        }
        let _ = self.control.await;
        self.tracker.close();
        // Handlers were cancelled; each ends promptly unless stuck publishing to a broker that
        // is gone. Bounded like the flush: a dead broker must not hold up a shutdown.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait()).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.client.flush()).await;
        drop(self.client);
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}

/// A stream call the control loop routes frames to.
struct StreamEntry {
    /// Requests for the handler; `None` once the client half-closed.
    tx: Option<mpsc::Sender<Result<EchoRequest, Status>>>,
    cancel: CancellationToken,
    /// Our credit towards the client (its receive window).
    credit: Arc<Credit>,
    /// The sequence number the client's next `msg` must carry.
    next_seq: u64,
    /// The client's subject for this call (status on shutdown).
    reply: Subject,
}

enum Done {
    Stream(u64),
    Unary(String),
}

/// Calls running in tasks of their own.
#[derive(Default)]
struct Calls {
    streams: HashMap<u64, StreamEntry>,
    /// Unary calls that wait (a delay), by reply subject: what a cancellation names.
    unary: HashMap<String, CancellationToken>,
}

struct Service {
    echo: Arc<Echo>,
    client: Client,
    /// `<prefix>.`: requests arrive on `<prefix>.<Method>`.
    method_prefix: String,
    /// `<server inbox>.`: a stream's client frames arrive on `<server inbox>.<call id>`.
    inbox_prefix: String,
    calls: Mutex<Calls>,
    next_cid: AtomicU64,
    done_tx: mpsc::UnboundedSender<Done>,
    tracker: TaskTracker,
}

/// What the request loop publishes for one request.
enum Answer {
    /// A unary reply: when the broker refuses it (too large), a bare status goes instead.
    Reply(OutboundMessage),
    /// A stream frame (`accept`, or a `status` refusing the call).
    Frame(OutboundMessage),
}

impl Service {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        // A panic while holding this lock would be a bug; the tables stay usable.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn request_loop(
        self: Arc<Self>,
        mut requests: async_nats::Subscriber,
        shutdown: CancellationToken,
        draining: CancellationToken,
    ) {
        // Created once: a fresh `cancelled()` per message would register with the token
        // every time. Biased towards requests: while they keep coming, only they are polled.
        let stopping = shutdown.cancelled();
        let drain = draining.cancelled();
        tokio::pin!(stopping, drain);
        let mut drained = false;
        loop {
            let msg = tokio::select! {
                biased;
                m = requests.next() => m,
                _ = &mut stopping => None,
                _ = &mut drain, if !drained => {
                    drained = true;
                    // UNSUB, then PING: the subscription ends after the requests the broker
                    // sent before taking the UNSUB, which are answered as usual meanwhile.
                    if let Err(e) = requests.drain().await {
                        tracing::debug!("nats server: draining the service subscription: {e}");
                    }
                    continue;
                }
            };
            // None: shutting down, drained, or the client closed.
            let Some(msg) = msg else { break };
            // Decided synchronously, published with one await: no nested futures to move.
            match self.on_request(msg) {
                Some(Answer::Reply(m)) => {
                    let reply = m.subject.clone();
                    if let Err(e) = self.client.publish_message(m).await {
                        refuse_reply(&self.client, reply, &e).await;
                    }
                }
                Some(Answer::Frame(m)) => {
                    let _ = publish(&self.client, m).await;
                }
                None => {}
            }
        }
        // Requests already delivered to us would be lost to the queue group: refuse them so
        // their callers learn at once (after a completed drain there are none). Only what is
        // buffered: with the broker gone, the subscription would never close. Bounded, so a
        // dead broker cannot hold us here.
        let _ = requests.unsubscribe().await;
        let going = Status::unavailable("server shutting down");
        let refuse = async {
            while let Some(Some(msg)) = tokio::task::unconstrained(requests.next()).now_or_never() {
                if let Some(reply) = msg.reply {
                    let out = unary_msg(reply, UnaryOutcome::failed(going.clone()));
                    let _ = publish(&self.client, out).await;
                }
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, refuse).await;
    }

    async fn control_loop(
        self: Arc<Self>,
        mut frames: async_nats::Subscriber,
        mut cancels: async_nats::Subscriber,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
        shutdown: CancellationToken,
    ) {
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopping => break,
                Some(done) = done_rx.recv() => {
                    let mut c = self.calls();
                    match done {
                        Done::Stream(cid) => { c.streams.remove(&cid); }
                        Done::Unary(reply) => { c.unary.remove(&reply); }
                    }
                }
                Some(msg) = frames.next() => {
                    if let Some(out) = self.on_frame(msg) {
                        let _ = publish(&self.client, out).await;
                    }
                }
                Some(msg) = cancels.next() => self.on_cancel(&msg),
                else => break,
            }
        }
        // Calls still running learn why they end; their handlers see a cancellation.
        let going = Status::unavailable("server shutting down");
        let (streams, unary) = {
            let mut c = self.calls();
            (std::mem::take(&mut c.streams), std::mem::take(&mut c.unary))
        };
        let mut goodbyes = Vec::new();
        for (_, e) in streams {
            e.cancel.cancel();
            e.credit.close();
            goodbyes.push(status_frame(e.reply, &going, 0, true));
        }
        for (reply, token) in unary {
            token.cancel();
            goodbyes.push(unary_msg(
                Subject::from(reply),
                UnaryOutcome::failed(going.clone()),
            ));
        }
        // Bounded: with the broker gone, publishing could wait for a reconnect forever.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for m in goodbyes {
                let _ = publish(&self.client, m).await;
            }
        })
        .await;
    }

    /// Decides the answer to a request; the plain unary path runs here, inline.
    fn on_request(&self, mut msg: Message) -> Option<Answer> {
        let Some(reply) = msg.reply.take() else {
            tracing::debug!(
                "nats server: request on {} without reply subject",
                msg.subject
            );
            return None;
        };
        let method = msg
            .subject
            .strip_prefix(self.method_prefix.as_str())
            .map_or(Method::Unimplemented, method_of);
        match wire::frame_of(msg.headers.as_ref()) {
            Ok(None) => self.unary(method, reply, msg),
            Ok(Some(Frame::Open)) => self.open(method, reply, &msg),
            Ok(Some(f)) => {
                let status = Status::invalid_argument(format!(
                    "frame {} sent to the service subject (only requests and open go there)",
                    f.as_str()
                ));
                Some(Answer::Frame(status_frame(reply, &status, 0, false)))
            }
            Err(e) => Some(Answer::Reply(unary_msg(
                reply,
                UnaryOutcome::failed(bad_request(e)),
            ))),
        }
    }

    fn unary(&self, method: Method, reply: Subject, msg: Message) -> Option<Answer> {
        let decoded = decode_head(method, msg.headers.as_ref()).and_then(|head| {
            let directives = match &msg.headers {
                Some(h) => wire::get_directives(h).map_err(bad_request)?,
                None => Default::default(),
            };
            Ok((
                head,
                EchoRequest {
                    payload: msg.payload,
                    directives,
                },
            ))
        });
        let (head, request) = match decoded {
            Ok(d) => d,
            Err(status) => {
                return Some(Answer::Reply(unary_msg(
                    reply,
                    UnaryOutcome::failed(status),
                )));
            }
        };
        if method != Method::Unary {
            // A plain request to a streaming method: it needs the stream protocol (`open`).
            let status = if method == Method::Unimplemented {
                Status::unimplemented("method is not implemented by the echo service")
            } else {
                Status::invalid_argument(format!(
                    "method {} is a stream: open it with a Wb-Frame: open message",
                    method.name()
                ))
            };
            return Some(Answer::Reply(unary_msg(
                reply,
                UnaryOutcome::failed(status),
            )));
        }
        match self.echo.unary_now(&head, request) {
            Ok(outcome) => Some(Answer::Reply(unary_msg(reply, outcome))),
            Err(request) => {
                let cancel = CancellationToken::new();
                let key = reply.to_string();
                self.calls().unary.insert(key.clone(), cancel.clone());
                let echo = self.echo.clone();
                let client = self.client.clone();
                let done = self.done_tx.clone();
                self.tracker.spawn(async move {
                    let outcome = echo.unary(&head, request, &cancel).await;
                    if !cancel.is_cancelled() {
                        send_reply(&client, unary_msg(reply, outcome)).await;
                    }
                    let _ = done.send(Done::Unary(key));
                });
                None
            }
        }
    }

    fn open(&self, method: Method, reply: Subject, msg: &Message) -> Option<Answer> {
        let head = match decode_head(method, msg.headers.as_ref()) {
            Ok(h) => h,
            Err(status) => return Some(Answer::Frame(status_frame(reply, &status, 0, false))),
        };
        let peer_window = msg
            .headers
            .as_ref()
            .and_then(|h| wire::get_u64(h, &wire::WINDOW).ok().flatten())
            .unwrap_or(DEFAULT_WINDOW);
        let cid = self.next_cid.fetch_add(1, Ordering::Relaxed);
        let window = DEFAULT_WINDOW;
        // One slot more than the window: room for a failure after a full window.
        let (tx, rx) = mpsc::channel(window as usize + 1);
        let cancel = CancellationToken::new();
        let credit = Arc::new(Credit::new(peer_window));
        // Registered before the accept goes out: the client's frames can only follow it.
        self.calls().streams.insert(
            cid,
            StreamEntry {
                tx: Some(tx),
                cancel: cancel.clone(),
                credit: credit.clone(),
                next_seq: 1,
                reply: reply.clone(),
            },
        );
        let mut h = wire::frame(Frame::Accept);
        h.insert(wire::WINDOW, HeaderValue::from(window.to_string()));
        let accept = OutboundMessage {
            subject: reply.clone(),
            reply: Some(Subject::from(format!("{}{cid}", self.inbox_prefix))),
            payload: Bytes::new(),
            headers: Some(h),
        };
        let echo = self.echo.clone();
        let client = self.client.clone();
        let done = self.done_tx.clone();
        self.tracker.spawn(async move {
            let mut call = NatsServerCall {
                client: client.clone(),
                to: reply,
                rx,
                credit,
                grants: Grants::new(window),
                sent: 0,
            };
            let status = echo.handle(&head, &mut call, &cancel).await;
            if !cancel.is_cancelled() {
                let end = status_frame(call.to.clone(), &status, call.sent, false);
                if let Err(e) = publish(&client, end).await {
                    // Too large for the broker (trailing metadata): say so in a bare status.
                    let bare = Status::new(e.code(), e.message().to_owned());
                    let end = status_frame(call.to.clone(), &bare, call.sent, false);
                    let _ = publish(&client, end).await;
                }
            }
            let _ = done.send(Done::Stream(cid));
        });
        Some(Answer::Frame(accept))
    }

    /// Routes a client frame to its call; returns a frame to publish, if any.
    fn on_frame(&self, msg: Message) -> Option<OutboundMessage> {
        let cid = msg
            .subject
            .strip_prefix(self.inbox_prefix.as_str())
            .and_then(|t| t.parse::<u64>().ok())?;
        let headers = msg.headers.as_ref()?;
        let mut calls = self.calls();
        // A call that already ended: late frames are moot.
        let entry = calls.streams.get_mut(&cid)?;
        match wire::frame_of(Some(headers)) {
            Ok(Some(Frame::Msg)) => {
                let Some(tx) = entry.tx.clone() else {
                    deliver_last(
                        entry,
                        Err(Status::invalid_argument("message after half-close")),
                    );
                    return None;
                };
                let item = match wire::get_required(headers, &wire::SEQ, "Wb-Seq") {
                    Err(e) => Err(bad_request(e)),
                    Ok(n) if n != entry.next_seq => Err(Status::new(
                        Code::DataLoss,
                        format!(
                            "stream message {} never arrived (got message {n} next)",
                            entry.next_seq
                        ),
                    )),
                    Ok(_) => wire::get_directives(headers)
                        .map(|directives| EchoRequest {
                            payload: msg.payload.clone(),
                            directives,
                        })
                        .map_err(bad_request),
                };
                entry.next_seq += 1;
                if item.is_err() {
                    deliver_last(entry, item);
                } else if tx.capacity() <= 1 {
                    deliver_last(
                        entry,
                        Err(Status::resource_exhausted(
                            "the client sent past the stream's flow-control window",
                        )),
                    );
                } else {
                    let _ = tx.try_send(item);
                }
            }
            Ok(Some(Frame::End)) => {
                let received = entry.next_seq - 1;
                match wire::get_required(headers, &wire::SEQ, "Wb-Seq") {
                    Ok(n) if n == received => entry.tx = None,
                    Ok(n) => deliver_last(
                        entry,
                        Err(Status::new(
                            Code::DataLoss,
                            format!("the client sent {n} stream messages, {received} arrived"),
                        )),
                    ),
                    Err(e) => deliver_last(entry, Err(bad_request(e))),
                }
            }
            Ok(Some(Frame::Cancel)) => {
                if let Some(e) = calls.streams.remove(&cid) {
                    e.cancel.cancel();
                    e.credit.close();
                }
            }
            Ok(Some(Frame::Credit)) => {
                if let Ok(Some(acked)) = wire::get_u64(headers, &wire::ACK) {
                    entry.credit.grant(acked);
                }
            }
            Ok(_) => {}
            Err(e) => deliver_last(entry, Err(bad_request(e))),
        }
        None
    }

    fn on_cancel(&self, msg: &Message) {
        let Ok(reply) = std::str::from_utf8(&msg.payload) else {
            return;
        };
        if let Some(token) = self.calls().unary.remove(reply) {
            token.cancel();
        }
    }
}

/// Hands the handler a final item (a failure) and closes its request channel.
fn deliver_last(entry: &mut StreamEntry, item: Result<EchoRequest, Status>) {
    if let Some(tx) = entry.tx.take() {
        // The channel keeps one slot free for exactly this.
        let _ = tx.try_send(item);
    }
}

fn bad_request(e: WireError) -> Status {
    Status::invalid_argument(format!("malformed request headers: {e}"))
}

fn decode_head(method: Method, headers: Option<&HeaderMap>) -> Result<CallHead, Status> {
    let Some(h) = headers else {
        return Ok(CallHead::new(method));
    };
    Ok(CallHead {
        method,
        metadata: wire::get_metadata(h, &wire::METADATA).map_err(bad_request)?,
        deadline: wire::get_timeout(h)
            .map_err(bad_request)?
            .map(|t| Instant::now() + t),
        peer_identity: None,
    })
}

/// A unary answer as a NATS message: no headers at all for a plain OK.
fn unary_msg(reply: Subject, o: UnaryOutcome) -> OutboundMessage {
    let (headers, payload) = unary_reply(o);
    OutboundMessage {
        subject: reply,
        reply: None,
        payload,
        headers,
    }
}

/// A unary answer as NATS headers and payload: no headers at all for a plain OK.
fn unary_reply(o: UnaryOutcome) -> (Option<HeaderMap>, Bytes) {
    if let Some(r) = &o.response
        && o.status.is_ok()
        && o.status.message().is_empty()
        && o.status.metadata().is_empty()
        && o.headers.is_empty()
        && r.received_messages == 0
        && r.received_bytes == 0
    {
        // The fast path: nothing to say beyond the payload.
        return (None, o.response.map(|r| r.payload).unwrap_or_default());
    }
    let mut h = HeaderMap::new();
    wire::put_metadata(&mut h, &wire::METADATA, &o.headers);
    wire::put_status(&mut h, &o.status);
    let payload = match o.response {
        Some(r) if o.status.is_ok() => {
            wire::put_response(&mut h, &r);
            r.payload
        }
        _ => Bytes::new(),
    };
    ((!h.is_empty()).then_some(h), payload)
}

/// Sends a unary answer; one the broker refuses (larger than its max_payload) becomes a
/// `RESOURCE_EXHAUSTED` status, so the caller is not left waiting.
async fn send_reply(client: &Client, msg: OutboundMessage) {
    let reply = msg.subject.clone();
    if let Err(e) = client.publish_message(msg).await {
        refuse_reply(client, reply, &e).await;
    }
}

/// After a reply could not be published: a bare `RESOURCE_EXHAUSTED` status when the broker
/// refused its size; nothing when the connection is gone (nobody to tell).
async fn refuse_reply(client: &Client, reply: Subject, e: &async_nats::PublishError) {
    if let async_nats::client::PublishErrorKind::MaxPayloadExceeded = e.kind() {
        let status = Status::resource_exhausted(format!(
            "the response exceeds the NATS broker's max_payload: {e}"
        ));
        let _ = publish(client, unary_msg(reply, UnaryOutcome::failed(status))).await;
    }
}

/// A `status` frame: the final status of a stream, `sent` messages having been sent. A
/// `shutdown` frame says so instead of counting (messages may be in flight).
fn status_frame(to: Subject, status: &Status, sent: u64, shutdown: bool) -> OutboundMessage {
    let mut h = wire::frame(Frame::Status);
    wire::put_status(&mut h, status);
    if !shutdown {
        h.insert(wire::SEQ, HeaderValue::from(sent.to_string()));
    }
    OutboundMessage {
        subject: to,
        reply: None,
        payload: Bytes::new(),
        headers: Some(h),
    }
}

/// The server side of one stream call.
struct NatsServerCall {
    client: Client,
    /// The client's subject for this call.
    to: Subject,
    rx: mpsc::Receiver<Result<EchoRequest, Status>>,
    credit: Arc<Credit>,
    grants: Grants,
    sent: u64,
}

impl ServerCall for NatsServerCall {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        let item = self.rx.recv().await.transpose()?;
        if item.is_some()
            && let Some(acked) = self.grants.consumed()
        {
            let mut h = wire::frame(Frame::Credit);
            h.insert(wire::ACK, HeaderValue::from(acked.to_string()));
            // A lost credit frame only slows the client down until the call ends.
            let _ = publish(
                &self.client,
                OutboundMessage {
                    subject: self.to.clone(),
                    reply: None,
                    payload: Bytes::new(),
                    headers: Some(h),
                },
            )
            .await;
        }
        Ok(item)
    }

    async fn send_headers(&mut self, headers: Metadata) -> Result<(), Status> {
        let mut h = wire::frame(Frame::Headers);
        wire::put_metadata(&mut h, &wire::METADATA, &headers);
        publish(
            &self.client,
            OutboundMessage {
                subject: self.to.clone(),
                reply: None,
                payload: Bytes::new(),
                headers: Some(h),
            },
        )
        .await
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        let seq = self.sent + 1;
        if !self.credit.acquire(seq).await {
            return Err(Status::cancelled("client went away"));
        }
        let mut h = wire::frame(Frame::Msg);
        h.insert(wire::SEQ, HeaderValue::from(seq.to_string()));
        wire::put_response(&mut h, &response);
        publish(
            &self.client,
            OutboundMessage {
                subject: self.to.clone(),
                reply: None,
                payload: response.payload,
                headers: Some(h),
            },
        )
        .await?;
        self.sent = seq;
        Ok(())
    }
}
