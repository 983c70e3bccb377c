//! The `mqtt` server: attaches to a broker (or starts an embedded one), joins the service's
//! shared subscription on `P/call/+`, and adapts the shared `Echo`. Every message reaches it on
//! its connection's polling task, which answers unary requests that need no waiting inline
//! (`Echo::unary_now`, published with `try_publish`: no task, no await) and hands everything
//! else to a task per call. The tables of running calls are locked briefly, never across an
//! await, and never on the plain unary path.
//!
//! A drain unsubscribes from the service's shared subscription first (waiting for the
//! UNSUBACK), lets the calls already received run to their end — cancels and stream frames
//! still arrive — and then stops as `shutdown` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{announced_max, publish_status};
use super::embedded::EmbeddedBroker;
use super::link::{Inbound, Link, LinkConfig, LinkHandle, Out, PublishError};
use super::wire::{self, Frame, Props, WireError};
use super::{Endpoint, SHARE_GROUP, Target, cancel_topic, fresh_id};
use wirebench_core::drain::{DrainReport, Grace};
use wirebench_core::echo::{CallHead, Echo, ServerCall, UnaryOutcome};
use wirebench_brokerrpc::flow::{Credit, DEFAULT_WINDOW, Grants};
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{DEFAULT_MAX_MESSAGE_SIZE, Server, TransportError};

/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The method a topic's last level names (exactly as [`Method::name`] spells it).
fn method_of(level: &[u8]) -> Method {
    match level {
        b"Unary" => Method::Unary,
        b"ServerStream" => Method::ServerStream,
        b"ClientStream" => Method::ClientStream,
        b"Bidi" => Method::Bidi,
        _ => Method::Unimplemented,
    }
}

/// A running `mqtt` server: one member of its service's shared subscription.
#[derive(Debug)]
pub struct MqttServer {
    endpoint: Endpoint,
    link: Link,
    service: Arc<Service>,
    /// The embedded broker this server started, stopped with it.
    broker: Option<EmbeddedBroker>,
}

impl MqttServer {
    /// Serves `echo` as described by `target`, publishing at `qos`.
    pub(crate) async fn start(
        target: Target,
        qos: QoS,
        echo: Arc<Echo>,
    ) -> Result<MqttServer, TransportError> {
        let (host, port, prefix, broker) = match target {
            Target::Attach(e) => (e.host, e.port, e.prefix, None),
            Target::Embedded(addr) => {
                let b = EmbeddedBroker::start(addr).await?;
                let a = b.addr();
                (a.ip().to_string(), a.port(), None, Some(b))
            }
        };
        let prefix = prefix.unwrap_or_else(|| format!("wb/echo/{}", fresh_id()));
        let server_id = fresh_id();
        let service = Arc::new(Service {
            max_message_size: echo.config().max_message_size,
            echo,
            qos,
            call_prefix: format!("{prefix}/call/"),
            cancel_topic: cancel_topic(&prefix),
            stream_prefix: format!("{prefix}/stream/{server_id}/"),
            calls: Arc::new(Mutex::new(Calls::default())),
            next_cid: AtomicU64::new(1),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
        });
        let link = Link::connect(
            &LinkConfig {
                keepalive: None,
                host: host.clone(),
                port,
                client_id: format!("wb-s-{server_id}"),
                max_incoming: announced_max(service.max_message_size.max(DEFAULT_MAX_MESSAGE_SIZE)),
                connect_timeout: CONNECT_TIMEOUT,
            },
            service.clone(),
        )
        .await?;
        link.subscribe(&service.cancel_topic, qos).await?;
        link.subscribe(&format!("{}+", service.stream_prefix), qos)
            .await?;
        // Last: once requests can arrive, everything they lead to is in place.
        link.subscribe(&service.call_filter(), qos).await?;
        Ok(MqttServer {
            endpoint: Endpoint {
                host,
                port,
                prefix: Some(prefix),
            },
            link,
            service,
            broker,
        })
    }
}

impl Server for MqttServer {
    fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    async fn shutdown(self) {
        self.stop().await;
    }

