//! The `nats` client: the broker protocol's client ([`wirebench_brokerrpc::client`]) over one
//! async-nats connection. One wildcard subscription on its own inbox (`<inbox>.*`) carries
//! every reply and stream frame, routed to its call by the last subject token (the call id) —
//! no subscription per call.

use std::sync::{Arc, Weak};

use async_nats::client::traits::Publisher as _;
use async_nats::message::OutboundMessage;
use async_nats::{Client, Event, Message, StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use wirebench_brokerrpc::client::{CallsOf, ClientCalls, ClientLink, Incoming};
use wirebench_brokerrpc::headers::{self, Frame};
use wirebench_brokerrpc::{Client as RpcClient, Endpoint};
use wirebench_core::broker::BrokerError;
use wirebench_core::message::Method;
use wirebench_core::status::Status;
use wirebench_core::transport::{ClientConfig, TransportError};

use super::wire::NatsHeaders;
use super::{cancel_subject, method_subject};

/// A connection to a `nats` service.
pub type NatsConnection = RpcClient<NatsLink>;

/// What the protocol's client needs of NATS: publishing, to the service and to streams.
#[derive(Debug)]
pub struct NatsLink {
    client: Client,
    /// `<inbox>.`: a call's replies arrive on `<inbox>.<id>`.
    inbox_prefix: String,
    /// Each method's subject, made once (cloning a `Subject` costs no allocation).
    method_subjects: [(Method, Subject); 5],
    cancel_subject: Subject,
}

/// Ends the inbox dispatcher with the connection.
#[derive(Debug)]
pub struct Dispatcher(JoinHandle<()>);

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl NatsLink {
    fn method_subject(&self, method: Method) -> Subject {
        self.method_subjects
            .iter()
            .find(|(m, _)| *m == method)
            .map_or_else(|| Subject::from("unknown"), |(_, s)| s.clone())
    }

    fn reply_subject(&self, id: u64) -> Subject {
        let mut s = String::with_capacity(self.inbox_prefix.len() + 20);
        s.push_str(&self.inbox_prefix);
        s.push_str(itoa_u64(id, &mut [0u8; 20]));
        Subject::from(s)
    }

    /// Publishes from a synchronous context (drop, cancel): a task of its own.
    fn publish_later(&self, msg: OutboundMessage) {
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.publish_message(msg).await;
            });
        }
    }
}

/// Writes `n` in decimal into `buf` (call ids are formatted once per call, without `fmt`).
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Publishes, mapping the client library's errors to statuses.
pub(super) async fn publish(client: &Client, msg: OutboundMessage) -> Result<(), Status> {
    client.publish_message(msg).await.map_err(|e| {
        use async_nats::client::PublishErrorKind;
        match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => Status::resource_exhausted(format!(
                "message exceeds the NATS broker's max_payload: {e}"
            )),
            _ => Status::unavailable(format!("publishing to the NATS broker failed: {e}")),
        }
    })
}

/// A message to `subject`.
pub(super) fn outbound(
    subject: Subject,
    reply: Option<Subject>,
    headers: Option<NatsHeaders>,
    payload: Bytes,
) -> OutboundMessage {
    OutboundMessage {
        subject,
        reply,
        payload,
        headers: headers.map(|h| h.0),
    }
}

impl ClientLink for NatsLink {
    type Headers = NatsHeaders;
    type Address = Subject;
    type Owner = Dispatcher;

    async fn to_service(
        &self,
        id: u64,
        method: Method,
        headers: Option<NatsHeaders>,
        payload: Bytes,
    ) -> Result<(), Status> {
        let msg = outbound(
            self.method_subject(method),
            Some(self.reply_subject(id)),
            headers,
            payload,
        );
        publish(&self.client, msg).await
    }

    fn cancel_unary(&self, id: u64) {
        // The payload names the call by its reply subject.
        let reply = self.reply_subject(id);
        self.publish_later(outbound(
            self.cancel_subject.clone(),
            None,
            None,
            Bytes::copy_from_slice(reply.as_bytes()),
        ));
    }

    async fn to_server(
        &self,
        to: &Subject,
        headers: NatsHeaders,
        payload: Bytes,
    ) -> Result<(), Status> {
        publish(
            &self.client,
            outbound(to.clone(), None, Some(headers), payload),
        )
        .await
    }

    fn to_server_now(&self, to: &Subject, headers: NatsHeaders) {
        self.publish_later(outbound(to.clone(), None, Some(headers), Bytes::new()));
    }

    fn no_responders(&self, method: Method, _endpoint: &str) -> Status {
        Status::unavailable(format!(
            "no responders: no server is attached to {} on this broker",
            self.method_subject(method)
        ))
    }

    async fn close(&self, owner: &Dispatcher) {
        owner.0.abort();
        let _ = self.client.flush().await;
    }
}

