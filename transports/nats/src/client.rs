//! The `nats` client: one NATS connection per [`NatsConnection`], one wildcard subscription on
//! its own inbox (`<inbox>.*`) through which every reply and stream frame arrives, routed to
//! its call by the last subject token (the call id) — no subscription per call.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};

use async_nats::client::traits::Publisher as _;
use async_nats::message::OutboundMessage;
use async_nats::{Client, Event, HeaderMap, HeaderValue, Message, StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::wire::{self, Frame};
use super::{Endpoint, cancel_subject, method_subject};
use wirebench_core::broker::BrokerError;
use wirebench_core::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use wirebench_brokerrpc::flow::{Credit, DEFAULT_WINDOW, Grants};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Connection, TransportError, UnaryReply,
    until_deadline,
};

/// Events a stream call buffers beyond its window: headers, status, and slack.
const EVENT_SLACK: usize = 8;

enum Slot {
    /// A unary call: its reply (or failure) once it arrived, and the waiting caller.
    Unary {
        reply: Option<Result<Message, Status>>,
        waker: Option<Waker>,
    },
    Stream(StreamSlot),
}

struct StreamSlot {
    /// Completes `open()`: the server's call subject, or why there is none.
    accept: Option<oneshot::Sender<Accepted>>,
    events: mpsc::Sender<CallEvent>,
    credit: Arc<Credit>,
    /// The sequence number the next `msg` frame must carry.
    next_seq: u64,
    /// The server's subject for this call, once accepted.
    to: Option<Subject>,
}

enum Accepted {
    /// The call runs; the server's subject for our frames, and its window.
    Running(Subject, u64),
    /// The call ended before it was accepted (its status is in the events).
    Ended,
    /// Nobody serves the method.
    Refused(Status),
}

#[derive(Default)]
struct Table {
    calls: HashMap<u64, Slot>,
    /// Set once the connection is closed: the status every new call fails with.
    dead: Option<Status>,
}

/// Call state shared by the connection, its calls, the dispatcher and the event callback.
pub(super) struct Calls {
    table: Mutex<Table>,
    /// False while the client is disconnected from the broker: calls fail at once then.
    connected: AtomicBool,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock would be a bug; the table stays usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails every call in flight (the broker connection broke, or the connection closed).
    fn fail_all(&self, status: &Status, close: bool) {
        let calls = {
            let mut t = self.lock();
            if close && t.dead.is_none() {
                t.dead = Some(status.clone());
            }
            std::mem::take(&mut t.calls)
        };
        for (_, slot) in calls {
            match slot {
                Slot::Unary { waker, .. } => {
                    // The caller polls a slot that is gone and reads why.
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                Slot::Stream(s) => {
                    s.credit.close();
                    if let Some(a) = s.accept {
                        let _ = a.send(Accepted::Refused(status.clone()));
                    } else {
                        let _ = s.events.try_send(CallEvent::End(status.clone()));
                    }
                }
            }
        }
    }

    fn gone_status(&self) -> Status {
        self.lock().dead.clone().unwrap_or_else(|| {
            Status::unavailable("the connection to the NATS broker was lost during the call")
        })
    }
}

struct Shared {
    client: Client,
    calls: Arc<Calls>,
    /// `<inbox>.`: a call's replies arrive on `<inbox>.<id>`.
    inbox_prefix: String,
    unary_subject: Subject,
    cancel_subject: Subject,
    endpoint: Endpoint,
    next_id: AtomicU64,
    max_message_size: usize,
}

impl Shared {
    fn register(&self, slot: Slot) -> Result<u64, Status> {
        if !self.calls.connected.load(Ordering::Acquire) {
            return Err(Status::unavailable(format!(
                "not connected to the NATS broker at {}",
                self.endpoint.url
            )));
        }
        let mut t = self.calls.lock();
        if let Some(dead) = &t.dead {
            return Err(dead.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        t.calls.insert(id, slot);
        Ok(id)
    }

    fn reply_subject(&self, id: u64) -> Subject {
        let mut s = String::with_capacity(self.inbox_prefix.len() + 20);
        s.push_str(&self.inbox_prefix);
        s.push_str(itoa_u64(id, &mut [0u8; 20]));
        Subject::from(s)
    }

    async fn publish(&self, msg: OutboundMessage) -> Result<(), Status> {
        publish(&self.client, msg).await
    }

    /// Publishes from a synchronous context (drop, cancel): a task of its own.
    fn publish_later(&self, msg: OutboundMessage) {
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.publish_message(msg).await;
            });
        }
    }