    async fn drain(self, grace: Duration) -> DrainReport {
        let g = Grace::begin(grace, &self.service.tracker);
        // Once the broker acknowledged the UNSUBSCRIBE it routes no request here (the shared
        // subscription's other members get them); those it sent before have arrived and are
        // answered or running. Cancels and stream frames still come: their subscriptions stay.
        let filter = self.service.call_filter();
        match g.within(self.link.unsubscribe(&filter)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::warn!("mqtt server: draining: {e}"),
            None => tracing::warn!("mqtt server: draining: no UNSUBACK within the grace"),
        }
        g.settle(&self.service.tracker).await;
        let report = g.report(&self.service.tracker);
        // The answers just published reach the broker before the DISCONNECT anyway (one
        // connection's packets are handled in order); the barrier makes sure the broker has
        // taken them before an embedded broker is stopped with us.
        if self.broker.is_some() {
            let _ = g
                .within(self.link.barrier(&self.service.barrier_topic()))
                .await;
        }
        self.stop().await;
        report
    }
}

impl MqttServer {
    /// Stops at once: calls still running are answered `UNAVAILABLE` and their handlers
    /// cancelled; then the link and an embedded broker are closed.
    async fn stop(self) {
        self.service.stopping.cancel();
        // Calls still running learn why they end; their handlers see a cancellation.
        let going = Status::unavailable("server shutting down");
        let (streams, unary) = {
            let mut c = self.service.calls();
            (std::mem::take(&mut c.streams), std::mem::take(&mut c.unary))
        };
        let link = self.link.handle();
        for (_, e) in streams {
            e.cancel.cancel();
            e.credit.close();
            let out = status_frame(&e.reply, &going, 0, true, self.service.qos);
            let _ = link.publish(out).await;
        }
        for (_, (reply, token)) in unary {
            token.cancel();
            let out = unary_msg(
                &reply,
                UnaryOutcome::failed(going.clone()),
                self.service.qos,
            );
            let _ = link.publish(out).await;
        }
        self.service.tracker.close();
        self.service.tracker.wait().await;
        self.link.close().await;
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}

/// Where a call's answers go: the client's response topic and correlation data.
#[derive(Clone, Debug)]
struct ReplyTo {
    topic: String,
    correlation: Option<Bytes>,
}

impl ReplyTo {
    fn out(&self, qos: QoS, payload: Bytes, user: Props) -> Out {
        Out {
            topic: self.topic.clone(),
            qos,
            payload,
            properties: PublishProperties {
                correlation_data: self.correlation.clone(),
                user_properties: user,
                ..PublishProperties::default()
            },
        }
    }

    /// The key a cancellation names the call by.
    fn key(&self) -> Vec<u8> {
        let c = self.correlation.as_deref().unwrap_or_default();
        let mut k = Vec::with_capacity(self.topic.len() + 1 + c.len());
        k.extend_from_slice(self.topic.as_bytes());
        k.push(0);
        k.extend_from_slice(c);
        k
    }
}

/// A stream call the polling task routes frames to.
struct StreamEntry {
    /// Requests for the handler; `None` once the client half-closed.
    tx: Option<mpsc::Sender<Result<EchoRequest, Status>>>,
    cancel: CancellationToken,
    /// Our credit towards the client (its receive window).
    credit: Arc<Credit>,
    /// The sequence number the client's next `msg` must carry.
    next_seq: u64,
    /// The client's topic and correlation data for this call.
    reply: ReplyTo,
}

/// Calls running in tasks of their own.
#[derive(Default)]
struct Calls {
    streams: HashMap<u64, StreamEntry>,
    /// Unary calls that wait (a delay), by what a cancellation names them by.
    unary: HashMap<Vec<u8>, (ReplyTo, CancellationToken)>,
}

struct Service {
    echo: Arc<Echo>,
    max_message_size: usize,
    qos: QoS,
    /// `P/call/`: requests arrive on `P/call/<Method>`.
    call_prefix: String,
    cancel_topic: String,
    /// `P/stream/<server id>/`: a stream's client frames arrive on `<this><call id>`.
    stream_prefix: String,
    /// Shared with the calls' tasks, which remove themselves when they end.
    calls: Arc<Mutex<Calls>>,
    next_cid: AtomicU64,
    tracker: TaskTracker,
    stopping: CancellationToken,
}

fn lock(calls: &Mutex<Calls>) -> MutexGuard<'_, Calls> {
    // A panic while holding this lock would be a bug; the tables stay usable.
    calls.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("call_prefix", &self.call_prefix)
            .finish_non_exhaustive()
    }
}

