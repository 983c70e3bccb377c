//! The `mqtt` client: one MQTT connection per [`MqttConnection`], one subscription to its own
//! reply topic `R` through which every reply and stream frame arrives, routed to its call by
//! correlation data (the call id) — no subscription per call.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use tokio::sync::{mpsc, oneshot};

use super::link::{Inbound, Link, LinkConfig, LinkHandle, Out, PROTOCOL_MAX_PACKET, PublishError};
use super::wire::{self, Frame, Props};
use super::{Endpoint, call_topic, cancel_topic, fresh_id};
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
/// Room announced beyond the client's message limit, for properties and MQTT headers.
const HEADROOM: u32 = 64 << 10;
/// The smallest maximum packet size a connection announces.
const MIN_ANNOUNCED: u32 = 16 << 20;

enum Slot {
    /// A unary call: its reply once it arrived, and the waiting caller.
    Unary {
        reply: Option<Publish>,
        waker: Option<Waker>,
    },
    Stream(StreamSlot),
}

struct StreamSlot {
    /// Completes `open()`: the server's topic for the call, or why there is none.
    accept: Option<oneshot::Sender<Accepted>>,
    events: mpsc::Sender<CallEvent>,
    credit: Arc<Credit>,
    /// The sequence number the next `msg` frame must carry.
    next_seq: u64,
    /// The server's topic for this call, once accepted.
    to: Option<String>,
}

enum Accepted {
    /// The call runs; the server's topic for our frames, and its window.
    Running(String, u64),
    /// The call ended before it was accepted (its status is in the events).
    Ended,
}

#[derive(Default)]
struct Table {
    calls: HashMap<u64, Slot>,
    /// Set once the connection is closed: the status every new call fails with.
    dead: Option<Status>,
}

/// Calls in flight on one connection; the polling task routes replies to them.
pub(super) struct Calls {
    table: Mutex<Table>,
    max_message_size: usize,
    qos: QoS,
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
                    let _ = s.events.try_send(CallEvent::End(status.clone()));
                    if let Some(a) = s.accept {
                        let _ = a.send(Accepted::Ended);
                    }
                }
            }
        }
    }

    fn gone_status(&self) -> Status {
        self.lock().dead.clone().unwrap_or_else(|| {
            Status::unavailable("the connection to the MQTT broker was lost during the call")
        })
    }
}

impl Inbound for Calls {
    fn publish(&self, link: &LinkHandle, p: Publish) {
        let Some(id) = p
            .properties
            .as_ref()
            .and_then(|pp| pp.correlation_data.as_deref())
            .and_then(call_id)
        else {
            return;
        };
        if let Some(cancel) = self.route(id, p) {
            // Best effort: a lost cancel only lets the server run to its deadline.
            let _ = link.publish_now(cancel);
        }
    }

    fn connection(&self, up: bool, why: &str) {
        if !up {
            self.fail_all(
                &Status::unavailable(format!("the connection to the MQTT broker was lost: {why}")),
                false,
            );
        }
    }
}

fn call_id(correlation: &[u8]) -> Option<u64> {
    correlation.try_into().ok().map(u64::from_be_bytes)
}

fn correlation(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

fn user_props(p: &Publish) -> &[(String, String)] {
    p.properties
        .as_ref()
        .map_or(&[][..], |pp| pp.user_properties.as_slice())
}

pub(super) fn malformed(e: wire::WireError) -> Status {
    Status::internal(format!("the server sent a malformed reply: {e}"))
}

/// The status of a message that did not go out.
pub(super) fn publish_status(what: &str, e: PublishError) -> Status {
    match e {
        PublishError::TooLarge { size, max } => Status::resource_exhausted(format!(
            "{what} of {size} bytes (with its MQTT header and properties) exceeds the broker's \
             maximum packet size of {max} bytes"
        )),
        PublishError::Closed => Status::unavailable("the MQTT connection is closed"),
    }
}

fn too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "response message of {len} bytes exceeds the client's limit of {max} bytes"
    ))
}