    fn check_response(&self, r: &EchoResponse) -> Result<(), Status> {
        let max = self.max_message_size;
        if r.payload.len() > max {
            return Err(Status::resource_exhausted(format!(
                "response message of {} bytes exceeds the client's limit of {max} bytes",
                r.payload.len()
            )));
        }
        Ok(())
    }
}

/// Writes `n` in decimal into `buf` (call ids are formatted once per call, without `fmt`).
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Publishes, mapping the client library's errors to statuses.
pub(super) async fn publish(client: &Client, msg: OutboundMessage) -> Result<(), Status> {
    client.publish_message(msg).await.map_err(|e| {
        use async_nats::client::PublishErrorKind;
        match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => Status::resource_exhausted(format!(
                "message exceeds the NATS broker's max_payload: {e}"
            )),
            _ => Status::unavailable(format!("publishing to the NATS broker failed: {e}")),
        }
    })
}

/// A connection to a `nats` service: a NATS client connection to its broker.
pub struct NatsConnection {
    shared: Arc<Shared>,
    dispatcher: JoinHandle<()>,
}

impl std::fmt::Debug for NatsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConnection")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsConnection {
    fn drop(&mut self) {
        self.dispatcher.abort();
        self.shared
            .calls
            .fail_all(&Status::unavailable("nats connection closed"), true);
    }
}

/// Connects a NATS client for wirebench: the event callback keeps `calls` informed of
/// disconnections (in-flight calls then fail at once) and counts slow-consumer drops.
pub(super) async fn connect_client(
    url: &str,
    config: &ClientConfig,
    calls: Weak<Calls>,
) -> Result<Client, TransportError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("wirebench")
        .connection_timeout(config.connect_timeout);
    if let Some(every) = config.keepalive {
        // Dead-peer detection: async-nats sends a PING every interval and drops the
        // connection (Event::Disconnected, failing calls in flight) when two go unanswered.
        options = options.ping_interval(every);
    }
    options
        .request_timeout(None)
        .event_callback(move |event| {
            let calls = calls.clone();
            async move {
                on_event(&calls, event);
            }
        })
        .connect(url)
        .await
        .map_err(|e| {
            TransportError::Broker(BrokerError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })
        })
}

fn on_event(calls: &Weak<Calls>, event: Event) {
    let Some(calls) = calls.upgrade() else {
        // A server's connection: nothing to fail, but dropped requests must not go unseen.
        if let Event::SlowConsumer(sid) = event {
            tracing::warn!(
                "nats server: subscription {sid} overflowed: the client library dropped a \
                 request (its caller fails only by its deadline)"
            );
        }
        return;
    };
    match event {
        Event::Disconnected => {
            calls.connected.store(false, Ordering::Release);
            calls.fail_all(
                &Status::unavailable("the connection to the NATS broker was lost"),
                false,
            );
        }
        Event::Connected => calls.connected.store(true, Ordering::Release),
        Event::SlowConsumer(_) => {
            // Our inbox overflowed and the client library dropped a reply; which call it
            // belonged to is unknown, so every call in flight fails now instead of one of
            // them waiting forever (streams would also see a sequence gap).
            tracing::warn!("nats client: inbox subscription overflowed, a reply was dropped");
            calls.fail_all(
                &Status::resource_exhausted(
                    "the client's inbox overflowed and the NATS client library dropped a \
                     reply: every call in flight fails, as any of them may have lost it",
                ),
                false,
            );
        }
        _ => {}
    }
}

impl NatsConnection {
    /// Connects to the service at `endpoint` (`nats://HOST:PORT/PREFIX`).
    pub(crate) async fn connect(
        config: &ClientConfig,
        endpoint: Endpoint,
    ) -> Result<NatsConnection, TransportError> {
        let Some(prefix) = endpoint.prefix.clone() else {
            return Err(TransportError::Endpoint {
                endpoint: endpoint.to_string(),
                reason: "a nats endpoint names the service's subject prefix: \
                         nats://HOST:PORT/PREFIX"
                    .into(),
            });
        };
        let calls = Arc::new(Calls {
            table: Mutex::new(Table::default()),
            connected: AtomicBool::new(true),
        });
        let client = connect_client(&endpoint.url, config, Arc::downgrade(&calls)).await?;
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(Subject::from(format!("{inbox}.*")))
            .await
            .map_err(|e| TransportError::Protocol(format!("subscribing to the inbox: {e}")))?;
        let shared = Arc::new(Shared {
            unary_subject: method_subject(&prefix, Method::Unary),
            cancel_subject: cancel_subject(&prefix),
            inbox_prefix: format!("{inbox}."),
            client,
            calls,
            endpoint,
            next_id: AtomicU64::new(1),
            max_message_size: config.max_message_size,
        });
        let dispatcher = tokio::spawn(dispatch(shared.clone(), sub));
        Ok(NatsConnection { shared, dispatcher })
    }

