//! The broker-level API ([`wirebench_core::broker`]) over MQTT 5: QoS 0 publish/subscribe, MQTT 5
//! shared subscriptions (`$share/<group>/<topic>`) as queue groups, the embedded broker as the
//! private one. Durable logs and deduplication are declared gaps of the transport (see
//! [`Mqtt`]'s capabilities), and their operations answer `Unsupported` with the reason.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
use tokio::sync::{mpsc, watch};

use super::embedded::EmbeddedBroker;
use super::link::{Inbound, Link, LinkConfig, LinkHandle, Out, PublishError};
use super::{Mqtt, SCHEME, fresh_id};
use wirebench_brokerproc::{BrokerAt, PrivateBroker};
use wirebench_brokerrpc::Endpoint;
use wirebench_core::broker::{
    Broker, BrokerClient, BrokerClientConfig, BrokerError, BrokerTarget, Delivery, DurableAck,
    DurableConsumer, DurableSpec, RestartMode, Subscription,
};
use wirebench_core::transport::DEFAULT_MAX_MESSAGE_SIZE;

/// Why the durable operations are refused (the transport declares the same gap).
const NO_DURABLE: &str = "the mqtt transport has no durable logs: the embedded broker keeps \
     sessions in memory only, and MQTT cannot report how many messages a broker stores";

/// A broker for the `mqtt` transport: embedded (private) or external.
pub type MqttBrokerHandle = BrokerAt<EmbeddedBroker>;

/// Both restart modes end the embedded broker at once and start a fresh one: it has no state
/// that a graceful stop could save.
impl PrivateBroker for EmbeddedBroker {
    fn url(&self) -> String {
        EmbeddedBroker::url(self)
    }

    async fn restart(&mut self, _mode: RestartMode) -> Result<(), BrokerError> {
        EmbeddedBroker::restart(self).await
    }

    async fn stop(self) {
        EmbeddedBroker::stop(self).await;
    }
}

impl Broker for Mqtt {
    type Handle = MqttBrokerHandle;
    type Client = MqttBrokerClient;

    async fn start(&self, target: &BrokerTarget) -> Result<MqttBrokerHandle, BrokerError> {
        BrokerAt::new(target, SCHEME.name, || {
            EmbeddedBroker::start(([127, 0, 0, 1], 0).into())
        })
        .await
    }

    async fn connect(
        &self,
        url: &str,
        config: &BrokerClientConfig,
    ) -> Result<MqttBrokerClient, BrokerError> {
        MqttBrokerClient::connect(url, config).await
    }

    fn check_available(&self) -> Result<(), BrokerError> {
        // The broker is a library linked into this program.
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        "mqtt"
    }
}

/// One subscription's place in the router.
struct Route {
    /// The topic filter, without any `$share/<group>/` prefix.
    filter: String,
    tx: mpsc::Sender<Bytes>,
}

/// Routes incoming messages to subscriptions by topic filter and counts what overflowed.
struct Router {
    routes: Mutex<Vec<Route>>,
    overflowed: watch::Sender<u64>,
}

impl Router {
    fn routes(&self) -> MutexGuard<'_, Vec<Route>> {
        // A panic while holding this lock would be a bug; the table stays usable.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inbound for Router {
    fn publish(&self, _link: &LinkHandle, p: Publish) {
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            return;
        };
        let mut dropped = 0u64;
        self.routes().retain(|r| {
            if !matches(&r.filter, topic) {
                return true;
            }
            match r.tx.try_send(p.payload.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                // The subscription was dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if dropped > 0 {
            self.overflowed.send_modify(|n| *n += dropped);
        }
    }

    fn connection(&self, up: bool, why: &str) {
        if !up {
            tracing::warn!("mqtt broker client: the connection broke: {why}");
        }
    }
}

/// True when `topic` matches the MQTT topic `filter` (`+` one level, `#` the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    // Topics starting with `$` never match filters starting with a wildcard (MQTT 4.7.2).
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// An MQTT client for broker-level operations.
pub struct MqttBrokerClient {
    link: Link,
    router: Arc<Router>,
    buffer: usize,
    /// This connection's own topic, for [`BrokerClient::flush`].
    flush_topic: String,
}

impl std::fmt::Debug for MqttBrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBrokerClient")
            .field("flush_topic", &self.flush_topic)
            .finish_non_exhaustive()
    }
}

fn op(name: &'static str) -> impl Fn(PublishError) -> BrokerError {
    move |e| match e {
        PublishError::TooLarge { size, max } => BrokerError::op(
            name,
            format!("a message of {size} bytes exceeds the broker's maximum packet size of {max}"),
        ),
        PublishError::Closed => BrokerError::op(name, "the MQTT connection is closed"),
    }
}