impl Calls {
    /// Delivers `p` to call `id`; returns a message to publish when the call must be
    /// cancelled at the server (a broken sequence, an oversized response).
    fn route(&self, id: u64, p: Publish) -> Option<Out> {
        let mut t = self.lock();
        let slot = t.calls.get_mut(&id)?;
        let s = match slot {
            Slot::Unary { reply, waker } => {
                if reply.is_none() {
                    *reply = Some(p);
                    if let Some(w) = waker.take() {
                        w.wake();
                    }
                }
                return None;
            }
            Slot::Stream(s) => s,
        };
        let props = user_props(&p);
        let frame = match wire::frame_of(props) {
            Ok(Some(f)) => f,
            Ok(None) => {
                end_stream(&mut t, id, malformed(wire::WireError::Missing(wire::FRAME)));
                return None;
            }
            Err(e) => {
                end_stream(&mut t, id, malformed(e));
                return None;
            }
        };
        match frame {
            Frame::Accept => {
                let window = wire::get_u64(props, wire::WINDOW)
                    .ok()
                    .flatten()
                    .unwrap_or(DEFAULT_WINDOW);
                let to = p
                    .properties
                    .as_ref()
                    .and_then(|pp| pp.response_topic.clone());
                match (s.accept.take(), to) {
                    (Some(a), Some(to)) => {
                        s.to = Some(to.clone());
                        let _ = a.send(Accepted::Running(to, window));
                    }
                    (_, None) => {
                        end_stream(
                            &mut t,
                            id,
                            Status::internal(
                                "the server accepted the call without a response topic",
                            ),
                        );
                    }
                    (None, Some(_)) => {}
                }
                None
            }
            Frame::Headers => {
                let ev = match wire::get_metadata(props) {
                    Ok(md) => CallEvent::Headers(md),
                    Err(e) => {
                        end_stream(&mut t, id, malformed(e));
                        return None;
                    }
                };
                let _ = s.events.try_send(ev);
                None
            }
            Frame::Msg => {
                let expected = s.next_seq;
                let failure = match wire::get_required(props, wire::SEQ) {
                    Err(e) => Some(malformed(e)),
                    Ok(n) if n != expected => Some(Status::new(
                        Code::DataLoss,
                        format!("stream message {expected} never arrived (got message {n} next)"),
                    )),
                    Ok(_) if p.payload.len() > self.max_message_size => {
                        Some(too_large(p.payload.len(), self.max_message_size))
                    }
                    Ok(_) => None,
                };
                if let Some(status) = failure {
                    return end_stream(&mut t, id, status).map(|to| cancel_frame(to, self.qos));
                }
                s.next_seq += 1;
                match wire::get_response(props, p.payload.clone()) {
                    Ok(r) => {
                        if s.events.try_send(CallEvent::Message(r)).is_err() {
                            // The server ignored our window: nothing more can be buffered.
                            let status = Status::resource_exhausted(
                                "the server sent past the stream's flow-control window",
                            );
                            return end_stream(&mut t, id, status)
                                .map(|to| cancel_frame(to, self.qos));
                        }
                    }
                    Err(e) => {
                        end_stream(&mut t, id, malformed(e));
                    }
                }
                None
            }
            Frame::Status => {
                // A status without a count (a server shutting down) is not checked for loss.
                let status = match (wire::get_status(props), wire::get_u64(props, wire::SEQ)) {
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
                end_stream(&mut t, id, status);
                None
            }
            Frame::Credit => {
                if let Ok(Some(acked)) = wire::get_u64(props, wire::ACK) {
                    s.credit.grant(acked);
                }
                None
            }
            // Client-only frames: a server never sends them; ignore rather than fail the call.
            Frame::Open | Frame::End | Frame::Cancel => None,
        }
    }
}

fn cancel_frame(to: String, qos: QoS) -> Out {
    Out::new(to, qos, Bytes::new(), wire::frame(Frame::Cancel))
}

/// Ends stream `id` with `status`; returns the server's topic for the call, to cancel it
/// there when the failure is ours.
fn end_stream(t: &mut Table, id: u64, status: Status) -> Option<String> {
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

struct Shared {
    link: LinkHandle,
    calls: Arc<Calls>,
    /// `R`: every reply and server frame arrives here.
    reply_topic: String,
    unary_topic: String,
    cancel_topic: String,
    /// `P`.
    prefix: String,
    endpoint: Endpoint,
    next_id: AtomicU64,
    qos: QoS,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("endpoint", &self.endpoint)
            .field("reply_topic", &self.reply_topic)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn register(&self, slot: Slot) -> Result<u64, Status> {
        if !self.link.is_up() {
            return Err(Status::unavailable(format!(
                "not connected to the MQTT broker at {}",
                self.endpoint.url()
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

    /// A message to the service (request or `open`) with our reply topic and call id.
    fn to_service(&self, topic: String, id: u64, payload: Bytes, user: Props) -> Out {
        Out {
            topic,
            qos: self.qos,
            payload,
            properties: PublishProperties {
                response_topic: Some(self.reply_topic.clone()),
                correlation_data: Some(correlation(id)),
                user_properties: user,
                ..PublishProperties::default()
            },
        }
    }

    fn frame_to(&self, to: String, props: Props, payload: Bytes) -> Out {
        Out::new(to, self.qos, payload, props)
    }
}

/// A connection to an `mqtt` service: an MQTT connection to its broker.
pub struct MqttConnection {
    shared: Arc<Shared>,
    link: Link,
}

impl std::fmt::Debug for MqttConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConnection")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for MqttConnection {
    fn drop(&mut self) {
        self.shared
            .calls
            .fail_all(&Status::unavailable("mqtt connection closed"), true);
    }
}

/// The maximum packet size a connection announces for a message limit: generous, since a
/// broker silently drops what exceeds it; the limit itself is enforced on arrival.
pub(super) fn announced_max(max_message_size: usize) -> u32 {
    let wanted = u32::try_from(max_message_size)
        .unwrap_or(u32::MAX)
        .saturating_add(HEADROOM);
    wanted.clamp(MIN_ANNOUNCED, PROTOCOL_MAX_PACKET)
}

impl MqttConnection {
    /// Connects to the service at `endpoint` (`mqtt://HOST:PORT/PREFIX`).
    pub(crate) async fn connect(
        config: &ClientConfig,
        endpoint: Endpoint,
        qos: QoS,
    ) -> Result<MqttConnection, TransportError> {
        let Some(prefix) = endpoint.prefix.clone() else {
            return Err(TransportError::Endpoint {
                endpoint: endpoint.to_string(),
                reason: "an mqtt endpoint names the service's topic prefix: \
                         mqtt://HOST:PORT/PREFIX"
                    .into(),
            });
        };
        let calls = Arc::new(Calls {
            table: Mutex::new(Table::default()),
            max_message_size: config.max_message_size,
            qos,
        });
        let client_id = format!("wb-c-{}", fresh_id());
        let link = Link::connect(
            &LinkConfig {
                keepalive: config.keepalive,
                host: endpoint.host.clone(),
                port: endpoint.port,
                client_id: client_id.clone(),
                max_incoming: announced_max(config.max_message_size),
                connect_timeout: config.connect_timeout,
            },
            calls.clone(),
        )
        .await?;
        let reply_topic = format!("{prefix}/reply/{client_id}");
        link.subscribe(&reply_topic, qos).await?;
        let shared = Arc::new(Shared {
            link: link.handle().clone(),
            calls,
            unary_topic: call_topic(&prefix, Method::Unary),
            cancel_topic: cancel_topic(&prefix),
            prefix,
            reply_topic,
            endpoint,
            next_id: AtomicU64::new(1),
            qos,
        });
        Ok(MqttConnection { shared, link })
    }

    fn poll_unary(
        &self,
        id: u64,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<Publish, Status>> {
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
        match t.calls.remove(&id) {
            Some(Slot::Unary { reply: Some(p), .. }) => Poll::Ready(Ok(p)),
            _ => Poll::Ready(Err(Status::internal("unary slot without reply"))),
        }
    }

    fn decode_unary(&self, p: Publish) -> Result<UnaryReply, Status> {
        let props = user_props(&p);
        let reply = if props.is_empty() {
            UnaryReply {
                headers: Metadata::new(),
                message: EchoResponse::new(p.payload),
                trailers: Metadata::new(),
            }
        } else {
            let mut status = wire::get_status(props).map_err(malformed)?;
            if !status.is_ok() {
                return Err(status);
            }
            UnaryReply {
                headers: wire::get_metadata(props).map_err(malformed)?,
                trailers: status.take_metadata(),
                message: wire::get_response(props, p.payload.clone()).map_err(malformed)?,
            }
        };
        let max = self.shared.calls.max_message_size;
        if reply.message.payload.len() > max {
            return Err(too_large(reply.message.payload.len(), max));
        }
        Ok(reply)
    }
}

/// Request properties; empty for a plain call (the fast path sends none).
fn request_props(
    frame: Option<Frame>,
    options: &CallOptions,
    request: Option<&EchoRequest>,
) -> Props {
    let mut p = match frame {
        Some(f) => wire::frame(f),
        None => Props::new(),
    };
    wire::put_metadata(&mut p, &options.metadata);
    if let Some(t) = options.timeout {
        wire::put_timeout(&mut p, t);
    }
    if let Some(r) = request {
        wire::put_directives(&mut p, &r.directives);
    }
    p
}

/// Cancels a unary call dropped before its reply: the slot goes, and every server of the
/// service hears which call (only the one running it acts).
struct UnaryGuard<'a> {
    shared: &'a Shared,
    id: u64,
    sent: AtomicBool,
    /// The reply arrived (its slot is gone already).
    answered: bool,
}

impl Drop for UnaryGuard<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let removed = self.shared.calls.lock().calls.remove(&self.id).is_some();
        if removed && self.sent.load(Ordering::Relaxed) {
            let cancel = self.shared.to_service(
                self.shared.cancel_topic.clone(),
                self.id,
                Bytes::new(),
                Props::new(),
            );
            // Best effort: a lost cancel only lets the server run to its deadline.
            let _ = self.shared.link.publish_now(cancel);
        }
    }
}

impl Connection for MqttConnection {
    type Sender = MqttSender;
    type Receiver = MqttReceiver;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        let deadline = options.deadline();
        let props = request_props(None, options, Some(&request));
        let id = self.shared.register(Slot::Unary {
            reply: None,
            waker: None,
        })?;
        let out =
            self.shared
                .to_service(self.shared.unary_topic.clone(), id, request.payload, props);
        let mut guard = UnaryGuard {
            shared: &self.shared,
            id,
            sent: AtomicBool::new(false),
            answered: false,
        };
        let answer = until_deadline(deadline, async {
            self.shared
                .link
                .publish(out)
                .await
                .map_err(|e| publish_status("request message", e))?;
            guard.sent.store(true, Ordering::Relaxed);
            poll_fn(|cx| self.poll_unary(id, cx)).await
        })
        .await;
        guard.answered = answer.is_ok();
        // A call that failed or expired is cancelled at the server by the guard.
        drop(guard);
        self.decode_unary(answer?)
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(MqttSender, MqttReceiver), Status> {
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
        let mut props = request_props(Some(Frame::Open), options, None);
        wire::put_u64(&mut props, wire::WINDOW, window);
        let topic = call_topic(&self.shared.prefix, method);
        let open = self.shared.to_service(topic, id, Bytes::new(), props);
        let accepted = until_deadline(deadline, async {
            self.shared
                .link
                .publish(open)
                .await
                .map_err(|e| publish_status("open frame", e))?;
            acc_rx.await.map_err(|_| self.shared.calls.gone_status())
        })
        .await;
        let to = match accepted {
            Ok(Accepted::Running(to, peer_window)) => {
                credit.set_window(peer_window);
                Some(to)
            }
            Ok(Accepted::Ended) => None,
            Err(status) => {
                // Not accepted in time (or the connection broke): nothing to cancel yet.
                self.shared.calls.lock().calls.remove(&id);
                return Err(status);
            }
        };
        let sender = MqttSender {
            shared: self.shared.clone(),
            to: to.clone(),
            seq: 0,
            credit: credit.clone(),
            closed: false,
        };
        let cancel = MqttCancel {
            shared: self.shared.clone(),
            id,
            to: to.clone(),
            credit,
        };
        let receiver = MqttReceiver {
            inner: EventReceiver::new(rx, deadline, cancel),
            grants: Grants::new(window),
            shared: self.shared.clone(),
            to,
        };
        Ok((sender, receiver))
    }

    async fn close(&self) {
        self.shared.calls.fail_all(
            &Status::unavailable("mqtt connection closed by the client"),
            true,
        );
        self.link.close().await;
    }
}

/// Cancels an `mqtt` stream: a `cancel` frame to the server's topic for the call.
pub struct MqttCancel {
    shared: Arc<Shared>,
    id: u64,
    to: Option<String>,
    credit: Arc<Credit>,
}

impl std::fmt::Debug for MqttCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MqttCancel({})", self.id)
    }
}

impl CancelSignal for MqttCancel {
    fn cancel(&mut self) {
        let live = self.shared.calls.lock().calls.remove(&self.id).is_some();
        self.credit.close();
        if live && let Some(to) = self.to.take() {
            // Best effort: a lost cancel only lets the server run to its deadline.
            let _ = self
                .shared
                .link
                .publish_now(cancel_frame(to, self.shared.qos));
        }
    }
}

/// The sending half of an `mqtt` stream.
pub struct MqttSender {
    shared: Arc<Shared>,
    /// The server's topic for this call; `None` when the call ended before it ran.
    to: Option<String>,
    seq: u64,
    credit: Arc<Credit>,
    closed: bool,
}

impl std::fmt::Debug for MqttSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSender")
            .field("to", &self.to)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn end_frame(shared: &Shared, to: String, sent: u64) -> Out {
    let mut p = wire::frame(Frame::End);
    wire::put_u64(&mut p, wire::SEQ, sent);
    shared.frame_to(to, p, Bytes::new())
}

impl CallSender for MqttSender {
    async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
        let Some(to) = self.to.clone().filter(|_| !self.closed) else {
            return Err(call_ended());
        };
        let seq = self.seq + 1;
        if !self.credit.acquire(seq).await {
            return Err(call_ended());
        }
        let mut p = wire::frame(Frame::Msg);
        wire::put_u64(&mut p, wire::SEQ, seq);
        wire::put_directives(&mut p, &request.directives);
        self.shared
            .link
            .publish(self.shared.frame_to(to, p, request.payload))
            .await
            .map_err(|e| publish_status("request message", e))?;
        self.seq = seq;
        Ok(())
    }

    async fn close_send(&mut self) -> Result<(), Status> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        match &self.to {
            Some(to) if !self.credit.is_closed() => self
                .shared
                .link
                .publish(end_frame(&self.shared, to.clone(), self.seq))
                .await
                .map_err(|e| publish_status("end frame", e)),
            _ => Ok(()),
        }
    }
}