    fn poll_unary(
        &self,
        id: u64,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<Message, Status>> {
        let mut t = self.shared.calls.lock();
        let Some(Slot::Unary { reply, waker }) = t.calls.get_mut(&id) else {
            drop(t);
            return Poll::Ready(Err(self.shared.calls.gone_status()));
        };
        if reply.is_none() {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let Some(Slot::Unary { reply, .. }) = t.calls.remove(&id) else {
            unreachable!("slot checked above");
        };
        Poll::Ready(reply.unwrap_or_else(|| Err(Status::internal("unary slot without reply"))))
    }

    fn decode_unary(&self, msg: Message) -> Result<UnaryReply, Status> {
        if msg.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(no_responders(&self.shared.unary_subject));
        }
        let reply = match &msg.headers {
            None => UnaryReply {
                headers: Metadata::new(),
                message: EchoResponse::new(msg.payload),
                trailers: Metadata::new(),
            },
            Some(h) => {
                let mut status = wire::get_status(h).map_err(malformed)?;
                if !status.is_ok() {
                    return Err(status);
                }
                UnaryReply {
                    headers: wire::get_metadata(h, &wire::METADATA).map_err(malformed)?,
                    trailers: status.take_metadata(),
                    message: wire::get_response(Some(h), msg.payload).map_err(malformed)?,
                }
            }
        };
        self.shared.check_response(&reply.message)?;
        Ok(reply)
    }
}

fn malformed(e: wire::WireError) -> Status {
    Status::internal(format!("the server sent a malformed reply: {e}"))
}

fn no_responders(subject: &Subject) -> Status {
    Status::unavailable(format!(
        "no responders: no server is attached to {subject} on this broker"
    ))
}

/// Builds a request's headers; `None` for a plain call (the fast path sends no headers).
fn request_headers(
    frame: Option<Frame>,
    options: &CallOptions,
    request: Option<&EchoRequest>,
) -> Option<HeaderMap> {
    let plain = frame.is_none()
        && options.metadata.is_empty()
        && options.timeout.is_none()
        && request.is_none_or(|r| r.directives.is_plain());
    if plain {
        return None;
    }
    let mut h = match frame {
        Some(f) => wire::frame(f),
        None => HeaderMap::new(),
    };
    wire::put_metadata(&mut h, &wire::METADATA, &options.metadata);
    if let Some(t) = options.timeout {
        wire::put_timeout(&mut h, t);
    }
    if let Some(r) = request {
        wire::put_directives(&mut h, &r.directives);
    }
    Some(h)
}

/// Cancels a unary call dropped before its reply: the slot goes, and every server of the
/// service hears which call (only the one running it acts).
struct UnaryGuard<'a> {
    shared: &'a Shared,
    id: u64,
    reply: Subject,
    sent: bool,
    /// The reply arrived (its slot is gone already).
    answered: bool,
}

impl Drop for UnaryGuard<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let removed = self.shared.calls.lock().calls.remove(&self.id).is_some();
        if removed && self.sent {
            self.shared.publish_later(OutboundMessage {
                subject: self.shared.cancel_subject.clone(),
                reply: None,
                payload: Bytes::copy_from_slice(self.reply.as_bytes()),
                headers: None,
            });
        }
    }
}

