//! The `nats` server: attaches to a broker (or starts a private one), joins the service's queue
//! group on `<prefix>.*`, and feeds the broker protocol's server ([`Service`]) what arrives:
//! unary requests that need no waiting are answered inline by the request loop (no task), the
//! rest get a task each.
//!
//! Two loops: the request loop reads only the service subjects, so the hot path polls one
//! subscription per message; the control loop takes stream frames and unary cancellations.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Subject};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wirebench_brokerrpc::headers::method_of;
use wirebench_brokerrpc::server::{Inline, ServerLink, Service};
use wirebench_brokerrpc::{Endpoint, Target};
use wirebench_core::drain::{DrainReport, Grace};
use wirebench_core::echo::{Echo, UnaryOutcome};
use wirebench_core::status::Status;
use wirebench_core::transport::{ClientConfig, Server, TransportError};

use super::broker::NatsProcess;
use super::client::{connect_client, outbound, publish};
use super::wire::NatsHeaders;
use super::{QUEUE_GROUP, SCHEME, cancel_subject};

/// How long the broker may take to confirm a starting server's subscriptions.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown step may wait on the broker (which may be gone).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// A running `nats` server: one member of its service's queue group. Boxed inside: servers of
/// every transport share one enum, and a broker client (plus maybe a broker) is large.
#[derive(Debug)]
pub struct NatsServer(Box<Running>);

#[derive(Debug)]
struct Running {
    endpoint: Endpoint,
    client: Client,
    service: Arc<Service<NatsServerLink>>,
    shutdown: CancellationToken,
    /// Cancelled on drain (and with `shutdown`, its parent): the request loop drains the
    /// service subscription.
    draining: CancellationToken,
    requests: JoinHandle<()>,
    control: JoinHandle<()>,
    /// The private broker this server started, stopped with it.
    broker: Option<NatsProcess>,
}

/// How the protocol's server answers over NATS.
#[derive(Clone, Debug)]
pub struct NatsServerLink {
    client: Client,
    /// `<server inbox>.`: a stream's client frames arrive on `<server inbox>.<call id>`.
    inbox_prefix: Arc<str>,
}

impl ServerLink for NatsServerLink {
    type Headers = NatsHeaders;
    type ReplyTo = Subject;
    /// A unary cancellation's payload is the call's reply subject.
    type CancelKey = String;

    fn cancel_key(reply: &Subject) -> String {
        reply.to_string()
    }

    async fn reply(
        &self,
        to: &Subject,
        headers: Option<NatsHeaders>,
        payload: Bytes,
    ) -> Result<(), Status> {
        publish(&self.client, outbound(to.clone(), None, headers, payload)).await
    }

    async fn accept(&self, to: &Subject, cid: u64, headers: NatsHeaders) -> Result<(), Status> {
        let own = Subject::from(format!("{}{cid}", self.inbox_prefix));
        publish(
            &self.client,
            outbound(to.clone(), Some(own), Some(headers), Bytes::new()),
        )
        .await
    }
}

/// Publishes an inline answer; one the broker refuses for its size becomes a bare
/// `RESOURCE_EXHAUSTED` status.
async fn send_inline(link: &NatsServerLink, a: Inline<NatsServerLink>) {
    if let Err(e) = link.reply(&a.to, a.headers, a.payload).await
        && let Some(r) = Inline::<NatsServerLink>::refused(a.to, &e)
    {
        let _ = link.reply(&r.to, r.headers, r.payload).await;
    }
}

