//! The client side of the protocol, written once for every broker: the table of calls in
//! flight on one connection ([`ClientCalls`]), which consumes each message that arrives for a
//! call and says what to send back, and the RPC contract over it ([`Client`] and its stream
//! halves). A broker adapter supplies a [`ClientLink`]: how a call's request reaches the
//! service, how a frame reaches a stream's server, and its client library's tasks. No socket,
//! no subject or topic syntax here.
//!
//! One connection has one reply address for all its calls (a wildcard inbox, a reply topic);
//! the adapter routes each arriving message to [`ClientCalls::route`] by the call id it carries
//! (the last subject token, the correlation data).

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wirebench_core::call::{CallEvent, CancelSignal, EventReceiver, call_ended};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{
    CallOptions, CallReceiver, CallSender, Connection, UnaryReply, until_deadline,
};

use crate::flow::{Credit, DEFAULT_WINDOW, Grants};
use crate::headers::{self, ACK, Frame, Headers, MetadataKind, SEQ, WINDOW, WireError, bad_reply};

/// Events a stream call buffers beyond its window: headers, status, and slack.
const EVENT_SLACK: usize = 8;

/// A message that arrived for one call.
#[derive(Debug)]
pub struct Incoming<H, A> {
    /// Its headers, if it had any.
    pub headers: Option<H>,
    /// Its payload.
    pub payload: Bytes,
    /// The server's address it names for the call's further frames (on `accept`).
    pub reply_to: Option<A>,
    /// The broker answered that nobody serves the subject (NATS's no-responders status).
    pub no_responders: bool,
}

enum Slot<H, A> {
    /// A unary call: its reply once it arrived, and the waiting caller.
    Unary {
        reply: Option<Incoming<H, A>>,
        waker: Option<Waker>,
    },
    Stream(StreamSlot<A>),
}

struct StreamSlot<A> {
    /// Completes `open()`: the server's address for the call, or why there is none.
    accept: Option<oneshot::Sender<Accepted<A>>>,
    events: mpsc::Sender<CallEvent>,
    credit: Arc<Credit>,
    /// The sequence number the next `msg` frame must carry.
    next_seq: u64,
    /// The server's address for this call, once accepted.
    to: Option<A>,
}

enum Accepted<A> {
    /// The call runs; the server's address for our frames, and its window.
    Running(A, u64),
    /// The call ended before it was accepted (its status is in the events).
    Ended,
    /// The call cannot run: nobody serves the method, or the connection broke.
    Refused(Status),
    /// The broker said nobody serves the method.
    NoResponders,
}

struct Table<H, A> {
    calls: HashMap<u64, Slot<H, A>>,
    /// Set once the connection is closed: the status every new call fails with.
    dead: Option<Status>,
}

/// The calls in flight on one connection: what arrives for each is routed here.
pub struct ClientCalls<H, A> {
    table: Mutex<Table<H, A>>,
    /// False while the client is disconnected from its broker: calls fail at once then.
    connected: AtomicBool,
    next_id: AtomicU64,
    max_message_size: usize,
    /// The broker as messages name it (`NATS broker`, `MQTT broker`).
    broker: &'static str,
}

