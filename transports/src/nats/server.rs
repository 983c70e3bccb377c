//! The `nats` server: attaches to a broker (or starts a private one), joins the service's queue
//! group on `<prefix>.*`, and adapts the shared `Echo`: unary requests that need no waiting are
//! answered inline by the service loop (no task), the rest get a task each.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::message::OutboundMessage;
use async_nats::{Client, HeaderMap, HeaderValue, Message, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::broker::NatsProcess;
use super::client::{connect_client, publish};
use super::flow::{Credit, DEFAULT_WINDOW, Grants};
use super::wire::{self, Frame, WireError};
use super::{Endpoint, QUEUE_GROUP, Target, cancel_subject};
use crate::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use crate::message::{EchoRequest, EchoResponse, Method};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::transport::{ClientConfig, Server, TransportError};

/// A running `nats` server: one member of its service's queue group.
#[derive(Debug)]
pub struct NatsServer {
    endpoint: Endpoint,
    client: Client,
    shutdown: CancellationToken,
    main: JoinHandle<()>,
    tracker: TaskTracker,
    /// The private broker this server started, stopped with it.
    broker: Option<NatsProcess>,
}

impl NatsServer {
    /// Serves `echo` as described by `listen` (see [`Target`]).
    pub(crate) async fn start(target: Target, echo: Arc<Echo>) -> Result<NatsServer, TransportError> {
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
        let frames = client
            .subscribe(Subject::from(format!("{inbox}.*")))
            .await
            .map_err(|e| sub_err("the server inbox", e))?;
        // Once the broker has our subscriptions, a client connecting next finds a responder.
        client
            .flush()
            .await
            .map_err(|e| TransportError::Protocol(format!("flushing subscriptions: {e}")))?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let service = Service {
            echo,
            client: client.clone(),
            method_prefix: format!("{prefix}."),
            inbox_prefix: format!("{inbox}."),
            streams: HashMap::new(),
            unary: HashMap::new(),
            next_cid: 1,
            done_tx,
            tracker: tracker.clone(),
        };
        let main = tokio::spawn(service.run(requests, frames, cancels, done_rx, shutdown.clone()));
        Ok(NatsServer {
            endpoint: Endpoint {
                url,
                prefix: Some(prefix),
            },
            client,
            shutdown,
            main,
            tracker,
            broker,
        })
    }
}

impl Server for NatsServer {
    fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.main.await;
        self.tracker.close();
        self.tracker.wait().await;
        let _ = self.client.flush().await;
        drop(self.client);
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}

/// A stream call the service loop routes frames to.
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
    Unary(Subject),
}

struct Service {
    echo: Arc<Echo>,
    client: Client,
    /// `<prefix>.`: requests arrive on `<prefix>.<Method>`.
    method_prefix: String,
    /// `<server inbox>.`: a stream's client frames arrive on `<server inbox>.<call id>`.
    inbox_prefix: String,
    streams: HashMap<u64, StreamEntry>,
    /// Unary calls running in a task of their own, by reply subject (what a cancel names).
    unary: HashMap<String, CancellationToken>,
    next_cid: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    tracker: TaskTracker,
}