impl NatsServer {
    /// Serves `echo` as described by `target`.
    pub(crate) async fn start(
        target: Target,
        echo: Arc<Echo>,
    ) -> Result<NatsServer, TransportError> {
        let (url, prefix, broker) = match target {
            Target::Attach(e) => (e.url(), e.prefix, None),
            Target::Private(addr) => {
                let p = crate::broker::start(addr).await?;
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
        let link = NatsServerLink {
            client: client.clone(),
            inbox_prefix: Arc::from(format!("{inbox}.")),
        };
        let service = Service::new(echo, link.clone());
        let requests = tokio::spawn(request_loop(
            service.clone(),
            link.clone(),
            format!("{prefix}."),
            requests,
            shutdown.clone(),
            draining.clone(),
        ));
        let control = tokio::spawn(control_loop(
            service.clone(),
            link,
            frames,
            cancels,
            shutdown.clone(),
        ));
        let endpoint = SCHEME.endpoint(&url)?;
        Ok(NatsServer(Box::new(Running {
            endpoint: Endpoint {
                prefix: Some(prefix),
                ..endpoint
            },
            client,
            service,
            shutdown,
            draining,
            requests,
            control,
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
        let tracker = r.service.tracker().clone();
        let g = Grace::begin(grace, &tracker);
        r.draining.cancel();
        // The request loop ends once the broker has taken our UNSUB: no request reaches this
        // server any more (its queue-group peers get them), and those it had sent before are
        // answered or running.
        let requests_done = g.within(&mut r.requests).await.is_some();
        g.settle(&tracker).await;
        let report = g.report(&tracker);
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
        // Handlers were cancelled; each ends promptly unless stuck publishing to a broker that
        // is gone. Bounded like the flush: a dead broker must not hold up a shutdown.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.service.tracker().wait()).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.client.flush()).await;
        drop(self.client);
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}

/// Reads the service subjects: each request or `open` goes to the service, which answers the
/// plain unary path here, inline (one publish, no task).
async fn request_loop(
    service: Arc<Service<NatsServerLink>>,
    link: NatsServerLink,
    method_prefix: String,
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    draining: CancellationToken,
) {
    // Created once: a fresh `cancelled()` per message would register with the token every
    // time. Biased towards requests: while they keep coming, only they are polled.
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
                // UNSUB, then PING: the subscription ends after the requests the broker sent
                // before taking the UNSUB, which are answered as usual meanwhile.
                if let Err(e) = requests.drain().await {
                    tracing::debug!("nats server: draining the service subscription: {e}");
                }
                continue;
            }
        };
        // None: shutting down, drained, or the client closed.
        let Some(msg) = msg else { break };
        let Message {
            subject,
            reply,
            headers,
            payload,
            ..
        } = msg;
        let Some(reply) = reply else {
            tracing::debug!("nats server: request on {subject} without reply subject");
            continue;
        };
        let method = subject
            .strip_prefix(method_prefix.as_str())
            .map_or(wirebench_core::message::Method::Unimplemented, |t| {
                method_of(t.as_bytes())
            });
        let headers = headers.map(NatsHeaders);
        if let Some(a) = service.on_request(method, reply, headers.as_ref(), payload) {
            send_inline(&link, a).await;
        }
    }
    // Requests already delivered to us would be lost to the queue group: refuse them so their
    // callers learn at once (after a completed drain there are none). Only what is buffered:
    // with the broker gone, the subscription would never close. Bounded, so a dead broker
    // cannot hold us here.
    let _ = requests.unsubscribe().await;
    let going = Status::unavailable("server shutting down");
    let refuse = async {
        while let Some(Some(msg)) = tokio::task::unconstrained(requests.next()).now_or_never() {
            if let Some(reply) = msg.reply {
                let a = Inline::<NatsServerLink>::unary(reply, UnaryOutcome::failed(going.clone()));
                let _ = link.reply(&a.to, a.headers, a.payload).await;
            }
        }
    };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, refuse).await;
}

/// Reads the streams' frames and the unary cancellations; at shutdown, tells the clients of
/// the calls still running that the server is going.
async fn control_loop(
    service: Arc<Service<NatsServerLink>>,
    link: NatsServerLink,
    mut frames: async_nats::Subscriber,
    mut cancels: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopping => break,
            Some(msg) = frames.next() => {
                let cid = msg
                    .subject
                    .strip_prefix(link.inbox_prefix.as_ref())
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(cid) = cid {
                    service.on_frame(cid, msg.headers.map(NatsHeaders).as_ref(), msg.payload);
                }
            }
            Some(msg) = cancels.next() => {
                if let Ok(reply) = std::str::from_utf8(&msg.payload) {
                    service.on_cancel(&reply.to_owned());
                }
            }
            else => break,
        }
    }
    // Calls still running learn why they end; their handlers see a cancellation. Bounded:
    // with the broker gone, publishing could wait for a reconnect forever.
    let goodbyes = service.stop();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        for a in goodbyes {
            let _ = link.reply(&a.to, a.headers, a.payload).await;
        }
    })
    .await;
}