impl<H, A> fmt::Debug for ClientCalls<H, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCalls")
            .field("broker", &self.broker)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<H: Headers, A: Clone + Send + 'static> ClientCalls<H, A> {
    /// An empty table for a connection whose messages are at most `max_message_size` bytes,
    /// to a broker named `broker` in messages.
    pub fn new(max_message_size: usize, broker: &'static str) -> ClientCalls<H, A> {
        ClientCalls {
            table: Mutex::new(Table {
                calls: HashMap::new(),
                dead: None,
            }),
            connected: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            max_message_size,
            broker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<H, A>> {
        // A panic while holding this lock would be a bug; the table stays usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records whether the connection to the broker is up; while it is down, calls in flight
    /// have failed and new calls fail at once.
    pub fn set_connected(&self, up: bool, why: &str) {
        self.connected.store(up, Ordering::Release);
        if !up {
            self.fail_all(
                &Status::unavailable(format!(
                    "the connection to the {} was lost{}",
                    self.broker,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                )),
                false,
            );
        }
    }

    /// Fails every call in flight with `status`; with `close`, every later call too.
    pub fn fail_all(&self, status: &Status, close: bool) {
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
                    match s.accept {
                        Some(a) => {
                            let _ = a.send(Accepted::Refused(status.clone()));
                        }
                        None => {
                            let _ = s.events.try_send(CallEvent::End(status.clone()));
                        }
                    }
                }
            }
        }
    }

    fn gone_status(&self) -> Status {
        self.lock().dead.clone().unwrap_or_else(|| {
            Status::unavailable(format!(
                "the connection to the {} was lost during the call",
                self.broker
            ))
        })
    }

    fn register(&self, slot: Slot<H, A>, url: &str) -> Result<u64, Status> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(Status::unavailable(format!(
                "not connected to the {} at {url}",
                self.broker
            )));
        }
        let mut t = self.lock();
        if let Some(dead) = &t.dead {
            return Err(dead.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        t.calls.insert(id, slot);
        Ok(id)
    }

    fn remove(&self, id: u64) -> bool {
        self.lock().calls.remove(&id).is_some()
    }

    fn poll_unary(&self, id: u64, cx: &mut Context<'_>) -> Poll<Result<Incoming<H, A>, Status>> {
        let mut t = self.lock();
        let Some(Slot::Unary { reply, waker }) = t.calls.get_mut(&id) else {
            drop(t);
            return Poll::Ready(Err(self.gone_status()));
        };
        if reply.is_none() {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        match t.calls.remove(&id) {
            Some(Slot::Unary { reply: Some(r), .. }) => Poll::Ready(Ok(r)),
            _ => Poll::Ready(Err(Status::internal("unary slot without reply"))),
        }
    }

    fn too_large(&self, len: usize) -> Option<Status> {
        (len > self.max_message_size).then(|| {
            Status::resource_exhausted(format!(
                "response message of {len} bytes exceeds the client's limit of {} bytes",
                self.max_message_size
            ))
        })
    }

    fn decode_unary(&self, m: Incoming<H, A>) -> Result<UnaryReply, Status> {
        let reply = match m.headers.filter(|h| !h.is_empty()) {
            None => UnaryReply {
                headers: Metadata::new(),
                message: EchoResponse::new(m.payload),
                trailers: Metadata::new(),
            },
            Some(h) => {
                let mut status = headers::get_status(&h).map_err(bad_reply)?;
                if !status.is_ok() {
                    return Err(status);
                }
                UnaryReply {
                    headers: h.get_metadata(MetadataKind::Initial).map_err(bad_reply)?,
                    trailers: status.take_metadata(),
                    message: headers::get_response(Some(&h), m.payload).map_err(bad_reply)?,
                }
            }
        };
        match self.too_large(reply.message.payload.len()) {
            Some(s) => Err(s),
            None => Ok(reply),
        }
    }

    /// Delivers a message that arrived for call `id`. Returns the server's address of a stream
    /// this side has just failed (a broken sequence, an oversized response, a window
    /// overrun): the adapter sends it a `cancel` frame, so the server stops too.
    pub fn route(&self, id: u64, m: Incoming<H, A>) -> Option<A> {
        let mut t = self.lock();
        let slot = t.calls.get_mut(&id)?;
        let s = match slot {
            Slot::Unary { reply, waker } => {
                if reply.is_none() {
                    *reply = Some(m);
                    if let Some(w) = waker.take() {
                        w.wake();
                    }
                }
                return None;
            }
            Slot::Stream(s) => s,
        };
        if m.no_responders {
            match s.accept.take() {
                // `open` fails at once: nobody serves the method.
                Some(a) => {
                    t.calls.remove(&id);
                    let _ = a.send(Accepted::NoResponders);
                }
                None => {
                    end_stream(&mut t, id, Status::unavailable("no responders"));
                }
            }
            return None;
        }
        let frame = match headers::frame_of(m.headers.as_ref()) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return end_stream(&mut t, id, bad_reply(WireError::Missing(headers::FRAME)));
            }
            Err(e) => return end_stream(&mut t, id, bad_reply(e)),
        };
        let h = m.headers.as_ref()?;
        match frame {
            Frame::Accept => {
                let window = headers::get_u64(h, WINDOW)
                    .ok()
                    .flatten()
                    .unwrap_or(DEFAULT_WINDOW);
                match (s.accept.take(), m.reply_to) {
                    (Some(a), Some(to)) => {
                        s.to = Some(to.clone());
                        let _ = a.send(Accepted::Running(to, window));
                    }
                    (_, None) => {
                        end_stream(
                            &mut t,
                            id,
                            Status::internal(
                                "the server accepted the call without a reply address",
                            ),
                        );
                    }
                    (None, Some(_)) => {}
                }
                None
            }
            Frame::Headers => {
                match h.get_metadata(MetadataKind::Initial) {
                    Ok(md) => {
                        let _ = s.events.try_send(CallEvent::Headers(md));
                    }
                    Err(e) => {
                        end_stream(&mut t, id, bad_reply(e));
                    }
                }
                None
            }
            Frame::Msg => {
                let expected = s.next_seq;
                let failure = match headers::get_required(h, SEQ) {
                    Err(e) => Some(bad_reply(e)),
                    Ok(n) if n != expected => Some(Status::new(
                        Code::DataLoss,
                        format!("stream message {expected} never arrived (got message {n} next)"),
                    )),
                    Ok(_) => self.too_large(m.payload.len()),
                };
                if let Some(status) = failure {
                    return end_stream(&mut t, id, status);
                }
                s.next_seq += 1;
                match headers::get_response(Some(h), m.payload) {
                    Ok(r) => {
                        if s.events.try_send(CallEvent::Message(r)).is_err() {
                            // The server ignored our window: nothing more can be buffered.
                            return end_stream(
                                &mut t,
                                id,
                                Status::resource_exhausted(
                                    "the server sent past the stream's flow-control window",
                                ),
                            );
                        }
                        None
                    }
                    Err(e) => end_stream(&mut t, id, bad_reply(e)),
                }
            }
            Frame::Status => {
                // A status without a count (a server shutting down) is not checked for loss.
                let status = match (headers::get_status(h), headers::get_u64(h, SEQ)) {
                    (Ok(st), Ok(None)) => st,
                    (Ok(st), Ok(Some(sent))) if sent + 1 == s.next_seq => st,
                    (Ok(_), Ok(Some(sent))) => Status::new(
                        Code::DataLoss,
                        format!(
                            "the server sent {sent} stream messages, {} arrived",
                            s.next_seq - 1
                        ),
                    ),
                    (Err(e), _) | (_, Err(e)) => bad_reply(e),
                };
                end_stream(&mut t, id, status);
                None
            }
            Frame::Credit => {
                if let Ok(Some(acked)) = headers::get_u64(h, ACK) {
                    s.credit.grant(acked);
                }
                None
            }
            // Client-only frames: a server never sends them; ignore rather than fail the call.
            Frame::Open | Frame::End | Frame::Cancel => None,
        }
    }
}