impl Drop for MqttSender {
    fn drop(&mut self) {
        // Dropping the sender half-closes, as the contract says.
        if !self.closed
            && !self.credit.is_closed()
            && let Some(to) = self.to.take()
        {
            let _ = self
                .shared
                .link
                .publish_now(end_frame(&self.shared, to, self.seq));
        }
    }
}

/// The receiving half of an `mqtt` stream: the shared [`EventReceiver`], plus credit sent back
/// to the server as messages are consumed.
#[derive(Debug)]
pub struct MqttReceiver {
    inner: EventReceiver<MqttCancel>,
    grants: Grants,
    shared: Arc<Shared>,
    to: Option<String>,
}

impl CallReceiver for MqttReceiver {
    async fn headers(&mut self) -> Result<Metadata, Status> {
        self.inner.headers().await
    }

    async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
        let r = self.inner.recv().await;
        if let Ok(Some(_)) = &r
            && let Some(acked) = self.grants.consumed()
            && let Some(to) = &self.to
        {
            let mut p = wire::frame(Frame::Credit);
            wire::put_u64(&mut p, wire::ACK, acked);
            // A lost credit frame only slows the server down until the call ends.
            let _ = self
                .shared
                .link
                .publish(self.shared.frame_to(to.clone(), p, Bytes::new()))
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
    fn call_ids_round_trip_through_correlation_data() {
        for id in [0, 1, 255, 1 << 40, u64::MAX] {
            assert_eq!(call_id(&correlation(id)), Some(id));
        }
        assert_eq!(call_id(b"short"), None);
        assert_eq!(call_id(&[0u8; 9]), None);
    }

    #[test]
    fn announced_packet_size_is_generous_and_bounded() {
        assert_eq!(announced_max(64 << 10), MIN_ANNOUNCED);
        assert_eq!(announced_max(32 << 20), (32 << 20) + HEADROOM);
        assert_eq!(announced_max(usize::MAX), PROTOCOL_MAX_PACKET);
    }
}