impl Connection for NatsConnection {
    type Sender = NatsSender;
    type Receiver = NatsReceiver;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        let deadline = options.deadline();
        let headers = request_headers(None, options, Some(&request));
        let id = self.shared.register(Slot::Unary {
            reply: None,
            waker: None,
        })?;
        let reply = self.shared.reply_subject(id);
        let mut guard = UnaryGuard {
            shared: &self.shared,
            id,
            reply: reply.clone(),
            sent: false,
            answered: false,
        };
        let msg = OutboundMessage {
            subject: self.shared.unary_subject.clone(),
            reply: Some(reply),
            payload: request.payload,
            headers,
        };
        let exchange = async {
            self.shared.publish(msg).await?;
            guard.sent = true;
            let answer = poll_fn(|cx| self.poll_unary(id, cx)).await;
            guard.answered = true;
            answer
        };
        let answer = match deadline {
            None => exchange.await,
            Some(_) => until_deadline(deadline, exchange).await,
        };
        // Answered, failed or timed out: the slot is gone or goes now (a timed-out call is
        // cancelled at the server by the guard).
        drop(guard);
        self.decode_unary(answer?)
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(NatsSender, NatsReceiver), Status> {
        let deadline = options.deadline();
        let window = DEFAULT_WINDOW;
        let (tx, rx) = mpsc::channel(window as usize + EVENT_SLACK);
        let (acc_tx, acc_rx) = oneshot::channel();
        let credit = Arc::new(Credit::new(DEFAULT_WINDOW));
        let id = self.shared.register(Slot::Stream(StreamSlot {
            accept: Some(acc_tx),
            events: tx,
            credit: credit.clone(),
            next_seq: 1,
            to: None,
        }))?;
        let mut headers = request_headers(Some(Frame::Open), options, None).unwrap_or_default();
        headers.insert(wire::WINDOW, HeaderValue::from(window.to_string()));
        let subject = method_subject(self.shared.endpoint.prefix_str(), method);
        let open = OutboundMessage {
            subject: subject.clone(),
            reply: Some(self.shared.reply_subject(id)),
            payload: Bytes::new(),
            headers: Some(headers),
        };
        let accepted = until_deadline(deadline, async {
            self.shared.publish(open).await?;
            acc_rx.await.map_err(|_| self.shared.calls.gone_status())
        })
        .await;
        let to = match accepted {
            Ok(Accepted::Running(to, peer_window)) => {
                credit.set_window(peer_window);
                Some(to)
            }
            Ok(Accepted::Ended) => None,
            Ok(Accepted::Refused(status)) => {
                self.shared.calls.lock().calls.remove(&id);
                return Err(
                    if status.code() == Code::Unavailable
                        && status.message().starts_with("no responders")
                    {
                        no_responders(&subject)
                    } else {
                        status
                    },
                );
            }
            Err(status) => {
                // Not accepted in time (or the connection broke): nothing to cancel yet.
                self.shared.calls.lock().calls.remove(&id);
                return Err(status);
            }
        };
        let sender = NatsSender {
            shared: self.shared.clone(),
            to: to.clone(),
            seq: 0,
            credit: credit.clone(),
            closed: false,
        };
        let cancel = NatsCancel {
            shared: self.shared.clone(),
            id,
            to: to.clone(),
            credit,
        };
        let receiver = NatsReceiver {
            inner: EventReceiver::new(rx, deadline, cancel),
            grants: Grants::new(window),
            shared: self.shared.clone(),
            to,
        };
        Ok((sender, receiver))
    }

    async fn close(&self) {
        self.shared.calls.fail_all(
            &Status::unavailable("nats connection closed by the client"),
            true,
        );
        self.dispatcher.abort();
        let _ = self.shared.client.flush().await;
    }
}

/// Routes every message arriving on the inbox to its call.
async fn dispatch(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some(id) = msg
            .subject
            .strip_prefix(shared.inbox_prefix.as_str())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let follow_up = route(&shared, &mut shared.calls.lock(), id, msg);
        if let Some(f) = follow_up {
            let _ = shared.publish(f).await;
        }
    }
}