/// Ends stream `id` with `status`; returns the server's address for the call, to cancel it
/// there (the failure is ours).
fn end_stream<H, A>(t: &mut Table<H, A>, id: u64, status: Status) -> Option<A> {
    let Some(Slot::Stream(s)) = t.calls.remove(&id) else {
        return None;
    };
    s.credit.close();
    let _ = s.events.try_send(CallEvent::End(status));
    if let Some(a) = s.accept {
        // Ended before it was accepted: `open` returns, the status is the first event.
        let _ = a.send(Accepted::Ended);
    }
    s.to
}

/// What a broker adapter provides the client: its connection's call table, and how messages
/// reach the service and a stream's server.
pub trait ClientLink: Send + Sync + 'static {
    /// The broker's headers.
    type Headers: Headers;
    /// A stream's server address (the `accept` frame's reply address).
    type Address: Clone + fmt::Debug + Send + Sync + 'static;
    /// What keeps the connection's own tasks running; dropped (ending them) with the
    /// connection.
    type Owner: Send + Sync + 'static;

    /// Publishes a unary request or an `open` frame of call `id` to the service's
    /// subject/topic for `method`, asking for the answers on this connection's reply address
    /// marked with `id`.
    fn to_service(
        &self,
        id: u64,
        method: Method,
        headers: Option<Self::Headers>,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// Tells every server of the service that unary call `id`, already sent, was abandoned
    /// (the one running it stops its handler). Best effort, without waiting: called from a
    /// drop.
    fn cancel_unary(&self, id: u64);

    /// Publishes a frame to a stream's server.
    fn to_server(
        &self,
        to: &Self::Address,
        headers: Self::Headers,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// [`to_server`](Self::to_server) from a synchronous context (a drop, a cancel): best
    /// effort, without waiting.
    fn to_server_now(&self, to: &Self::Address, headers: Self::Headers);

    /// The status of a call to `method` nobody serves at `endpoint`, when the broker says so
    /// at once.
    fn no_responders(&self, method: Method, endpoint: &str) -> Status {
        Status::unavailable(format!(
            "no responders: no server serves {} at {endpoint}",
            method.name()
        ))
    }

    /// Closes the connection's link to the broker (after every call has failed).
    fn close(&self, owner: &Self::Owner) -> impl Future<Output = ()> + Send;
}

/// The calls' table of a connection over link `L`.
pub type CallsOf<L> = ClientCalls<<L as ClientLink>::Headers, <L as ClientLink>::Address>;

/// What a connection and its streams share.
struct Shared<L: ClientLink> {
    link: Arc<L>,
    calls: Arc<CallsOf<L>>,
    /// The service's endpoint, for messages.
    endpoint: String,
}

/// A connection to a broker service: the RPC contract over a [`ClientLink`].
pub struct Client<L: ClientLink> {
    shared: Arc<Shared<L>>,
    owner: L::Owner,
}

impl<L: ClientLink> fmt::Debug for Client<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl<L: ClientLink> Client<L> {
    /// A client of the service at `endpoint` over `link`, whose arriving messages the adapter
    /// routes into `calls`; `owner` keeps the link's tasks running.
    pub fn new(
        link: Arc<L>,
        calls: Arc<CallsOf<L>>,
        endpoint: String,
        owner: L::Owner,
    ) -> Client<L> {
        Client {
            shared: Arc::new(Shared {
                link,
                calls,
                endpoint,
            }),
            owner,
        }
    }

    /// The connection's calls.
    pub fn calls(&self) -> &CallsOf<L> {
        &self.shared.calls
    }
}

impl<L: ClientLink> Drop for Client<L> {
    fn drop(&mut self) {
        self.shared
            .calls
            .fail_all(&Status::unavailable("the connection was closed"), true);
    }
}

/// Cancels a unary call dropped before its reply: the slot goes, and the service hears which
/// call (only the server running it acts).
struct UnaryGuard<'a, L: ClientLink> {
    shared: &'a Shared<L>,
    id: u64,
    sent: bool,
    /// The reply arrived (its slot is gone already).
    answered: bool,
}

