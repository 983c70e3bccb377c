//! The `mqtt` server: attaches to a broker (or starts an embedded one), joins the service's
//! shared subscription on `P/call/+`, and feeds the broker protocol's server ([`Service`]) what
//! arrives. Every message reaches it on its connection's polling task, which answers unary
//! requests that need no waiting inline (published with `try_publish`: no task, no await) and
//! hands everything else to a task per call.
//!
//! A drain unsubscribes from the service's shared subscription first (waiting for the
//! UNSUBACK), lets the calls already received run to their end — cancels and stream frames
//! still arrive — and then stops as `shutdown` does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use wirebench_brokerrpc::headers::method_of;
use wirebench_brokerrpc::server::{Inline, ServerLink, Service};
use wirebench_brokerrpc::{Endpoint, Target};
use wirebench_core::drain::{DrainReport, Grace};
use wirebench_core::echo::Echo;
use wirebench_core::status::Status;
use wirebench_core::transport::{DEFAULT_MAX_MESSAGE_SIZE, Server, TransportError};

use super::client::{announced_max, publish_status};
use super::embedded::EmbeddedBroker;
use super::link::{Inbound, Link, LinkConfig, LinkHandle, Out, PublishError};
use super::{SCHEME, SHARE_GROUP, cancel_topic, fresh_id};
use wirebench_brokerrpc::headers::PropertyList;

/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `mqtt` server: one member of its service's shared subscription.
#[derive(Debug)]
pub struct MqttServer {
    endpoint: Endpoint,
    link: Link,
    inbound: Arc<ServerInbound>,
    /// The embedded broker this server started, stopped with it.
    broker: Option<EmbeddedBroker>,
}

/// Where a call's answers go: the client's response topic and correlation data.
#[derive(Clone, Debug)]
pub struct ReplyTo {
    topic: String,
    correlation: Option<Bytes>,
}

impl ReplyTo {
    fn out(&self, qos: QoS, payload: Bytes, user: PropertyList) -> Out {
        Out {
            topic: self.topic.clone(),
            qos,
            payload,
            properties: PublishProperties {
                correlation_data: self.correlation.clone(),
                user_properties: user.0,
                ..PublishProperties::default()
            },
        }
    }
}

/// How the protocol's server answers over MQTT.
#[derive(Clone, Debug)]
pub struct MqttServerLink {
    link: LinkHandle,
    qos: QoS,
    /// `P/stream/<server id>/`: a stream's client frames arrive on `<this><call id>`.
    stream_prefix: Arc<str>,
}

impl MqttServerLink {
    fn out(&self, a: Inline<MqttServerLink>) -> Out {
        a.to.out(self.qos, a.payload, a.headers.unwrap_or_default())
    }

    /// Publishes an answer from the polling task, without waiting; one the broker would refuse
    /// becomes a `RESOURCE_EXHAUSTED` status, so the caller is not left waiting.
    fn answer_now(&self, a: Inline<MqttServerLink>) {
        let to = a.to.clone();
        if let Err(e) = self.link.publish_now(self.out(a))
            && let Some(r) = Inline::refused(to, &publish_status("response", e))
        {
            let _ = self.link.publish_now(self.out(r));
        }
    }
}

impl ServerLink for MqttServerLink {
    type Headers = PropertyList;
    type ReplyTo = ReplyTo;
    /// The response topic and the correlation data, joined by a NUL.
    type CancelKey = Vec<u8>;

    fn cancel_key(reply: &ReplyTo) -> Vec<u8> {
        let c = reply.correlation.as_deref().unwrap_or_default();
        let mut k = Vec::with_capacity(reply.topic.len() + 1 + c.len());
        k.extend_from_slice(reply.topic.as_bytes());
        k.push(0);
        k.extend_from_slice(c);
        k
    }

    async fn reply(
        &self,
        to: &ReplyTo,
        headers: Option<PropertyList>,
        payload: Bytes,
    ) -> Result<(), Status> {
        self.link
            .publish(to.out(self.qos, payload, headers.unwrap_or_default()))
            .await
            .map_err(|e| publish_status("response", e))
    }

    async fn accept(&self, to: &ReplyTo, cid: u64, headers: PropertyList) -> Result<(), Status> {
        let mut out = to.out(self.qos, Bytes::new(), headers);
        out.properties.response_topic = Some(format!("{}{cid}", self.stream_prefix));
        self.link
            .publish(out)
            .await
            .map_err(|e: PublishError| publish_status("accept frame", e))
    }
}

/// What the link's polling task hands incoming messages to: the service, by topic.
#[derive(Debug)]
struct ServerInbound {
    service: Arc<Service<MqttServerLink>>,
    link: MqttServerLink,
    /// `P/call/`: requests arrive on `P/call/<Method>`.
    call_prefix: String,
    cancel_topic: String,
}

impl ServerInbound {
    /// The service's shared subscription: requests and `open`s, `$share/G/P/call/+`.
    fn call_filter(&self) -> String {
        format!("$share/{SHARE_GROUP}/{}+", self.call_prefix)
    }