/// Delivers `msg` to call `id`; returns a message to publish when the call must be cancelled
/// at the server (a broken sequence, an oversized response).
fn route(shared: &Shared, t: &mut Table, id: u64, msg: Message) -> Option<OutboundMessage> {
    let slot = t.calls.get_mut(&id)?;
    let s = match slot {
        Slot::Unary { reply, waker } => {
            if reply.is_none() {
                *reply = Some(Ok(msg));
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
            return None;
        }
        Slot::Stream(s) => s,
    };
    if msg.status == Some(StatusCode::NO_RESPONDERS) {
        let status = Status::unavailable("no responders");
        match s.accept.take() {
            // `open` fails at once: nobody serves the method.
            Some(a) => {
                t.calls.remove(&id);
                let _ = a.send(Accepted::Refused(status));
            }
            None => {
                end_stream(t, id, status);
            }
        }
        return None;
    }
    let frame = match wire::frame_of(msg.headers.as_ref()) {
        Ok(Some(f)) => f,
        Ok(None) => {
            end_stream(t, id, malformed(wire::WireError::Missing("Wb-Frame")));
            return None;
        }
        Err(e) => {
            end_stream(t, id, malformed(e));
            return None;
        }
    };
    let headers = msg.headers.as_ref()?;
    match frame {
        Frame::Accept => {
            let window = wire::get_u64(headers, &wire::WINDOW)
                .ok()
                .flatten()
                .unwrap_or(DEFAULT_WINDOW);
            match (s.accept.take(), msg.reply) {
                (Some(a), Some(to)) => {
                    s.to = Some(to.clone());
                    let _ = a.send(Accepted::Running(to, window));
                }
                (_, None) => {
                    end_stream(
                        t,
                        id,
                        Status::internal("the server accepted the call without a reply subject"),
                    );
                }
                (None, Some(_)) => {}
            }
            None
        }
        Frame::Headers => {
            let ev = match wire::get_metadata(headers, &wire::METADATA) {
                Ok(md) => CallEvent::Headers(md),
                Err(e) => {
                    end_stream(t, id, malformed(e));
                    return None;
                }
            };
            let _ = s.events.try_send(ev);
            None
        }
        Frame::Msg => {
            let seq = wire::get_required(headers, &wire::SEQ, "Wb-Seq");
            let expected = s.next_seq;
            let failure = match seq {
                Err(e) => Some(malformed(e)),
                Ok(n) if n != expected => Some(Status::new(
                    Code::DataLoss,
                    format!("stream message {expected} never arrived (got message {n} next)"),
                )),
                Ok(_) if msg.payload.len() > shared.max_message_size => {
                    Some(Status::resource_exhausted(format!(
                        "response message of {} bytes exceeds the client's limit of {} bytes",
                        msg.payload.len(),
                        shared.max_message_size
                    )))
                }
                Ok(_) => None,
            };
            if let Some(status) = failure {
                return end_stream(t, id, status).map(cancel_frame);
            }
            s.next_seq += 1;
            match wire::get_response(Some(headers), msg.payload) {
                Ok(r) => {
                    if s.events.try_send(CallEvent::Message(r)).is_err() {
                        // The server ignored our window: nothing more can be buffered.
                        let status = Status::resource_exhausted(
                            "the server sent past the stream's flow-control window",
                        );
                        t.calls.remove(&id);
                        tracing::warn!("nats stream {id}: {status}");
                    }
                }
                Err(e) => {
                    end_stream(t, id, malformed(e));
                }
            }
            None
        }
        Frame::Status => {
            // A status without a count (a server shutting down) is not checked for loss.
            let status = match (
                wire::get_status(headers),
                wire::get_u64(headers, &wire::SEQ),
            ) {
                (Ok(st), Ok(None)) => st,
                (Ok(st), Ok(Some(sent))) if sent + 1 == s.next_seq => st,
                (Ok(_), Ok(Some(sent))) => Status::new(
                    Code::DataLoss,
                    format!(
                        "the server sent {sent} stream messages, {} arrived",
                        s.next_seq - 1
                    ),
                ),
                (Err(e), _) | (_, Err(e)) => malformed(e),
            };
            end_stream(t, id, status);
            None
        }
        Frame::Credit => {
            if let Ok(Some(acked)) = wire::get_u64(headers, &wire::ACK) {
                s.credit.grant(acked);
            }
            None
        }
        // Client-only frames: a server never sends them; ignore rather than fail the call.
        Frame::Open | Frame::End | Frame::Cancel => None,
    }
}

fn cancel_frame(to: Subject) -> OutboundMessage {
    OutboundMessage {
        subject: to,
        reply: None,
        payload: Bytes::new(),
        headers: Some(wire::frame(Frame::Cancel)),
    }
}

/// Ends stream `id` with `status`; returns the server's subject for the call, to cancel it
/// there when the failure is ours.
fn end_stream(t: &mut Table, id: u64, status: Status) -> Option<Subject> {
    let Some(Slot::Stream(s)) = t.calls.remove(&id) else {
        return None;
    };
    {
        s.credit.close();
        match s.accept {
            Some(a) => {
                // Ended before it was accepted: `open` returns, the status is the first event.
                let _ = s.events.try_send(CallEvent::End(status));
                let _ = a.send(Accepted::Ended);
            }
            None => {
                let _ = s.events.try_send(CallEvent::End(status));
            }
        }
    }
    s.to
}

/// Cancels a `nats` stream: a `cancel` frame to the server's call subject.
pub struct NatsCancel {
    shared: Arc<Shared>,
    id: u64,
    to: Option<Subject>,
    credit: Arc<Credit>,
}

impl std::fmt::Debug for NatsCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsCancel({})", self.id)
    }
}