/// Connects a NATS client for wirebench: the event callback keeps `calls` informed of
/// disconnections (in-flight calls then fail at once) and of slow-consumer drops; a server's
/// connection passes an empty `Weak`.
pub(super) async fn connect_client(
    url: &str,
    config: &ClientConfig,
    calls: Weak<CallsOf<NatsLink>>,
) -> Result<Client, TransportError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("wirebench")
        .connection_timeout(config.connect_timeout);
    if let Some(every) = config.keepalive {
        // Dead-peer detection: async-nats sends a PING every interval and drops the
        // connection (Event::Disconnected, failing calls in flight) when two go unanswered.
        options = options.ping_interval(every);
    }
    options
        .request_timeout(None)
        .event_callback(move |event| {
            let calls = calls.clone();
            async move {
                on_event(&calls, event);
            }
        })
        .connect(url)
        .await
        .map_err(|e| {
            TransportError::Broker(BrokerError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })
        })
}

fn on_event(calls: &Weak<CallsOf<NatsLink>>, event: Event) {
    let Some(calls) = calls.upgrade() else {
        // A server's connection: nothing to fail, but dropped requests must not go unseen.
        if let Event::SlowConsumer(sid) = event {
            tracing::warn!(
                "nats server: subscription {sid} overflowed: the client library dropped a \
                 request (its caller fails only by its deadline)"
            );
        }
        return;
    };
    match event {
        Event::Disconnected => calls.set_connected(false, ""),
        Event::Connected => calls.set_connected(true, ""),
        Event::SlowConsumer(_) => {
            // Our inbox overflowed and the client library dropped a reply; which call it
            // belonged to is unknown, so every call in flight fails now instead of one of
            // them waiting forever (streams would also see a sequence gap).
            tracing::warn!("nats client: inbox subscription overflowed, a reply was dropped");
            calls.fail_all(
                &Status::resource_exhausted(
                    "the client's inbox overflowed and the NATS client library dropped a \
                     reply: every call in flight fails, as any of them may have lost it",
                ),
                false,
            );
        }
        _ => {}
    }
}

/// Connects to the service at `endpoint` (`nats://HOST:PORT/PREFIX`).
pub(crate) async fn connect(
    config: &ClientConfig,
    endpoint: Endpoint,
) -> Result<NatsConnection, TransportError> {
    let Some(prefix) = endpoint.prefix.clone() else {
        return Err(TransportError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: "a nats endpoint names the service's subject prefix: \
                     nats://HOST:PORT/PREFIX"
                .into(),
        });
    };
    let calls = Arc::new(ClientCalls::new(config.max_message_size, "NATS broker"));
    let client = connect_client(&endpoint.url(), config, Arc::downgrade(&calls)).await?;
    let inbox = client.new_inbox();
    let sub = client
        .subscribe(Subject::from(format!("{inbox}.*")))
        .await
        .map_err(|e| TransportError::Protocol(format!("subscribing to the inbox: {e}")))?;
    let link = Arc::new(NatsLink {
        client,
        inbox_prefix: format!("{inbox}."),
        method_subjects: [
            Method::Unary,
            Method::ServerStream,
            Method::ClientStream,
            Method::Bidi,
            Method::Unimplemented,
        ]
        .map(|m| (m, method_subject(&prefix, m))),
        cancel_subject: cancel_subject(&prefix),
    });
    let dispatcher = Dispatcher(tokio::spawn(dispatch(link.clone(), calls.clone(), sub)));
    Ok(RpcClient::new(
        link,
        calls,
        endpoint.to_string(),
        dispatcher,
    ))
}

/// Routes every message arriving on the inbox to its call.
async fn dispatch(
    link: Arc<NatsLink>,
    calls: Arc<CallsOf<NatsLink>>,
    mut sub: async_nats::Subscriber,
) {
    while let Some(msg) = sub.next().await {
        let Some(id) = msg
            .subject
            .strip_prefix(link.inbox_prefix.as_str())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(to) = calls.route(id, incoming(msg)) {
            let cancel = outbound(to, None, Some(headers::frame(Frame::Cancel)), Bytes::new());
            let _ = publish(&link.client, cancel).await;
        }
    }
}

/// A NATS message as the protocol reads it.
fn incoming(msg: Message) -> Incoming<NatsHeaders, Subject> {
    Incoming {
        no_responders: msg.status == Some(StatusCode::NO_RESPONDERS),
        headers: msg.headers.map(NatsHeaders),
        payload: msg.payload,
        reply_to: msg.reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_format_in_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(itoa_u64(0, &mut buf), "0");
        assert_eq!(itoa_u64(7, &mut buf), "7");
        assert_eq!(itoa_u64(1_234_567, &mut buf), "1234567");
        assert_eq!(itoa_u64(u64::MAX, &mut buf), u64::MAX.to_string());
    }
}
