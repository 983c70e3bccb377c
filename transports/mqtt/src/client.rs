//! The `mqtt` client: the broker protocol's client ([`wirebench_brokerrpc::client`]) over one
//! MQTT connection. One subscription to its own reply topic `R` carries every reply and stream
//! frame, routed to its call by correlation data (the call id, 8 bytes big-endian) — no
//! subscription per call.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use wirebench_brokerrpc::client::{CallsOf, ClientCalls, ClientLink, Incoming};
use wirebench_brokerrpc::headers::{self, Frame};
use wirebench_brokerrpc::{Client as RpcClient, Endpoint};
use wirebench_core::message::Method;
use wirebench_core::status::Status;
use wirebench_core::transport::{ClientConfig, TransportError};

use super::link::{Inbound, Link, LinkConfig, LinkHandle, Out, PROTOCOL_MAX_PACKET, PublishError};
use super::{call_topic, cancel_topic, fresh_id};
use wirebench_brokerrpc::headers::PropertyList;

/// Room announced beyond the client's message limit, for properties and MQTT headers.
const HEADROOM: u32 = 64 << 10;
/// The smallest maximum packet size a connection announces.
const MIN_ANNOUNCED: u32 = 16 << 20;

/// A connection to an `mqtt` service.
pub type MqttConnection = RpcClient<MqttLink>;

/// What the protocol's client needs of MQTT: publishing on the connection's link.
#[derive(Debug)]
pub struct MqttLink {
    link: LinkHandle,
    /// `R`: every reply and server frame arrives here.
    reply_topic: String,
    cancel_topic: String,
    /// `P`.
    prefix: String,
    qos: QoS,
}

/// What the link's polling task hands arriving messages to: the connection's calls.
#[derive(Debug)]
struct Replies {
    calls: Arc<CallsOf<MqttLink>>,
    qos: QoS,
}

fn call_id(correlation: &[u8]) -> Option<u64> {
    correlation.try_into().ok().map(u64::from_be_bytes)
}

fn correlation(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
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

impl MqttLink {
    /// A message to the service (a request, an `open`, a cancellation) with our reply topic
    /// and the call's id.
    fn to_service_out(&self, topic: String, id: u64, payload: Bytes, user: PropertyList) -> Out {
        Out {
            topic,
            qos: self.qos,
            payload,
            properties: PublishProperties {
                response_topic: Some(self.reply_topic.clone()),
                correlation_data: Some(correlation(id)),
                user_properties: user.0,
                ..PublishProperties::default()
            },
        }
    }
}

impl Inbound for Replies {
    fn publish(&self, link: &LinkHandle, p: Publish) {
        let props = p.properties.unwrap_or_default();
        let Some(id) = props.correlation_data.as_deref().and_then(call_id) else {
            return;
        };
        let incoming = Incoming {
            headers: Some(PropertyList(props.user_properties)),
            payload: p.payload,
            reply_to: props.response_topic,
            no_responders: false,
        };
        if let Some(to) = self.calls.route(id, incoming) {
            // Best effort: a lost cancel only lets the server run to its deadline.
            let cancel = Out::new(
                to,
                self.qos,
                Bytes::new(),
                headers::frame::<PropertyList>(Frame::Cancel).0,
            );
            let _ = link.publish_now(cancel);
        }
    }

    fn connection(&self, up: bool, why: &str) {
        self.calls.set_connected(up, why);
    }
}

impl ClientLink for MqttLink {
    type Headers = PropertyList;
    type Address = String;
    type Owner = Link;

    async fn to_service(
        &self,
        id: u64,
        method: Method,
        headers: Option<PropertyList>,
        payload: Bytes,
    ) -> Result<(), Status> {
        let what = if method == Method::Unary {
            "request message"
        } else {
            "open frame"
        };
        let out = self.to_service_out(
            call_topic(&self.prefix, method),
            id,
            payload,
            headers.unwrap_or_default(),
        );
        self.link
            .publish(out)
            .await
            .map_err(|e| publish_status(what, e))
    }

    fn cancel_unary(&self, id: u64) {
        let out = self.to_service_out(
            self.cancel_topic.clone(),
            id,
            Bytes::new(),
            PropertyList::default(),
        );
        // Best effort: a lost cancel only lets the server run to its deadline.
        let _ = self.link.publish_now(out);
    }

    async fn to_server(
        &self,
        to: &String,
        headers: PropertyList,
        payload: Bytes,
    ) -> Result<(), Status> {
        self.link
            .publish(Out::new(to.clone(), self.qos, payload, headers.0))
            .await
            .map_err(|e| publish_status("stream message", e))
    }

    fn to_server_now(&self, to: &String, headers: PropertyList) {
        let _ = self
            .link
            .publish_now(Out::new(to.clone(), self.qos, Bytes::new(), headers.0));
    }

    async fn close(&self, owner: &Link) {
        owner.close().await;
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

/// Connects to the service at `endpoint` (`mqtt://HOST:PORT/PREFIX`), publishing at `qos`.
pub(crate) async fn connect(
    config: &ClientConfig,
    endpoint: Endpoint,
    qos: QoS,
) -> Result<MqttConnection, TransportError> {
    let Some(prefix) = endpoint.prefix.clone() else {
        return Err(TransportError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: "an mqtt endpoint names the service's topic prefix: mqtt://HOST:PORT/PREFIX"
                .into(),
        });
    };
    let client_id = format!("wb-c-{}", fresh_id());
    let reply_topic = format!("{prefix}/reply/{client_id}");
    let calls = Arc::new(ClientCalls::new(config.max_message_size, "MQTT broker"));
    let (link, _) = Link::connect(
        &LinkConfig {
            keepalive: config.keepalive,
            host: endpoint.host.clone(),
            port: endpoint.port,
            client_id,
            max_incoming: announced_max(config.max_message_size),
            connect_timeout: config.connect_timeout,
        },
        |_| {
            Arc::new(Replies {
                calls: calls.clone(),
                qos,
            })
        },
    )
    .await?;
    link.subscribe(&reply_topic, qos).await?;
    let mqtt = Arc::new(MqttLink {
        link: link.handle().clone(),
        reply_topic,
        cancel_topic: cancel_topic(&prefix),
        prefix,
        qos,
    });
    Ok(RpcClient::new(mqtt, calls, endpoint.to_string(), link))
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