impl Inbound for Service {
    fn publish(&self, link: &LinkHandle, p: Publish) {
        if self.stopping.is_cancelled() {
            return;
        }
        if let Some(level) = p.topic.strip_prefix(self.call_prefix.as_bytes()) {
            let method = method_of(level);
            self.on_request(link, method, p);
        } else if let Some(cid) = p.topic.strip_prefix(self.stream_prefix.as_bytes()) {
            let cid = std::str::from_utf8(cid)
                .ok()
                .and_then(|c| c.parse::<u64>().ok());
            if let Some(cid) = cid {
                self.on_frame(cid, &p);
            }
        } else if p.topic == self.cancel_topic.as_bytes() {
            self.on_cancel(&p);
        }
    }

    fn connection(&self, up: bool, why: &str) {
        if up {
            tracing::info!("mqtt server: back on the broker ({why})");
        } else {
            tracing::warn!("mqtt server: the connection to the broker broke: {why}");
        }
    }
}

fn bad_request(e: WireError) -> Status {
    Status::invalid_argument(format!("malformed request properties: {e}"))
}

fn decode_head(method: Method, props: &[(String, String)]) -> Result<CallHead, Status> {
    if props.is_empty() {
        return Ok(CallHead::new(method));
    }
    Ok(CallHead {
        method,
        metadata: wire::get_metadata(props).map_err(bad_request)?,
        deadline: wire::get_timeout(props)
            .map_err(bad_request)?
            .map(|t| Instant::now() + t),
        peer_identity: None,
    })
}

/// A unary answer's properties and payload: no properties at all for a plain OK.
fn unary_reply(o: UnaryOutcome) -> (Props, Bytes) {
    if let Some(r) = &o.response
        && o.status.is_ok()
        && o.status.message().is_empty()
        && o.status.metadata().is_empty()
        && o.headers.is_empty()
        && r.received_messages == 0
        && r.received_bytes == 0
    {
        // The fast path: nothing to say beyond the payload.
        return (
            Props::new(),
            o.response.map(|r| r.payload).unwrap_or_default(),
        );
    }
    let mut p = Props::new();
    wire::put_metadata(&mut p, &o.headers);
    wire::put_status(&mut p, &o.status);
    let payload = match o.response {
        Some(r) if o.status.is_ok() => {
            wire::put_response(&mut p, &r);
            r.payload
        }
        _ => Bytes::new(),
    };
    (p, payload)
}

fn unary_msg(reply: &ReplyTo, o: UnaryOutcome, qos: QoS) -> Out {
    let (props, payload) = unary_reply(o);
    reply.out(qos, payload, props)
}

/// The bare status sent instead of an answer the broker would refuse.
fn refused(reply: &ReplyTo, e: PublishError, qos: QoS) -> Out {
    let s = publish_status("response", e);
    unary_msg(
        reply,
        UnaryOutcome::failed(Status::new(s.code(), s.message())),
        qos,
    )
}

/// A `status` frame: the final status of a stream, `sent` messages having been sent. A
/// `shutdown` frame says so instead of counting (messages may be in flight).
fn status_frame(reply: &ReplyTo, status: &Status, sent: u64, shutdown: bool, qos: QoS) -> Out {
    let mut p = wire::frame(Frame::Status);
    wire::put_status(&mut p, status);
    if !shutdown {
        wire::put_u64(&mut p, wire::SEQ, sent);
    }
    reply.out(qos, Bytes::new(), p)
}

/// Hands the handler a final item (a failure) and closes its request channel.
fn deliver_last(entry: &mut StreamEntry, item: Result<EchoRequest, Status>) {
    if let Some(tx) = entry.tx.take() {
        // The channel keeps one slot free for exactly this.
        let _ = tx.try_send(item);
    }
}