impl MqttBrokerClient {
    async fn connect(
        url: &str,
        config: &BrokerClientConfig,
    ) -> Result<MqttBrokerClient, BrokerError> {
        let e = Endpoint::parse(SCHEME, url).map_err(|reason| {
            BrokerError::Config(format!(
                "{url:?} is not an MQTT URL (mqtt://HOST:PORT): {reason}"
            ))
        })?;
        let id = fresh_id();
        let (link, router) = Link::connect(
            &LinkConfig {
                keepalive: None,
                host: e.host,
                port: e.port,
                client_id: format!("wb-b-{id}"),
                max_incoming: super::client::announced_max(DEFAULT_MAX_MESSAGE_SIZE),
                connect_timeout: config.connect_timeout,
            },
            |_| {
                Arc::new(Router {
                    routes: Mutex::new(Vec::new()),
                    overflowed: watch::Sender::new(0),
                })
            },
        )
        .await?;
        Ok(MqttBrokerClient {
            link,
            router,
            buffer: config.subscription_buffer.max(1),
            flush_topic: format!("wb/flush/{id}"),
        })
    }
}

impl BrokerClient for MqttBrokerClient {
    type Subscription = MqttSubscription;
    type Consumer = MqttConsumer;

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.link
            .handle()
            .publish(Out::new(
                topic.to_owned(),
                QoS::AtMostOnce,
                payload,
                Vec::new(),
            ))
            .await
            .map_err(op("publish"))
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        self.link.barrier(&self.flush_topic).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> Result<MqttSubscription, BrokerError> {
        let (tx, rx) = mpsc::channel(self.buffer);
        // Routed before the broker knows: a message may follow the SUBACK at once.
        self.router.routes().push(Route {
            filter: topic.to_owned(),
            tx,
        });
        let filter = match group {
            None => topic.to_owned(),
            Some(g) => format!("$share/{g}/{topic}"),
        };
        self.link.subscribe(&filter, QoS::AtMostOnce).await?;
        Ok(MqttSubscription(rx))
    }

    fn overflowed(&self) -> u64 {
        *self.router.overflowed.borrow()
    }

    async fn await_overflow(&self, at_least: u64, within: Duration) -> u64 {
        let mut rx = self.router.overflowed.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|n| *n >= at_least)).await;
        *rx.borrow()
    }

    async fn create_durable(&self, _spec: &DurableSpec) -> Result<(), BrokerError> {
        Err(BrokerError::Unsupported(NO_DURABLE.into()))
    }

    async fn publish_durable(
        &self,
        _topic: &str,
        _payload: Bytes,
        _dedup_id: Option<&str>,
    ) -> Result<DurableAck, BrokerError> {
        Err(BrokerError::Unsupported(NO_DURABLE.into()))
    }

    async fn delete_durable(&self, _name: &str) -> Result<(), BrokerError> {
        Err(BrokerError::Unsupported(NO_DURABLE.into()))
    }

    async fn durable_len(&self, _name: &str) -> Result<u64, BrokerError> {
        Err(BrokerError::Unsupported(NO_DURABLE.into()))
    }

    async fn consume(&self, _durable: &str, _consumer: &str) -> Result<MqttConsumer, BrokerError> {
        Err(BrokerError::Unsupported(NO_DURABLE.into()))
    }

    async fn close(&self) {
        self.link.close().await;
    }
}

/// Messages of one MQTT subscription.
#[derive(Debug)]
pub struct MqttSubscription(mpsc::Receiver<Bytes>);

impl Subscription for MqttSubscription {
    async fn next(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }

    fn try_next(&mut self) -> Option<Bytes> {
        self.0.try_recv().ok()
    }
}

/// A durable consumer: none can exist (the transport has no durable logs).
#[derive(Debug)]
pub enum MqttConsumer {}

impl DurableConsumer for MqttConsumer {
    type Delivery = MqttDelivery;

    async fn next(&mut self) -> Result<MqttDelivery, BrokerError> {
        match *self {}
    }
}

/// A durable delivery: none can exist (the transport has no durable logs).
#[derive(Debug)]
pub enum MqttDelivery {}

impl Delivery for MqttDelivery {
    fn payload(&self) -> &Bytes {
        match *self {}
    }

    fn redelivered(&self) -> bool {
        match *self {}
    }

    async fn ack(self) -> Result<(), BrokerError> {
        match self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_match_as_mqtt_says() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("#", "x/y"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("wb.case.x.1", "wb.case.x.1"));
        assert!(!matches("wb.case.x.1", "wb.case.x.1.end"));
    }
}
