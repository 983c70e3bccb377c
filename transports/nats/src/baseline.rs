//! The yardstick for the `nats` transport's speed: the least code that does request/reply with
//! async-nats — `Client::request` (the library's own reply multiplexer) against a subscriber
//! that publishes each payload straight back. No headers, no status, no echo logic: what the
//! transport costs beyond it is the price of the RPC model. The `floor` command measures it
//! beside `nats` in the same run.

use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use wirebench_core::{TransportError, Yardstick};

use crate::broker::NatsProcess;

use wirebench_core::broker::BrokerError;

/// The minimal responder: a plain subscription answering every request with its payload.
#[derive(Debug)]
pub struct BaselineServer {
    task: JoinHandle<()>,
}

fn connect_err(url: &str) -> impl Fn(async_nats::ConnectError) -> BrokerError + '_ {
    move |e| BrokerError::Connect {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

impl BaselineServer {
    /// Connects to the broker at `url` and answers requests on `subject`.
    pub async fn start(url: &str, subject: &str) -> Result<BaselineServer, BrokerError> {
        let client = async_nats::connect(url).await.map_err(connect_err(url))?;
        let mut sub = client
            .subscribe(Subject::from(subject))
            .await
            .map_err(|e| BrokerError::op("subscribe", e))?;
        client
            .flush()
            .await
            .map_err(|e| BrokerError::op("flush", e))?;
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = client.publish(reply, m.payload).await;
                }
            }
        });
        Ok(BaselineServer { task })
    }

    /// Stops answering.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The minimal requester.
#[derive(Clone, Debug)]
pub struct BaselineClient {
    client: Client,
    subject: Subject,
}

impl BaselineClient {
    /// Connects to the broker at `url`; requests go to `subject`.
    pub async fn connect(url: &str, subject: &str) -> Result<BaselineClient, BrokerError> {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(None)
            .connect(url)
            .await
            .map_err(connect_err(url))?;
        Ok(BaselineClient {
            client,
            subject: Subject::from(subject),
        })
    }

    /// One request/reply round trip.
    pub async fn call(&self, payload: Bytes) -> Result<Bytes, BrokerError> {
        self.client
            .request(self.subject.clone(), payload)
            .await
            .map(|m| m.payload)
            .map_err(|e| BrokerError::op("request", e))
    }
}

/// The subject the yardstick answers on.
const SUBJECT: &str = "wb.floor.baseline";

/// The `nats` transport's yardstick (`nats-min*`): a [`BaselineServer`] and [`BaselineClient`]
/// on a private broker, or on the external broker the transport runs on.
#[derive(Clone, Debug, Default)]
pub struct NatsYardstick {
    /// The external broker; `None` starts a private one.
    pub url: Option<String>,
}

impl Yardstick for NatsYardstick {
    type Server = (BaselineServer, Option<NatsProcess>);
    type Client = BaselineClient;

    fn name(&self) -> &'static str {
        "nats-min*"
    }

    async fn serve(&self) -> Result<(Self::Server, String), TransportError> {
        let (url, broker) = match &self.url {
            Some(u) => (u.clone(), None),
            None => {
                let b = crate::broker::start(([127, 0, 0, 1], 0).into()).await?;
                (b.url(), Some(b))
            }
        };
        let server = BaselineServer::start(&url, SUBJECT).await?;
        Ok(((server, broker), url))
    }

    async fn stop((server, broker): Self::Server) {
        server.stop();
        if let Some(b) = broker {
            b.stop().await;
        }
    }

    async fn connect(&self, endpoint: &str) -> Result<BaselineClient, TransportError> {
        Ok(BaselineClient::connect(endpoint, SUBJECT).await?)
    }

    async fn call(client: &BaselineClient, payload: Bytes) -> Result<(), TransportError> {
        client.call(payload).await?;
        Ok(())
    }

    async fn close(_client: BaselineClient) {}
}