impl Service {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        lock(&self.calls)
    }

    /// The service's shared subscription: requests and `open`s, `$share/G/P/call/+`.
    fn call_filter(&self) -> String {
        format!("$share/{SHARE_GROUP}/{}+", self.call_prefix)
    }

    /// A topic of this server's own, for [`Link::barrier`].
    fn barrier_topic(&self) -> String {
        format!("{}barrier", self.stream_prefix)
    }

    /// A request or `open`, on the polling task.
    fn on_request(&self, link: &LinkHandle, method: Method, p: Publish) {
        let Some(props) = p.properties.as_ref() else {
            tracing::debug!("mqtt server: request without response topic ignored");
            return;
        };
        let Some(topic) = props.response_topic.clone() else {
            tracing::debug!("mqtt server: request without response topic ignored");
            return;
        };
        let reply = ReplyTo {
            topic,
            correlation: props.correlation_data.clone(),
        };
        match wire::frame_of(&props.user_properties) {
            Ok(None) => self.unary(link, method, reply, p),
            Ok(Some(Frame::Open)) => self.open(link, method, reply, &p),
            Ok(Some(f)) => {
                let status = Status::invalid_argument(format!(
                    "frame {} sent to the service topic (only requests and open go there)",
                    f.as_str()
                ));
                let _ = link.publish_now(status_frame(&reply, &status, 0, false, self.qos));
            }
            Err(e) => self.answer_now(link, &reply, UnaryOutcome::failed(bad_request(e))),
        }
    }

    /// Publishes a unary answer from the polling task; one the broker would refuse becomes a
    /// `RESOURCE_EXHAUSTED` status, so the caller is not left waiting.
    fn answer_now(&self, link: &LinkHandle, reply: &ReplyTo, outcome: UnaryOutcome) {
        if let Err(e) = link.publish_now(unary_msg(reply, outcome, self.qos)) {
            let _ = link.publish_now(refused(reply, e, self.qos));
        }
    }

    fn unary(&self, link: &LinkHandle, method: Method, reply: ReplyTo, p: Publish) {
        let props = p
            .properties
            .as_ref()
            .map_or(&[][..], |pp| pp.user_properties.as_slice());
        let decoded = decode_head(method, props).and_then(|head| {
            let directives = if props.is_empty() {
                Default::default()
            } else {
                wire::get_directives(props).map_err(bad_request)?
            };
            Ok((head, directives))
        });
        let (head, directives) = match decoded {
            Ok(d) => d,
            Err(status) => return self.answer_now(link, &reply, UnaryOutcome::failed(status)),
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
            return self.answer_now(link, &reply, UnaryOutcome::failed(status));
        }
        let request = EchoRequest {
            payload: p.payload,
            directives,
        };
        match self.echo.unary_now(&head, request) {
            Ok(outcome) => self.answer_now(link, &reply, outcome),
            Err(request) => {
                let cancel = CancellationToken::new();
                let key = reply.key();
                self.calls()
                    .unary
                    .insert(key.clone(), (reply.clone(), cancel.clone()));
                let echo = self.echo.clone();
                let link = link.clone();
                let qos = self.qos;
                let service = self.stopping.clone();
                let calls = self.calls.clone();
                self.tracker.spawn(async move {
                    let outcome = echo.unary(&head, request, &cancel).await;
                    let mine = lock(&calls).unary.remove(&key).is_some();
                    // Not ours any more: cancelled, or answered by a shutdown.
                    if mine
                        && !cancel.is_cancelled()
                        && !service.is_cancelled()
                        && let Err(e) = link.publish(unary_msg(&reply, outcome, qos)).await
                    {
                        let _ = link.publish(refused(&reply, e, qos)).await;
                    }
                });
            }
        }
    }

    fn open(&self, link: &LinkHandle, method: Method, reply: ReplyTo, p: &Publish) {
        let props = p
            .properties
            .as_ref()
            .map_or(&[][..], |pp| pp.user_properties.as_slice());
        let head = match decode_head(method, props) {
            Ok(h) => h,
            Err(status) => {
                let _ = link.publish_now(status_frame(&reply, &status, 0, false, self.qos));
                return;
            }
        };
        let peer_window = wire::get_u64(props, wire::WINDOW)
            .ok()
            .flatten()
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
        let mut accept = wire::frame(Frame::Accept);
        wire::put_u64(&mut accept, wire::WINDOW, window);
        let mut accept = reply.out(self.qos, Bytes::new(), accept);
        accept.properties.response_topic = Some(format!("{}{cid}", self.stream_prefix));
        let echo = self.echo.clone();
        let link = link.clone();
        let qos = self.qos;
        let calls = self.calls.clone();
        self.tracker.spawn(async move {
            // The accept goes out from this task, before anything else of the call, so the
            // client sees it first whatever rumqttc's queue holds.
            if link.publish(accept).await.is_err() {
                cancel.cancel();
            }
            let mut call = MqttServerCall {
                link: link.clone(),
                reply,
                qos,
                rx,
                credit,
                grants: Grants::new(window),
                sent: 0,
            };
            let status = echo.handle(&head, &mut call, &cancel).await;
            if !cancel.is_cancelled() {
                let end = status_frame(&call.reply, &status, call.sent, false, qos);
                if let Err(e) = link.publish(end).await {
                    // Too large for the broker (trailing metadata): say so in a bare status.
                    let s = publish_status("status", e);
                    let bare = Status::new(s.code(), s.message());
                    let _ = link
                        .publish(status_frame(&call.reply, &bare, call.sent, false, qos))
                        .await;
                }
            }
            lock(&calls).streams.remove(&cid);
        });
    }

    /// Routes a client frame to its call.
    fn on_frame(&self, cid: u64, p: &Publish) {
        let props = p
            .properties
            .as_ref()
            .map_or(&[][..], |pp| pp.user_properties.as_slice());
        let mut calls = self.calls();
        // A call that already ended: late frames are moot.
        let Some(entry) = calls.streams.get_mut(&cid) else {
            return;
        };
        match wire::frame_of(props) {
            Ok(Some(Frame::Msg)) => {
                let Some(tx) = entry.tx.clone() else {
                    deliver_last(
                        entry,
                        Err(Status::invalid_argument("message after half-close")),
                    );
                    return;
                };
                let item = match wire::get_required(props, wire::SEQ) {
                    Err(e) => Err(bad_request(e)),
                    Ok(n) if n != entry.next_seq => Err(Status::new(
                        Code::DataLoss,
                        format!(
                            "stream message {} never arrived (got message {n} next)",
                            entry.next_seq
                        ),
                    )),
                    Ok(_) => wire::get_directives(props)
                        .map(|directives| EchoRequest {
                            payload: p.payload.clone(),
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
                match wire::get_required(props, wire::SEQ) {
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
                if let Ok(Some(acked)) = wire::get_u64(props, wire::ACK) {
                    entry.credit.grant(acked);
                }
            }
            Ok(_) => {}
            Err(e) => deliver_last(entry, Err(bad_request(e))),
        }
    }

    fn on_cancel(&self, p: &Publish) {
        let Some(props) = p.properties.as_ref() else {
            return;
        };
        let Some(topic) = props.response_topic.clone() else {
            return;
        };
        let key = ReplyTo {
            topic,
            correlation: props.correlation_data.clone(),
        }
        .key();
        if let Some((_, token)) = self.calls().unary.remove(&key) {
            token.cancel();
        }
    }
}

/// The server side of one stream call.
struct MqttServerCall {
    link: LinkHandle,
    /// The client's topic and correlation data for this call.
    reply: ReplyTo,
    qos: QoS,
    rx: mpsc::Receiver<Result<EchoRequest, Status>>,
    credit: Arc<Credit>,
    grants: Grants,
    sent: u64,
}

impl ServerCall for MqttServerCall {
    async fn recv(&mut self) -> Result<Option<EchoRequest>, Status> {
        let item = self.rx.recv().await.transpose()?;
        if item.is_some()
            && let Some(acked) = self.grants.consumed()
        {
            let mut p = wire::frame(Frame::Credit);
            wire::put_u64(&mut p, wire::ACK, acked);
            // A lost credit frame only slows the client down until the call ends. The frame
            // goes to the client's reply topic: it routes by correlation data.
            let _ = self
                .link
                .publish(self.reply.out(self.qos, Bytes::new(), p))
                .await;
        }
        Ok(item)
    }

    async fn send_headers(&mut self, headers: Metadata) -> Result<(), Status> {
        let mut p = wire::frame(Frame::Headers);
        wire::put_metadata(&mut p, &headers);
        self.link
            .publish(self.reply.out(self.qos, Bytes::new(), p))
            .await
            .map_err(|e| publish_status("headers", e))
    }

    async fn send(&mut self, response: EchoResponse) -> Result<(), Status> {
        let seq = self.sent + 1;
        if !self.credit.acquire(seq).await {
            return Err(Status::cancelled("client went away"));
        }
        let mut p = wire::frame(Frame::Msg);
        wire::put_u64(&mut p, wire::SEQ, seq);
        wire::put_response(&mut p, &response);
        self.link
            .publish(self.reply.out(self.qos, response.payload, p))
            .await
            .map_err(|e| publish_status("response message", e))?;
        self.sent = seq;
        Ok(())
    }
}
