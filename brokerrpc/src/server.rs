//! The server side of the protocol, written once for every broker: what a server does with
//! each message that reaches it — a unary request answered inline or by a task of its own, a
//! stream opened (registered, accepted, run by the shared `Echo`), a client's stream frame
//! routed to its call with the sequence check, a cancellation — and how it says goodbye when
//! it stops. A broker adapter supplies a [`ServerLink`] (how an answer reaches a client) and
//! feeds [`Service`] the messages its subscriptions receive; it keeps its own subscriptions,
//! loops and drain.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirebench_core::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};

use crate::flow::{Credit, DEFAULT_WINDOW, Grants};
use crate::headers::{
    self, ACK, Frame, Headers, MetadataKind, SEQ, WINDOW, bad_request, status_frame, unary_reply,
};

/// What a broker adapter provides the server: how answers reach a call's client.
pub trait ServerLink: Clone + Send + Sync + 'static {
    /// The broker's headers.
    type Headers: Headers;
    /// Where a call's answers go (a reply subject; a response topic with correlation data).
    type ReplyTo: Clone + fmt::Debug + Send + Sync + 'static;
    /// What a unary call's cancellation names the call by.
    type CancelKey: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static;

    /// The key a cancellation of the unary call answered at `reply` carries.
    fn cancel_key(reply: &Self::ReplyTo) -> Self::CancelKey;

    /// Publishes to a call's client. A message larger than the broker takes fails with
    /// `RESOURCE_EXHAUSTED` (nothing sent); a closed connection with `UNAVAILABLE`.
    fn reply(
        &self,
        to: &Self::ReplyTo,
        headers: Option<Self::Headers>,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// Publishes the `accept` of stream `cid` to its client, naming this server's address for
    /// the call's further frames as the message's reply address.
    fn accept(
        &self,
        to: &Self::ReplyTo,
        cid: u64,
        headers: Self::Headers,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

/// An answer the adapter publishes itself, at once (the plain unary path and refusals run
/// inline, with no task).
#[derive(Debug)]
pub struct Inline<L: ServerLink> {
    /// Where it goes.
    pub to: L::ReplyTo,
    /// Its headers (none for a plain OK).
    pub headers: Option<L::Headers>,
    /// Its payload.
    pub payload: Bytes,
}

impl<L: ServerLink> Inline<L> {
    /// A unary answer: no headers at all for a plain OK.
    pub fn unary(to: L::ReplyTo, outcome: UnaryOutcome) -> Inline<L> {
        let (headers, payload) = unary_reply(outcome);
        Inline {
            to,
            headers,
            payload,
        }
    }

    /// The answer to send instead when the broker refused this one for its size (`status`
    /// says so): a bare `RESOURCE_EXHAUSTED`, so the caller is not left waiting. `None` for
    /// any other failure (nobody to tell when the connection is gone).
    pub fn refused(to: L::ReplyTo, status: &Status) -> Option<Inline<L>> {
        (status.code() == Code::ResourceExhausted).then(|| {
            let (headers, payload) = unary_reply(UnaryOutcome::failed(Status::new(
                status.code(),
                status.message(),
            )));
            Inline {
                to,
                headers,
                payload,
            }
        })
    }
}

/// Publishes a unary answer from a task; one the broker refuses for its size becomes a bare
/// `RESOURCE_EXHAUSTED` status.
async fn send_answer<L: ServerLink>(link: &L, to: &L::ReplyTo, outcome: UnaryOutcome) {
    let (headers, payload) = unary_reply(outcome);
    if let Err(e) = link.reply(to, headers, payload).await
        && let Some(r) = Inline::<L>::refused(to.clone(), &e)
    {
        let _ = link.reply(&r.to, r.headers, r.payload).await;
    }
}

/// A stream call the service routes client frames to.
struct StreamEntry<R> {
    /// Requests for the handler; `None` once the client half-closed.
    tx: Option<mpsc::Sender<Result<EchoRequest, Status>>>,
    cancel: CancellationToken,
    /// Our credit towards the client (its receive window).
    credit: Arc<Credit>,
    /// The sequence number the client's next `msg` must carry.
    next_seq: u64,
    /// The client's address for this call (a status on shutdown).
    reply: R,
}

/// Calls running in tasks of their own.
struct Calls<L: ServerLink> {
    streams: HashMap<u64, StreamEntry<L::ReplyTo>>,
    /// Unary calls that wait (a delay), by what a cancellation names them by.
    unary: HashMap<L::CancelKey, (L::ReplyTo, CancellationToken)>,
}

/// One server's calls: the shared echo, the tables of running calls, and their tasks.
pub struct Service<L: ServerLink> {
    echo: Arc<Echo>,
    link: L,
    calls: Mutex<Calls<L>>,
    next_cid: AtomicU64,
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl<L: ServerLink> fmt::Debug for Service<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("tasks", &self.tracker.len())
            .finish_non_exhaustive()
    }
}

/// Hands the handler a final item (a failure) and closes its request channel.
fn deliver_last<R>(entry: &mut StreamEntry<R>, item: Result<EchoRequest, Status>) {
    if let Some(tx) = entry.tx.take() {
        // The channel keeps one slot free for exactly this.
        let _ = tx.try_send(item);
    }
}

impl<L: ServerLink> Service<L> {
    /// A service answering with `echo` over `link`.
    pub fn new(echo: Arc<Echo>, link: L) -> Arc<Service<L>> {
        Arc::new(Service {
            echo,
            link,
            calls: Mutex::new(Calls {
                streams: HashMap::new(),
                unary: HashMap::new(),
            }),
            next_cid: AtomicU64::new(1),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    fn calls(&self) -> MutexGuard<'_, Calls<L>> {
        // A panic while holding this lock would be a bug; the tables stay usable.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls' tasks (a drain waits for them).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The shared echo.
    pub fn echo(&self) -> &Arc<Echo> {
        &self.echo
    }

    /// True once [`stop`](Self::stop) began: nothing new is taken.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// A message to the service subject/topic of `method` (a unary request, or an `open`),
    /// whose answers go to `reply`. Decided synchronously: returns the answer to publish now
    /// (the plain unary path, a refusal), or `None` when a task of its own took the call.
    pub fn on_request(
        self: &Arc<Self>,
        method: Method,
        reply: L::ReplyTo,
        headers: Option<&L::Headers>,
        payload: Bytes,
    ) -> Option<Inline<L>> {
        if self.is_stopping() {
            return None;
        }
        match headers::frame_of(headers) {
            Ok(None) => self.unary(method, reply, headers, payload),
            Ok(Some(Frame::Open)) => self.open(method, reply, headers),
            Ok(Some(f)) => {
                let status = Status::invalid_argument(format!(
                    "frame {} sent to the service (only requests and open go there)",
                    f.as_str()
                ));
                Some(Inline {
                    to: reply,
                    headers: Some(status_frame(&status, 0, false)),
                    payload: Bytes::new(),
                })
            }
            Err(e) => Some(Inline::unary(reply, UnaryOutcome::failed(bad_request(e)))),
        }
    }

    fn unary(
        self: &Arc<Self>,
        method: Method,
        reply: L::ReplyTo,
        headers: Option<&L::Headers>,
        payload: Bytes,
    ) -> Option<Inline<L>> {
        let decoded = headers::decode_head(method, headers).and_then(|head| {
            let directives = match headers.filter(|h| !h.is_empty()) {
                Some(h) => headers::get_directives(h).map_err(bad_request)?,
                None => Default::default(),
            };
            Ok((
                head,
                EchoRequest {
                    payload,
                    directives,
                },
            ))
        });
        let (head, request) = match decoded {
            Ok(d) => d,
            Err(status) => return Some(Inline::unary(reply, UnaryOutcome::failed(status))),
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
            return Some(Inline::unary(reply, UnaryOutcome::failed(status)));
        }
        match self.echo.unary_now(&head, request) {
            Ok(outcome) => Some(Inline::unary(reply, outcome)),
            Err(request) => {
                let cancel = CancellationToken::new();
                let key = L::cancel_key(&reply);
                self.calls()
                    .unary
                    .insert(key.clone(), (reply.clone(), cancel.clone()));
                let service = self.clone();
                self.tracker.spawn(async move {
                    let outcome = service.echo.unary(&head, request, &cancel).await;
                    let mine = service.calls().unary.remove(&key).is_some();
                    // Not ours any more: cancelled, or answered by a shutdown.
                    if mine && !cancel.is_cancelled() && !service.is_stopping() {
                        send_answer(&service.link, &reply, outcome).await;
                    }
                });
                None
            }
        }
    }

    fn open(
        self: &Arc<Self>,
        method: Method,
        reply: L::ReplyTo,
        headers: Option<&L::Headers>,
    ) -> Option<Inline<L>> {
        let head = match headers::decode_head(method, headers) {
            Ok(h) => h,
            Err(status) => {
                return Some(Inline {
                    to: reply,
                    headers: Some(status_frame(&status, 0, false)),
                    payload: Bytes::new(),
                });
            }
        };
        let peer_window = headers
            .and_then(|h| headers::get_u64(h, WINDOW).ok().flatten())
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
        let service = self.clone();
        self.tracker.spawn(async move {
            service
                .run_stream(cid, head, reply, rx, credit, window, cancel)
                .await;
        });
        None
    }

    /// A stream's task: the accept (first, so the client sees it before anything else of
    /// the call), the shared echo, the final status.
    #[allow(clippy::too_many_arguments)]
    async fn run_stream(
        &self,
        cid: u64,
        head: CallHead,
        reply: L::ReplyTo,
        rx: mpsc::Receiver<Result<EchoRequest, Status>>,
        credit: Arc<Credit>,
        window: u64,
        cancel: CancellationToken,
    ) {
        let mut accept = headers::frame(Frame::Accept);
        headers::put_u64(&mut accept, WINDOW, window);
        if self.link.accept(&reply, cid, accept).await.is_err() {
            cancel.cancel();
        }
        let mut call = StreamCall {
            link: self.link.clone(),
            to: reply,
            rx,
            credit,
            grants: Grants::new(window),
            sent: 0,
        };
        let status = self.echo.handle(&head, &mut call, &cancel).await;
        if !cancel.is_cancelled() {
            let end = status_frame(&status, call.sent, false);
            if let Err(e) = self.link.reply(&call.to, Some(end), Bytes::new()).await {
                // Too large for the broker (trailing metadata): say so in a bare status.
                let bare = Status::new(e.code(), e.message().to_owned());
                let end = status_frame(&bare, call.sent, false);
                let _ = self.link.reply(&call.to, Some(end), Bytes::new()).await;
            }
        }
        self.calls().streams.remove(&cid);
    }

    /// A client's frame of stream `cid` (sent to this server's address for the call).
    pub fn on_frame(&self, cid: u64, headers: Option<&L::Headers>, payload: Bytes) {
        let Some(h) = headers else {
            return;
        };
        let mut calls = self.calls();
        // A call that already ended: late frames are moot.
        let Some(entry) = calls.streams.get_mut(&cid) else {
            return;
        };
        match headers::frame_of(Some(h)) {
            Ok(Some(Frame::Msg)) => {
                let Some(tx) = entry.tx.clone() else {
                    deliver_last(
                        entry,
                        Err(Status::invalid_argument("message after half-close")),
                    );
                    return;
                };
                let item = match headers::get_required(h, SEQ) {
                    Err(e) => Err(bad_request(e)),
                    Ok(n) if n != entry.next_seq => Err(Status::new(
                        Code::DataLoss,
                        format!(
                            "stream message {} never arrived (got message {n} next)",
                            entry.next_seq
                        ),
                    )),
                    Ok(_) => headers::get_directives(h)
                        .map(|directives| EchoRequest {
                            payload,
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
                match headers::get_required(h, SEQ) {
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
                if let Ok(Some(acked)) = headers::get_u64(h, ACK) {
                    entry.credit.grant(acked);
                }
            }
            // Server-only frames from a client: nothing to act on.
            Ok(_) => {}
            Err(e) => deliver_last(entry, Err(bad_request(e))),
        }
    }

    /// A client gave up on the unary call `key` names: its handler stops.
    pub fn on_cancel(&self, key: &L::CancelKey) {
        if let Some((_, token)) = self.calls().unary.remove(key) {
            token.cancel();
        }
    }

    /// Stops taking calls: every call still running is cancelled, and what its client must
    /// hear (`UNAVAILABLE`: a unary answer, or a `status` frame without a count) is returned
    /// for the adapter to publish while its link still works. Then wait for
    /// [`tracker`](Self::tracker).
    pub fn stop(&self) -> Vec<Inline<L>> {
        self.stopping.cancel();
        let going = Status::unavailable("server shutting down");
        let (streams, unary) = {
            let mut c = self.calls();
            (std::mem::take(&mut c.streams), std::mem::take(&mut c.unary))
        };
        let mut goodbyes = Vec::with_capacity(streams.len() + unary.len());
        for (_, e) in streams {
            e.cancel.cancel();
            e.credit.close();
            goodbyes.push(Inline {
                to: e.reply,
                headers: Some(status_frame(&going, 0, true)),
                payload: Bytes::new(),
            });
        }
        for (_, (reply, token)) in unary {
            token.cancel();
            goodbyes.push(Inline::unary(reply, UnaryOutcome::failed(going.clone())));
        }
        self.tracker.close();
        goodbyes
    }
}

/// The server side of one stream call.
struct StreamCall<L: ServerLink> {
    link: L,
    /// The client's address for this call.
    to: L::ReplyTo,
    rx: mpsc::Receiver<Result<EchoRequest, Status>>,
    credit: Arc<Credit>,
    grants: Grants,
    sent: u64,
}

impl<L: ServerLink> ServerCall for StreamCall<L> {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        let item = self.rx.recv().await.transpose()?;
        if item.is_some()
            && let Some(acked) = self.grants.consumed()
        {
            let mut h = headers::frame(Frame::Credit);
            headers::put_u64(&mut h, ACK, acked);
            // A lost credit frame only slows the client down until the call ends.
            let _ = self.link.reply(&self.to, Some(h), Bytes::new()).await;
        }
        Ok(item)
    }

    async fn send_headers(&mut self, md: Metadata) -> Result<(), Status> {
        let mut h: L::Headers = headers::frame(Frame::Headers);
        h.put_metadata(MetadataKind::Initial, &md);
        self.link.reply(&self.to, Some(h), Bytes::new()).await
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        let seq = self.sent + 1;
        if !self.credit.acquire(seq).await {
            return Err(Status::cancelled("client went away"));
        }
        let mut h = headers::frame(Frame::Msg);
        headers::put_u64(&mut h, SEQ, seq);
        headers::put_response(&mut h, &response);
        self.link.reply(&self.to, Some(h), response.payload).await?;
        self.sent = seq;
        Ok(())
    }
}