impl Service {
    async fn run(
        mut self,
        mut requests: async_nats::Subscriber,
        mut frames: async_nats::Subscriber,
        mut cancels: async_nats::Subscriber,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = done_rx.recv() => match done {
                    Done::Stream(cid) => { self.streams.remove(&cid); }
                    Done::Unary(reply) => { self.unary.remove(reply.as_str()); }
                },
                Some(msg) = frames.next() => self.on_frame(msg).await,
                Some(msg) = cancels.next() => self.on_cancel(&msg),
                msg = requests.next() => match msg {
                    Some(msg) => self.on_request(msg).await,
                    // The client closed: nothing more will arrive.
                    None => break,
                },
            }
        }
        let _ = requests.unsubscribe().await;
        // Calls still running learn why they end; their handlers see a cancellation.
        let going = Status::unavailable("server shutting down");
        for (_, e) in self.streams.drain() {
            e.cancel.cancel();
            e.credit.close();
            let _ = publish(&self.client, status_frame(e.reply, &going, 0, true)).await;
        }
        for (reply, token) in self.unary.drain() {
            token.cancel();
            let reply = Subject::from(reply);
            let (headers, payload) = unary_reply(UnaryOutcome {
                headers: Metadata::new(),
                response: None,
                status: going.clone(),
            });
            let _ = publish(&self.client, reply_msg(reply, headers, payload)).await;
        }
    }

    async fn on_request(&mut self, msg: Message) {
        let Some(reply) = msg.reply.clone() else {
            tracing::debug!("nats server: request on {} without reply subject", msg.subject);
            return;
        };
        let method = msg
            .subject
            .strip_prefix(self.method_prefix.as_str())
            .and_then(Method::parse)
            .unwrap_or(Method::Unimplemented);
        match wire::frame_of(msg.headers.as_ref()) {
            Ok(None) => self.unary(method, reply, msg).await,
            Ok(Some(Frame::Open)) => self.open(method, reply, msg).await,
            Ok(Some(f)) => {
                let status = Status::invalid_argument(format!(
                    "frame {} sent to the service subject (only requests and open go there)",
                    f.as_str()
                ));
                let _ = publish(&self.client, status_frame(reply, &status, 0, false)).await;
            }
            Err(e) => {
                let status = bad_request(e);
                let (h, p) = unary_reply(UnaryOutcome {
                    headers: Metadata::new(),
                    response: None,
                    status,
                });
                let _ = publish(&self.client, reply_msg(reply, h, p)).await;
            }
        }
    }

    async fn unary(&mut self, method: Method, reply: Subject, msg: Message) {
        let decoded = decode_head(method, msg.headers.as_ref()).and_then(|head| {
            let directives = match &msg.headers {
                Some(h) => wire::get_directives(h).map_err(bad_request)?,
                None => Default::default(),
            };
            Ok((head, EchoRequest { payload: msg.payload, directives }))
        });
        let (head, request) = match decoded {
            Ok(d) => d,
            Err(status) => {
                let (h, p) = unary_reply(UnaryOutcome {
                    headers: Metadata::new(),
                    response: None,
                    status,
                });
                let _ = publish(&self.client, reply_msg(reply, h, p)).await;
                return;
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
            let (h, p) = unary_reply(UnaryOutcome {
                headers: Metadata::new(),
                response: None,
                status,
            });
            let _ = publish(&self.client, reply_msg(reply, h, p)).await;
            return;
        }
        match self.echo.unary_now(&head, request) {
            Ok(outcome) => send_unary(&self.client, reply, outcome).await,
            Err(request) => {
                let cancel = CancellationToken::new();
                self.unary.insert(reply.to_string(), cancel.clone());
                let echo = self.echo.clone();
                let client = self.client.clone();
                let done = self.done_tx.clone();
                self.tracker.spawn(async move {
                    let outcome = echo.unary(&head, request, &cancel).await;
                    if !cancel.is_cancelled() {
                        send_unary(&client, reply.clone(), outcome).await;
                    }
                    let _ = done.send(Done::Unary(reply));
                });
            }
        }
    }

    async fn open(&mut self, method: Method, reply: Subject, msg: Message) {
        let head = match decode_head(method, msg.headers.as_ref()) {
            Ok(h) => h,
            Err(status) => {
                let _ = publish(&self.client, status_frame(reply, &status, 0, false)).await;
                return;
            }
        };
        let peer_window = msg
            .headers
            .as_ref()
            .and_then(|h| wire::get_u64(h, &wire::WINDOW).ok().flatten())
            .unwrap_or(DEFAULT_WINDOW);
        let cid = self.next_cid;
        self.next_cid += 1;
        let window = DEFAULT_WINDOW;
        // One slot more than the window: room for a failure after a full window.
        let (tx, rx) = mpsc::channel(window as usize + 1);
        let cancel = CancellationToken::new();
        let credit = Arc::new(Credit::new(peer_window));
        self.streams.insert(
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
        if publish(&self.client, accept).await.is_err() {
            self.streams.remove(&cid);
            return;
        }
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
                    let _ = publish(&client, status_frame(call.to.clone(), &bare, call.sent, false)).await;
                }
            }
            let _ = done.send(Done::Stream(cid));
        });
    }

    async fn on_frame(&mut self, msg: Message) {
        let Some(cid) = msg
            .subject
            .strip_prefix(self.inbox_prefix.as_str())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let Some(entry) = self.streams.get_mut(&cid) else {
            // A call that already ended: late frames are moot.
            return;
        };
        let Some(headers) = msg.headers.as_ref() else {
            return;
        };
        match wire::frame_of(Some(headers)) {
            Ok(Some(Frame::Msg)) => {
                let Some(tx) = entry.tx.clone() else {
                    deliver_last(entry, Err(Status::invalid_argument("message after half-close")));
                    return;
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
                if let Some(e) = self.streams.remove(&cid) {
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
    }

    fn on_cancel(&mut self, msg: &Message) {
        let Ok(reply) = std::str::from_utf8(&msg.payload) else {
            return;
        };
        if let Some(token) = self.unary.remove(reply) {
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

/// A unary answer as NATS headers and payload: no headers at all for a plain OK.
fn unary_reply(o: UnaryOutcome) -> (Option<HeaderMap>, Bytes) {
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

fn reply_msg(reply: Subject, headers: Option<HeaderMap>, payload: Bytes) -> OutboundMessage {
    OutboundMessage {
        subject: reply,
        reply: None,
        payload,
        headers,
    }
}

/// Sends a unary answer; one the broker refuses (larger than its max_payload) becomes a
/// `RESOURCE_EXHAUSTED` status, so the caller is not left waiting.
async fn send_unary(client: &Client, reply: Subject, outcome: UnaryOutcome) {
    let (h, p) = unary_reply(outcome);
    if let Err(status) = publish(client, reply_msg(reply.clone(), h, p)).await {
        let (h, p) = unary_reply(UnaryOutcome {
            headers: Metadata::new(),
            response: None,
            status: Status::new(status.code(), status.message().to_owned()),
        });
        let _ = publish(client, reply_msg(reply, h, p)).await;
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