impl CancelSignal for NatsCancel {
    fn cancel(&mut self) {
        let live = self.shared.calls.lock().calls.remove(&self.id).is_some();
        self.credit.close();
        if live && let Some(to) = self.to.take() {
            self.shared.publish_later(cancel_frame(to));
        }
    }
}

/// The sending half of a `nats` stream.
pub struct NatsSender {
    shared: Arc<Shared>,
    /// The server's subject for this call; `None` when the call ended before it ran.
    to: Option<Subject>,
    seq: u64,
    credit: Arc<Credit>,
    closed: bool,
}

impl std::fmt::Debug for NatsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSender")
            .field("to", &self.to)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl CallSender for NatsSender {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        let Some(to) = self.to.clone().filter(|_| !self.closed) else {
            return Err(call_ended());
        };
        let seq = self.seq + 1;
        if !self.credit.acquire(seq).await {
            return Err(call_ended());
        }
        let mut h = wire::frame(Frame::Msg);
        h.insert(wire::SEQ, HeaderValue::from(seq.to_string()));
        wire::put_directives(&mut h, &request.directives);
        self.shared
            .publish(OutboundMessage {
                subject: to,
                reply: None,
                payload: request.payload,
                headers: Some(h),
            })
            .await?;
        self.seq = seq;
        Ok(())
    }

    async fn close_send(&mut self) -> Result<(), Status> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        match &self.to {
            Some(to) if !self.credit.is_closed() => {
                self.shared.publish(end_frame(to.clone(), self.seq)).await
            }
            _ => Ok(()),
        }
    }
}

fn end_frame(to: Subject, sent: u64) -> OutboundMessage {
    let mut h = wire::frame(Frame::End);
    h.insert(wire::SEQ, HeaderValue::from(sent.to_string()));
    OutboundMessage {
        subject: to,
        reply: None,
        payload: Bytes::new(),
        headers: Some(h),
    }
}

impl Drop for NatsSender {
    fn drop(&mut self) {
        // Dropping the sender half-closes, as the contract says.
        if !self.closed
            && !self.credit.is_closed()
            && let Some(to) = self.to.take()
        {
            self.shared.publish_later(end_frame(to, self.seq));
        }
    }
}

/// The receiving half of a `nats` stream: the shared [`EventReceiver`], plus credit sent back
/// to the server as messages are consumed.
#[derive(Debug)]
pub struct NatsReceiver {
    inner: EventReceiver<NatsCancel>,
    grants: Grants,
    shared: Arc<Shared>,
    to: Option<Subject>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CallReceiver for NatsReceiver {
    async fn headers(&mut self) -> Result<Metadata, Status> {
        self.inner.headers().await
    }

    async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
        let r = self.inner.recv().await;
        if let Ok(Some(_)) = &r
            && let Some(acked) = self.grants.consumed()
            && let Some(to) = &self.to
        {
            let mut h = wire::frame(Frame::Credit);
            h.insert(wire::ACK, HeaderValue::from(acked.to_string()));
            // A lost credit frame only slows the server down until the call ends.
            let _ = self
                .shared
                .publish(OutboundMessage {
                    subject: to.clone(),
                    reply: None,
                    payload: Bytes::new(),
                    headers: Some(h),
                })
                .await;
        }
        r
    }

    fn trailers(&self) -> &Metadata {
        self.inner.trailers()
    }

    fn cancel(&mut self) {
        self.inner.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_format_in_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(itoa_u64(0, &mut buf), "0");
        assert_eq!(itoa_u64(7, &mut buf), "7");
        assert_eq!(itoa_u64(1_234_567, &mut buf), "1234567");
        assert_eq!(itoa_u64(u64::MAX, &mut buf), u64::MAX.to_string());
    }
}