impl<L: ClientLink> Drop for UnaryGuard<'_, L> {
    fn drop(&mut self) {
        if !self.answered && self.shared.calls.remove(self.id) && self.sent {
            self.shared.link.cancel_unary(self.id);
        }
    }
}

impl<L: ClientLink> Connection for Client<L> {
    type Sender = StreamSender<L>;
    type Receiver = StreamReceiver<L>;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        let Shared {
            link,
            calls,
            endpoint,
        } = &*self.shared;
        let deadline = options.deadline();
        let headers = headers::request_headers(None, options, Some(&request));
        let slot = Slot::Unary {
            reply: None,
            waker: None,
        };
        let id = calls.register(slot, endpoint)?;
        let mut guard = UnaryGuard {
            shared: &self.shared,
            id,
            sent: false,
            answered: false,
        };
        let exchange = async {
            link.to_service(id, Method::Unary, headers, request.payload)
                .await?;
            guard.sent = true;
            let answer = poll_fn(|cx| calls.poll_unary(id, cx)).await;
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
        let answer = answer?;
        if answer.no_responders {
            return Err(link.no_responders(Method::Unary, endpoint));
        }
        calls.decode_unary(answer)
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(StreamSender<L>, StreamReceiver<L>), Status> {
        let Shared {
            link,
            calls,
            endpoint,
        } = &*self.shared;
        let deadline = options.deadline();
        let window = DEFAULT_WINDOW;
        let (tx, rx) = mpsc::channel(window as usize + EVENT_SLACK);
        let (acc_tx, acc_rx) = oneshot::channel();
        let credit = Arc::new(Credit::new(DEFAULT_WINDOW));
        let slot = Slot::Stream(StreamSlot {
            accept: Some(acc_tx),
            events: tx,
            credit: credit.clone(),
            next_seq: 1,
            to: None,
        });
        let id = calls.register(slot, endpoint)?;
        let mut h: L::Headers =
            headers::request_headers(Some(Frame::Open), options, None).unwrap_or_default();
        headers::put_u64(&mut h, WINDOW, window);
        let accepted = until_deadline(deadline, async {
            link.to_service(id, method, Some(h), Bytes::new()).await?;
            acc_rx.await.map_err(|_| calls.gone_status())
        })
        .await;
        let to = match accepted {
            Ok(Accepted::Running(to, peer_window)) => {
                credit.set_window(peer_window);
                Some(to)
            }
            Ok(Accepted::Ended) => None,
            Ok(Accepted::NoResponders) => {
                calls.remove(id);
                return Err(link.no_responders(method, endpoint));
            }
            Ok(Accepted::Refused(status)) | Err(status) => {
                // Not accepted in time (or the connection broke): nothing to cancel yet.
                calls.remove(id);
                return Err(status);
            }
        };
        let sender = StreamSender {
            shared: self.shared.clone(),
            to: to.clone(),
            seq: 0,
            credit: credit.clone(),
            closed: false,
        };
        let cancel = StreamCancel {
            shared: self.shared.clone(),
            id,
            to: to.clone(),
            credit,
        };
        let receiver = StreamReceiver {
            inner: EventReceiver::new(rx, deadline, cancel),
            grants: Grants::new(window),
            shared: self.shared.clone(),
            to,
        };
        Ok((sender, receiver))
    }

    async fn close(&self) {
        self.shared.calls.fail_all(
            &Status::unavailable("the connection was closed by the client"),
            true,
        );
        self.shared.link.close(&self.owner).await;
    }
}

/// Cancels a stream: a `cancel` frame to its server.
pub struct StreamCancel<L: ClientLink> {
    shared: Arc<Shared<L>>,
    id: u64,
    to: Option<L::Address>,
    credit: Arc<Credit>,
}

impl<L: ClientLink> fmt::Debug for StreamCancel<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamCancel({})", self.id)
    }
}

