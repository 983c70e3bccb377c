//! The broker-level API ([`wirebench_core::broker`]) over NATS: core publish/subscribe and queue groups,
//! JetStream for acknowledged durable publishing (`Nats-Msg-Id` deduplication) and durable pull
//! consumers, and private brokers run by [`NatsProcess`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, Event, Subject};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Nats;
use super::broker::{NatsProcess, locate};
use wirebench_brokerproc::BrokerAt;
use wirebench_core::broker::{
    Broker, BrokerClient, BrokerClientConfig, BrokerError, BrokerTarget, Delivery, DurableAck,
    DurableConsumer, DurableSpec, Subscription,
};

/// How long a durable consumer keeps trying to resume (broker restarting) before it fails.
const RESUME_WITHIN: Duration = Duration::from_secs(30);
/// Pause between resume attempts.
const RESUME_PAUSE: Duration = Duration::from_millis(100);
/// How long the broker may take to redeliver a message that was not acknowledged.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// A broker for the `nats` transport: private (a `nats-server` this process runs) or external.
pub type NatsBrokerHandle = BrokerAt<NatsProcess>;

/// A NATS client for broker-level operations.
#[derive(Debug)]
pub struct NatsBrokerClient {
    client: Client,
    js: jetstream::Context,
    overflowed: watch::Receiver<u64>,
}

fn op(name: &'static str) -> impl Fn(&dyn std::fmt::Display) -> BrokerError {
    move |e| BrokerError::op(name, e)
}

impl Broker for Nats {
    type Handle = NatsBrokerHandle;
    type Client = NatsBrokerClient;

    async fn start(&self, target: &BrokerTarget) -> Result<NatsBrokerHandle, BrokerError> {
        BrokerAt::new(target, "nats", || {
            crate::broker::start(([127, 0, 0, 1], 0).into())
        })
        .await
    }

    async fn connect(
        &self,
        url: &str,
        config: &BrokerClientConfig,
    ) -> Result<NatsBrokerClient, BrokerError> {
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let client = async_nats::ConnectOptions::new()
            .name("wirebench-broker")
            .connection_timeout(config.connect_timeout)
            .subscription_capacity(config.subscription_buffer.max(1))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::SlowConsumer(_) = event {
                        tx.send_modify(|n| *n += 1);
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BrokerError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(NatsBrokerClient {
            js: jetstream::new(client.clone()),
            client,
            overflowed: rx,
        })
    }

    fn check_available(&self) -> Result<(), BrokerError> {
        locate().map(|_| ())
    }

    fn scheme(&self) -> &'static str {
        "nats"
    }
}

impl BrokerClient for NatsBrokerClient {
    type Subscription = NatsSubscription;
    type Consumer = NatsConsumer;

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.client
            .publish(Subject::from(topic), payload)
            .await
            .map_err(|e| op("publish")(&e))
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        self.client.flush().await.map_err(|e| op("flush")(&e))
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> Result<NatsSubscription, BrokerError> {
        let sub = match group {
            None => self.client.subscribe(Subject::from(topic)).await,
            Some(g) => {
                self.client
                    .queue_subscribe(Subject::from(topic), g.to_owned())
                    .await
            }
        }
        .map_err(|e| op("subscribe")(&e))?;
        // The PING/PONG after our SUB: once answered, the broker has the subscription.
        self.flush().await?;
        Ok(NatsSubscription(sub))
    }

    fn overflowed(&self) -> u64 {
        *self.overflowed.borrow()
    }

    async fn await_overflow(&self, at_least: u64, within: Duration) -> u64 {
        let mut rx = self.overflowed.clone();
        let _ = tokio::time::timeout(within, rx.wait_for(|n| *n >= at_least)).await;
        *rx.borrow()
    }

