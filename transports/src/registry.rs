//! Run-time selection of a transport by name, by enum dispatch: a call through
//! [`AnyConnection`] costs a `match`, never a box or a virtual call. The same enums carry each
//! transport's broker-level API ([`AnyBroker`] and its handle, client, subscription, consumer
//! and delivery) and its yardstick ([`AnyYardstick`]); a transport without one has an
//! uninhabited variant there.
//!
//! Adding a transport is its crate, its cargo feature and one line in the `registry!`
//! invocation below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wirebench_core::broker::{
    Broker, BrokerClient, BrokerClientConfig, BrokerError, BrokerHandle, BrokerTarget, Delivery,
    DurableAck, DurableConsumer, DurableSpec, RestartMode, Subscription,
};
use wirebench_core::drain::DrainReport;
use wirebench_core::echo::Echo;
use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::Status;
use wirebench_core::transport::{
    CallOptions, CallReceiver, CallSender, Capabilities, ClientConfig, Connection, NetworkPath,
    Server, ServerConfig, Transport, TransportError, UnaryReply, WireBytes,
};
use wirebench_core::yardstick::{Yardstick, YardstickConfig};

macro_rules! registry {
    ($($(#[$meta:meta])* $variant:ident => $ty:ty = $name:literal),+ $(,)?) => {
        /// One of the transports, selected by name.
        #[derive(Clone, Copy, Debug)]
        pub enum AnyTransport {
            $(
                $(#[$meta])*
                #[doc = concat!("The `", $name, "` transport.")]
                $variant($ty),
            )+
        }

        /// Names of every transport this build has, in the order reports list them.
        pub fn names() -> Vec<&'static str> {
            AnyTransport::all().iter().map(|t| t.name()).collect()
        }

        impl AnyTransport {
            /// The transport called `name`.
            pub fn by_name(name: &str) -> Option<AnyTransport> {
                match name {
                    $($(#[$meta])* $name => Some(AnyTransport::$variant(<$ty>::default())),)+
                    _ => None,
                }
            }

            /// Every transport.
            pub fn all() -> Vec<AnyTransport> {
                vec![$($(#[$meta])* AnyTransport::$variant(<$ty>::default())),+]
            }
        }

        /// A connection of any transport.
        #[derive(Debug)]
        pub enum AnyConnection {
            $(
                $(#[$meta])*
                #[doc = concat!("A `", $name, "` connection.")]
                $variant(<$ty as Transport>::Connection),
            )+
        }

        /// The sending half of a call of any transport.
        #[derive(Debug)]
        pub enum AnySender {
            $(
                $(#[$meta])*
                #[doc = concat!("A `", $name, "` sender.")]
                $variant(<<$ty as Transport>::Connection as Connection>::Sender),
            )+
        }

        /// The receiving half of a call of any transport.
        #[derive(Debug)]
        pub enum AnyReceiver {
            $(
                $(#[$meta])*
                #[doc = concat!("A `", $name, "` receiver.")]
                $variant(<<$ty as Transport>::Connection as Connection>::Receiver),
            )+
        }

        /// A server of any transport.
        // Servers are created once per run, never per call: their size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyServer {
            $(
                $(#[$meta])*
                #[doc = concat!("A `", $name, "` server.")]
                $variant(<$ty as Transport>::Server),
            )+
        }

        impl Transport for AnyTransport {
            type Connection = AnyConnection;
            type Server = AnyServer;
            type Broker = AnyBroker;
            type Yardstick = AnyYardstick;

            fn name(&self) -> &'static str {
                match self { $($(#[$meta])* AnyTransport::$variant(t) => t.name(),)+ }
            }

            fn capabilities(&self) -> Capabilities {
                match self { $($(#[$meta])* AnyTransport::$variant(t) => t.capabilities(),)+ }
            }

            async fn serve(
                &self,
                config: &ServerConfig,
                echo: Arc<Echo>,
            ) -> Result<AnyServer, TransportError> {
                match self {
                    $($(#[$meta])* AnyTransport::$variant(t) => t.serve(config, echo).await.map(AnyServer::$variant),)+
                }
            }

            async fn connect(
                &self,
                config: &ClientConfig,
                endpoint: &str,
            ) -> Result<AnyConnection, TransportError> {
                match self {
                    $($(#[$meta])* AnyTransport::$variant(t) => Transport::connect(t, config, endpoint).await.map(AnyConnection::$variant),)+
                }
            }

            fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
                match self { $($(#[$meta])* AnyTransport::$variant(t) => t.network_path(endpoint),)+ }
            }

            fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
                match self { $($(#[$meta])* AnyTransport::$variant(t) => t.endpoint_via(endpoint, via),)+ }
            }

            fn broker(&self) -> Option<AnyBroker> {
                match self { $($(#[$meta])* AnyTransport::$variant(t) => t.broker().map(AnyBroker::$variant),)+ }
            }

            fn yardstick(&self, config: &YardstickConfig) -> Option<AnyYardstick> {
                match self { $($(#[$meta])* AnyTransport::$variant(t) => t.yardstick(config).map(AnyYardstick::$variant),)+ }
            }
        }

        brokers! { $($(#[$meta])* $variant => $ty),+ }
        yardsticks! { $($(#[$meta])* $variant => $ty),+ }

        impl Connection for AnyConnection {
            type Sender = AnySender;
            type Receiver = AnyReceiver;

            async fn unary(
                &self,
                request: EchoRequest,
                options: &CallOptions,
            ) -> Result<UnaryReply, Status> {
                match self { $($(#[$meta])* AnyConnection::$variant(c) => c.unary(request, options).await,)+ }
            }

            async fn open(
                &self,
                method: Method,
                options: &CallOptions,
            ) -> Result<(AnySender, AnyReceiver), Status> {
                match self {
                    $($(#[$meta])* AnyConnection::$variant(c) => {
                        let (s, r) = c.open(method, options).await?;
                        Ok((AnySender::$variant(s), AnyReceiver::$variant(r)))
                    })+
                }
            }

            async fn close(&self) {
                match self { $($(#[$meta])* AnyConnection::$variant(c) => c.close().await,)+ }
            }

            fn wire_bytes(&self) -> Option<WireBytes> {
                match self { $($(#[$meta])* AnyConnection::$variant(c) => c.wire_bytes(),)+ }
            }
        }

        impl CallSender for AnySender {
            async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
                match self { $($(#[$meta])* AnySender::$variant(s) => s.send(request).await,)+ }
            }

            async fn close_send(&mut self) -> Result<(), Status> {
                match self { $($(#[$meta])* AnySender::$variant(s) => s.close_send().await,)+ }
            }
        }

        impl CallReceiver for AnyReceiver {
            async fn headers(&mut self) -> Result<Metadata, Status> {
                match self { $($(#[$meta])* AnyReceiver::$variant(r) => r.headers().await,)+ }
            }

            async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
                match self { $($(#[$meta])* AnyReceiver::$variant(r) => r.recv().await,)+ }
            }

            fn trailers(&self) -> &Metadata {
                match self { $($(#[$meta])* AnyReceiver::$variant(r) => r.trailers(),)+ }
            }

            fn cancel(&mut self) {
                match self { $($(#[$meta])* AnyReceiver::$variant(r) => r.cancel(),)+ }
            }
        }

        impl Server for AnyServer {
            fn endpoint(&self) -> String {
                match self { $($(#[$meta])* AnyServer::$variant(s) => s.endpoint(),)+ }
            }

            async fn shutdown(self) {
                match self { $($(#[$meta])* AnyServer::$variant(s) => s.shutdown().await,)+ }
            }

            async fn drain(self, grace: Duration) -> DrainReport {
                match self { $($(#[$meta])* AnyServer::$variant(s) => s.drain(grace).await,)+ }
            }
        }
    };
}

macro_rules! brokers {
    ($($(#[$meta:meta])* $variant:ident => $ty:ty),+ $(,)?) => {
        /// A broker technology, selected at run time.
        #[derive(Clone, Copy, Debug)]
        pub enum AnyBroker {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<$ty as Transport>::Broker),
            )+
        }

        /// A running broker of any technology.
        // One per broker, not per message: its size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyBrokerHandle {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<$ty as Transport>::Broker as Broker>::Handle),
            )+
        }

        /// A broker client of any technology.
        // One per connection, not per message: its size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyBrokerClient {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<$ty as Transport>::Broker as Broker>::Client),
            )+
        }

        /// A subscription of any technology.
        #[derive(Debug)]
        pub enum AnySubscription {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<<$ty as Transport>::Broker as Broker>::Client as BrokerClient>::Subscription),
            )+
        }

        /// A durable consumer of any technology.
        // One per durable consumer; a transport without durable logs has an empty variant.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyConsumer {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<<$ty as Transport>::Broker as Broker>::Client as BrokerClient>::Consumer),
            )+
        }

        /// A durable delivery of any technology.
        // Moved, never copied in bulk; a transport without durable logs has an empty variant,
        // and boxing would cost an allocation per delivery.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyDelivery {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(<<<<$ty as Transport>::Broker as Broker>::Client as BrokerClient>::Consumer as DurableConsumer>::Delivery),
            )+
        }

        impl Broker for AnyBroker {
            type Handle = AnyBrokerHandle;
            type Client = AnyBrokerClient;

            async fn start(&self, target: &BrokerTarget) -> Result<AnyBrokerHandle, BrokerError> {
                match self { $($(#[$meta])* AnyBroker::$variant(b) => b.start(target).await.map(AnyBrokerHandle::$variant),)+ }
            }

            async fn connect(
                &self,
                url: &str,
                config: &BrokerClientConfig,
            ) -> Result<AnyBrokerClient, BrokerError> {
                match self { $($(#[$meta])* AnyBroker::$variant(b) => Broker::connect(b, url, config).await.map(AnyBrokerClient::$variant),)+ }
            }

            fn check_available(&self) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyBroker::$variant(b) => b.check_available(),)+ }
            }
            fn scheme(&self) -> &'static str {
                match self { $($(#[$meta])* AnyBroker::$variant(b) => b.scheme(),)+ }
            }

        }

        impl BrokerHandle for AnyBrokerHandle {
            fn url(&self) -> String {
                match self { $($(#[$meta])* AnyBrokerHandle::$variant(h) => h.url(),)+ }
            }

            fn can_restart(&self) -> bool {
                match self { $($(#[$meta])* AnyBrokerHandle::$variant(h) => h.can_restart(),)+ }
            }

            async fn restart(&mut self, mode: RestartMode) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyBrokerHandle::$variant(h) => h.restart(mode).await,)+ }
            }

            async fn stop(self) {
                match self { $($(#[$meta])* AnyBrokerHandle::$variant(h) => h.stop().await,)+ }
            }
        }

        impl BrokerClient for AnyBrokerClient {
            type Subscription = AnySubscription;
            type Consumer = AnyConsumer;

            async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.publish(topic, payload).await,)+ }
            }

            async fn flush(&self) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.flush().await,)+ }
            }

            async fn subscribe(
                &self,
                topic: &str,
                group: Option<&str>,
            ) -> Result<AnySubscription, BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.subscribe(topic, group).await.map(AnySubscription::$variant),)+ }
            }

            fn overflowed(&self) -> u64 {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.overflowed(),)+ }
            }

            async fn await_overflow(&self, at_least: u64, within: Duration) -> u64 {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.await_overflow(at_least, within).await,)+ }
            }

            async fn create_durable(&self, spec: &DurableSpec) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.create_durable(spec).await,)+ }
            }

            async fn publish_durable(
                &self,
                topic: &str,
                payload: Bytes,
                dedup_id: Option<&str>,
            ) -> Result<DurableAck, BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.publish_durable(topic, payload, dedup_id).await,)+ }
            }

            async fn delete_durable(&self, name: &str) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.delete_durable(name).await,)+ }
            }

            async fn durable_len(&self, name: &str) -> Result<u64, BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.durable_len(name).await,)+ }
            }

            async fn consume(&self, durable: &str, consumer: &str) -> Result<AnyConsumer, BrokerError> {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.consume(durable, consumer).await.map(AnyConsumer::$variant),)+ }
            }

            async fn close(&self) {
                match self { $($(#[$meta])* AnyBrokerClient::$variant(c) => c.close().await,)+ }
            }
        }

        impl Subscription for AnySubscription {
            async fn next(&mut self) -> Option<Bytes> {
                match self { $($(#[$meta])* AnySubscription::$variant(s) => Subscription::next(s).await,)+ }
            }

            fn try_next(&mut self) -> Option<Bytes> {
                match self { $($(#[$meta])* AnySubscription::$variant(s) => s.try_next(),)+ }
            }
        }

        impl DurableConsumer for AnyConsumer {
            type Delivery = AnyDelivery;

            async fn next(&mut self) -> Result<AnyDelivery, BrokerError> {
                match self { $($(#[$meta])* AnyConsumer::$variant(c) => DurableConsumer::next(c).await.map(AnyDelivery::$variant),)+ }
            }
        }

        impl Delivery for AnyDelivery {
            fn payload(&self) -> &Bytes {
                match self { $($(#[$meta])* AnyDelivery::$variant(d) => d.payload(),)+ }
            }

            fn redelivered(&self) -> bool {
                match self { $($(#[$meta])* AnyDelivery::$variant(d) => d.redelivered(),)+ }
            }

            async fn ack(self) -> Result<(), BrokerError> {
                match self { $($(#[$meta])* AnyDelivery::$variant(d) => d.ack().await,)+ }
            }
        }
    };
}

macro_rules! yardsticks {
    ($($(#[$meta:meta])* $variant:ident => $ty:ty),+ $(,)?) => {
        /// The yardstick of any transport.
        #[derive(Debug)]
        pub enum AnyYardstick {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`'s.")]
                $variant(<$ty as Transport>::Yardstick),
            )+
        }

        /// A running yardstick server of any transport.
        // One per measurement, never per call: its size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyYardstickServer {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`'s.")]
                $variant(<<$ty as Transport>::Yardstick as Yardstick>::Server),
            )+
        }

        /// A yardstick client of any transport.
        #[derive(Debug)]
        pub enum AnyYardstickClient {
            $(
                $(#[$meta])*
                #[doc = concat!("`", stringify!($variant), "`'s.")]
                $variant(<<$ty as Transport>::Yardstick as Yardstick>::Client),
            )+
        }

        impl Yardstick for AnyYardstick {
            type Server = AnyYardstickServer;
            type Client = AnyYardstickClient;

            fn name(&self) -> &'static str {
                match self { $($(#[$meta])* AnyYardstick::$variant(y) => y.name(),)+ }
            }

            async fn serve(&self) -> Result<(AnyYardstickServer, String), TransportError> {
                match self {
                    $($(#[$meta])* AnyYardstick::$variant(y) => y.serve().await.map(|(s, e)| (AnyYardstickServer::$variant(s), e)),)+
                }
            }

            async fn stop(server: AnyYardstickServer) {
                match server {
                    $($(#[$meta])* AnyYardstickServer::$variant(s) => <<$ty as Transport>::Yardstick as Yardstick>::stop(s).await,)+
                }
            }

            async fn connect(&self, endpoint: &str) -> Result<AnyYardstickClient, TransportError> {
                match self {
                    $($(#[$meta])* AnyYardstick::$variant(y) => y.connect(endpoint).await.map(AnyYardstickClient::$variant),)+
                }
            }

            async fn call(client: &AnyYardstickClient, payload: Bytes) -> Result<(), TransportError> {
                match client {
                    $($(#[$meta])* AnyYardstickClient::$variant(c) => <<$ty as Transport>::Yardstick as Yardstick>::call(c, payload).await,)+
                }
            }

            async fn close(client: AnyYardstickClient) {
                match client {
                    $($(#[$meta])* AnyYardstickClient::$variant(c) => <<$ty as Transport>::Yardstick as Yardstick>::close(c).await,)+
                }
            }
        }
    };
}

registry! {
    Inproc => wirebench_core::inproc::Inproc = "inproc",
    #[cfg(feature = "tcp")]
    Tcp => wirebench_tcp::Tcp = "tcp",
    #[cfg(feature = "nats")]
    Nats => wirebench_nats::Nats = "nats",
    #[cfg(feature = "grpc")]
    Grpc => wirebench_grpc::Grpc = "grpc",
    #[cfg(feature = "quic")]
    Quic => wirebench_quic::Quic = "quic",
    #[cfg(feature = "mqtt")]
    Mqtt => wirebench_mqtt::Mqtt = "mqtt",
}

/// The transport called `name`, or an error listing the ones this build has.
///
/// Names match whatever their case (`TCP` is `tcp`); an unknown one gets the closest known
/// name as a suggestion.
pub fn transport(name: &str) -> Result<AnyTransport, TransportError> {
    let known = names();
    if let Some(t) = known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name.trim()))
        .and_then(|k| AnyTransport::by_name(k))
    {
        return Ok(t);
    }
    let hint = closest(&name.trim().to_ascii_lowercase(), &known)
        .map(|k| format!("did you mean {k:?}? "))
        .unwrap_or_default();
    Err(TransportError::Config(format!(
        "unknown transport {name:?} ({hint}known: {})",
        known.join(", ")
    )))
}

/// The candidate within two edits of `name` (insertions, deletions, substitutions, swaps of
/// neighbours), the nearest first.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edits(name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance between `a` and `b`.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whatever_the_case_and_typos_get_a_suggestion() {
        assert_eq!(transport("INPROC").unwrap().name(), "inproc");
        assert_eq!(transport(" Inproc ").unwrap().name(), "inproc");
        let e = transport("inprco").unwrap_err().to_string();
        assert!(e.contains("did you mean \"inproc\"?"), "{e}");
        let e = transport("carrier-pigeon").unwrap_err().to_string();
        assert!(
            !e.contains("did you mean") && e.contains("known: inproc"),
            "{e}"
        );
    }

    #[test]
    fn edits_count_insertions_deletions_substitutions_and_swaps() {
        assert_eq!(edits("tcp", "tcp"), 0);
        assert_eq!(edits("tpc", "tcp"), 1);
        assert_eq!(edits("tc", "tcp"), 1);
        assert_eq!(edits("grcp", "grpc"), 1);
        assert_eq!(edits("quick", "quic"), 1);
        assert_eq!(edits("mqtt", "nats"), 3);
    }
}