impl<L: ClientLink> CancelSignal for StreamCancel<L> {
    fn cancel(&mut self) {
        let live = self.shared.calls.remove(self.id);
        self.credit.close();
        if live && let Some(to) = self.to.take() {
            // Best effort: a lost cancel only lets the server run to its deadline.
            self.shared
                .link
                .to_server_now(&to, headers::frame(Frame::Cancel));
        }
    }
}

/// The sending half of a stream.
pub struct StreamSender<L: ClientLink> {
    shared: Arc<Shared<L>>,
    /// The server's address for this call; `None` when the call ended before it ran.
    to: Option<L::Address>,
    seq: u64,
    credit: Arc<Credit>,
    closed: bool,
}

impl<L: ClientLink> fmt::Debug for StreamSender<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("to", &self.to)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn end_frame<H: Headers>(sent: u64) -> H {
    let mut h = headers::frame(Frame::End);
    headers::put_u64(&mut h, SEQ, sent);
    h
}

impl<L: ClientLink> CallSender for StreamSender<L> {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        let Some(to) = self.to.clone().filter(|_| !self.closed) else {
            return Err(call_ended());
        };
        let seq = self.seq + 1;
        if !self.credit.acquire(seq).await {
            return Err(call_ended());
        }
        let mut h = headers::frame(Frame::Msg);
        headers::put_u64(&mut h, SEQ, seq);
        headers::put_directives(&mut h, &request.directives);
        self.shared.link.to_server(&to, h, request.payload).await?;
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
                self.shared
                    .link
                    .to_server(to, end_frame(self.seq), Bytes::new())
                    .await
            }
            _ => Ok(()),
        }
    }
}

impl<L: ClientLink> Drop for StreamSender<L> {
    fn drop(&mut self) {
        // Dropping the sender half-closes, as the contract says.
        if !self.closed
            && !self.credit.is_closed()
            && let Some(to) = self.to.take()
        {
            self.shared.link.to_server_now(&to, end_frame(self.seq));
        }
    }
}

/// The receiving half of a stream: the shared [`EventReceiver`], plus credit sent back to the
/// server as messages are consumed.
pub struct StreamReceiver<L: ClientLink> {
    inner: EventReceiver<StreamCancel<L>>,
    grants: Grants,
    shared: Arc<Shared<L>>,
    to: Option<L::Address>,
}

impl<L: ClientLink> fmt::Debug for StreamReceiver<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("inner", &self.inner)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl<L: ClientLink> CallReceiver for StreamReceiver<L> {
    async fn headers(&mut self) -> Result<Metadata, Status> {
        self.inner.headers().await
    }

    async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
        let r = self.inner.recv().await;
        if let Ok(Some(_)) = &r
            && let Some(acked) = self.grants.consumed()
            && let Some(to) = &self.to
        {
            let mut h = headers::frame(Frame::Credit);
            headers::put_u64(&mut h, ACK, acked);
            // A lost credit frame only slows the server down until the call ends.
            let _ = self.shared.link.to_server(to, h, Bytes::new()).await;
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