    async fn create_durable(&self, spec: &DurableSpec) -> Result<(), BrokerError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: spec.name.clone(),
                subjects: vec![spec.topic.clone()],
                storage: stream::StorageType::File,
                duplicate_window: spec.dedup_window,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| op("creating a JetStream stream")(&e))
    }

    async fn publish_durable(
        &self,
        topic: &str,
        payload: Bytes,
        dedup_id: Option<&str>,
    ) -> Result<DurableAck, BrokerError> {
        let mut m = jetstream::message::PublishMessage::build().payload(payload);
        if let Some(id) = dedup_id {
            m = m.message_id(id);
        }
        let ack = self
            .js
            .send_publish(Subject::from(topic), m)
            .await
            .map_err(|e| op("JetStream publish")(&e))?
            .await
            .map_err(|e| op("JetStream publish acknowledgement")(&e))?;
        Ok(DurableAck {
            sequence: Some(ack.sequence),
            duplicate: ack.duplicate,
        })
    }

    async fn delete_durable(&self, name: &str) -> Result<(), BrokerError> {
        self.js
            .delete_stream(name)
            .await
            .map(|_| ())
            .map_err(|e| op("deleting a JetStream stream")(&e))
    }

    async fn durable_len(&self, name: &str) -> Result<u64, BrokerError> {
        let s = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| op("looking up a JetStream stream")(&e))?;
        let info = s
            .get_info()
            .await
            .map_err(|e| op("reading a JetStream stream's state")(&e))?;
        Ok(info.state.messages)
    }

    async fn consume(&self, durable: &str, name: &str) -> Result<NatsConsumer, BrokerError> {
        let s = self
            .js
            .get_stream(durable)
            .await
            .map_err(|e| op("looking up a JetStream stream")(&e))?;
        let consumer: consumer::PullConsumer = s
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| op("creating a JetStream consumer")(&e))?;
        Ok(NatsConsumer {
            consumer,
            messages: None,
        })
    }

    async fn close(&self) {
        let _ = self.client.flush().await;
    }
}

/// A core NATS subscription.
#[derive(Debug)]
pub struct NatsSubscription(async_nats::Subscriber);

impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Bytes> {
        self.0.next().await.map(|m| m.payload)
    }

    fn try_next(&mut self) -> Option<Bytes> {
        // One poll of a channel the connection task has already filled; unconstrained, since
        // tokio's cooperative budget would otherwise report "pending" after 128 messages.
        tokio::task::unconstrained(self.0.next())
            .now_or_never()
            .flatten()
            .map(|m| m.payload)
    }
}

/// A durable JetStream pull consumer that resumes across broker restarts.
pub struct NatsConsumer {
    consumer: consumer::PullConsumer,
    messages: Option<consumer::pull::Stream>,
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer").finish_non_exhaustive()
    }
}

impl DurableConsumer for NatsConsumer {
    type Delivery = NatsDelivery;

    async fn next(&mut self) -> Result<NatsDelivery, BrokerError> {
        let started = Instant::now();
        let mut last_error = String::from("no error");
        loop {
            if started.elapsed() > RESUME_WITHIN {
                return Err(BrokerError::Timeout(format!(
                    "no delivery within {RESUME_WITHIN:?}; last error: {last_error}"
                )));
            }
            let messages = match &mut self.messages {
                Some(m) => m,
                None => match self.consumer.messages().await {
                    Ok(m) => self.messages.insert(m),
                    Err(e) => {
                        last_error = e.to_string();
                        // The broker is restarting: try again shortly.
                        tokio::time::sleep(RESUME_PAUSE).await;
                        continue;
                    }
                },
            };
            match tokio::time::timeout(RESUME_WITHIN, messages.next()).await {
                Ok(Some(Ok(m))) => return Ok(NatsDelivery(m)),
                Ok(Some(Err(e))) => {
                    last_error = e.to_string();
                    self.messages = None;
                    tokio::time::sleep(RESUME_PAUSE).await;
                }
                Ok(None) => self.messages = None,
                Err(_) => {
                    return Err(BrokerError::Timeout(format!(
                        "no delivery within {RESUME_WITHIN:?}"
                    )));
                }
            }
        }
    }
}

/// A message delivered by a JetStream consumer.
#[derive(Debug)]
pub struct NatsDelivery(jetstream::Message);

impl Delivery for NatsDelivery {
    fn payload(&self) -> &Bytes {
        &self.0.payload
    }

    fn redelivered(&self) -> bool {
        self.0.info().is_ok_and(|i| i.delivered > 1)
    }

    async fn ack(self) -> Result<(), BrokerError> {
        self.0.ack().await.map_err(|e| op("acknowledging")(&*e))
    }
}