    /// A topic of this server's own, for [`Link::barrier`].
    fn barrier_topic(&self) -> String {
        format!("{}barrier", self.link.stream_prefix)
    }
}

fn reply_of(props: &PublishProperties) -> Option<ReplyTo> {
    Some(ReplyTo {
        topic: props.response_topic.clone()?,
        correlation: props.correlation_data.clone(),
    })
}

impl Inbound for ServerInbound {
    fn publish(&self, _link: &LinkHandle, p: Publish) {
        if self.service.is_stopping() {
            return;
        }
        let props = p.properties.unwrap_or_default();
        if let Some(level) = p.topic.strip_prefix(self.call_prefix.as_bytes()) {
            let Some(reply) = reply_of(&props) else {
                tracing::debug!("mqtt server: request without response topic ignored");
                return;
            };
            let headers = PropertyList(props.user_properties);
            if let Some(a) =
                self.service
                    .on_request(method_of(level), reply, Some(&headers), p.payload)
            {
                self.link.answer_now(a);
            }
        } else if let Some(cid) = p.topic.strip_prefix(self.link.stream_prefix.as_bytes()) {
            let cid = std::str::from_utf8(cid)
                .ok()
                .and_then(|c| c.parse::<u64>().ok());
            if let Some(cid) = cid {
                let headers = PropertyList(props.user_properties);
                self.service.on_frame(cid, Some(&headers), p.payload);
            }
        } else if p.topic == self.cancel_topic.as_bytes()
            && let Some(reply) = reply_of(&props)
        {
            self.service.on_cancel(&MqttServerLink::cancel_key(&reply));
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

impl MqttServer {
    /// Serves `echo` as described by `target`, publishing at `qos`.
    pub(crate) async fn start(
        target: Target,
        qos: QoS,
        echo: Arc<Echo>,
    ) -> Result<MqttServer, TransportError> {
        let (endpoint, broker) = match target {
            Target::Attach(e) => (e, None),
            Target::Private(addr) => {
                let b = EmbeddedBroker::start(addr).await?;
                let a = b.addr();
                let e = Endpoint {
                    scheme: SCHEME,
                    host: a.ip().to_string(),
                    port: a.port(),
                    prefix: None,
                };
                (e, Some(b))
            }
        };
        let prefix = endpoint
            .prefix
            .clone()
            .unwrap_or_else(|| format!("wb/echo/{}", fresh_id()));
        let server_id = fresh_id();
        let max_message_size = echo.config().max_message_size;
        let (link, inbound) = Link::connect(
            &LinkConfig {
                keepalive: None,
                host: endpoint.host.clone(),
                port: endpoint.port,
                client_id: format!("wb-s-{server_id}"),
                max_incoming: announced_max(max_message_size.max(DEFAULT_MAX_MESSAGE_SIZE)),
                connect_timeout: CONNECT_TIMEOUT,
            },
            |handle| {
                let link = MqttServerLink {
                    link: handle.clone(),
                    qos,
                    stream_prefix: Arc::from(format!("{prefix}/stream/{server_id}/")),
                };
                Arc::new(ServerInbound {
                    service: Service::new(echo, link.clone()),
                    link,
                    call_prefix: format!("{prefix}/call/"),
                    cancel_topic: cancel_topic(&prefix),
                })
            },
        )
        .await?;
        link.subscribe(&inbound.cancel_topic, qos).await?;
        link.subscribe(&format!("{}+", inbound.link.stream_prefix), qos)
            .await?;
        // Last: once requests can arrive, everything they lead to is in place.
        link.subscribe(&inbound.call_filter(), qos).await?;
        Ok(MqttServer {
            endpoint: Endpoint {
                prefix: Some(prefix),
                ..endpoint
            },
            link,
            inbound,
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
        let tracker = self.inbound.service.tracker().clone();
        let g = Grace::begin(grace, &tracker);
        // Once the broker acknowledged the UNSUBSCRIBE it routes no request here (the shared
        // subscription's other members get them); those it sent before have arrived and are
        // answered or running. Cancels and stream frames still come: their subscriptions stay.
        match g
            .within(self.link.unsubscribe(&self.inbound.call_filter()))
            .await
        {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::warn!("mqtt server: draining: {e}"),
            None => tracing::warn!("mqtt server: draining: no UNSUBACK within the grace"),
        }
        g.settle(&tracker).await;
        let report = g.report(&tracker);
        // The answers just published reach the broker before the DISCONNECT anyway (one
        // connection's packets are handled in order); the barrier makes sure the broker has
        // taken them before an embedded broker is stopped with us.
        if self.broker.is_some() {
            let _ = g
                .within(self.link.barrier(&self.inbound.barrier_topic()))
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
        let service = &self.inbound.service;
        for a in service.stop() {
            let link = &self.inbound.link;
            let _ = link.link.publish(link.out(a)).await;
        }
        service.tracker().wait().await;
        self.link.close().await;
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}
