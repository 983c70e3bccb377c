//! Run-time selection of a transport by name, by enum dispatch: a call through
//! [`AnyConnection`] costs a `match`, never a box or a virtual call.
//!
//! Adding a transport is one line in the `registry!` invocation below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::drain::DrainReport;
use crate::echo::Echo;
use crate::message::{EchoRequest, EchoResponse, Method};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::transport::{
    CallOptions, CallReceiver, CallSender, Capabilities, ClientConfig, Connection, NetworkPath,
    Server, ServerConfig, Transport, TransportError, UnaryReply, WireBytes,
};

use crate::{grpc, inproc, mqtt, nats, quic, tcp};

macro_rules! registry {
    ($($variant:ident => $ty:path = $name:literal),+ $(,)?) => {
        /// One of the transports, selected by name.
        #[derive(Clone, Copy, Debug)]
        pub enum AnyTransport {
            $(
                #[doc = concat!("The `", $name, "` transport.")]
                $variant($ty),
            )+
        }

        /// Names of every transport, in the order reports list them.
        pub const NAMES: &[&str] = &[$($name),+];

        impl AnyTransport {
            /// The transport called `name`.
            pub fn by_name(name: &str) -> Option<AnyTransport> {
                match name {
                    $($name => Some(AnyTransport::$variant(<$ty>::default())),)+
                    _ => None,
                }
            }

            /// Every transport.
            pub fn all() -> Vec<AnyTransport> {
                vec![$(AnyTransport::$variant(<$ty>::default())),+]
            }
        }

        /// A connection of any transport.
        #[derive(Debug)]
        pub enum AnyConnection {
            $(
                #[doc = concat!("A `", $name, "` connection.")]
                $variant(<$ty as Transport>::Connection),
            )+
        }

        /// The sending half of a call of any transport.
        #[derive(Debug)]
        pub enum AnySender {
            $(
                #[doc = concat!("A `", $name, "` sender.")]
                $variant(<<$ty as Transport>::Connection as Connection>::Sender),
            )+
        }

        /// The receiving half of a call of any transport.
        #[derive(Debug)]
        pub enum AnyReceiver {
            $(
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
                #[doc = concat!("A `", $name, "` server.")]
                $variant(<$ty as Transport>::Server),
            )+
        }

        impl Transport for AnyTransport {
            type Connection = AnyConnection;
            type Server = AnyServer;

            fn name(&self) -> &'static str {
                match self { $(AnyTransport::$variant(t) => t.name(),)+ }
            }

            fn capabilities(&self) -> Capabilities {
                match self { $(AnyTransport::$variant(t) => t.capabilities(),)+ }
            }

            async fn serve(
                &self,
                config: &ServerConfig,
                echo: Arc<Echo>,
            ) -> Result<AnyServer, TransportError> {
                match self {
                    $(AnyTransport::$variant(t) => t.serve(config, echo).await.map(AnyServer::$variant),)+
                }
            }

            async fn connect(
                &self,
                config: &ClientConfig,
                endpoint: &str,
            ) -> Result<AnyConnection, TransportError> {
                match self {
                    $(AnyTransport::$variant(t) => t.connect(config, endpoint).await.map(AnyConnection::$variant),)+
                }
            }

            fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
                match self { $(AnyTransport::$variant(t) => t.network_path(endpoint),)+ }
            }

            fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
                match self { $(AnyTransport::$variant(t) => t.endpoint_via(endpoint, via),)+ }
            }
        }

        impl Connection for AnyConnection {
            type Sender = AnySender;
            type Receiver = AnyReceiver;

            async fn unary(
                &self,
                request: EchoRequest,
                options: &CallOptions,
            ) -> Result<UnaryReply, Status> {
                match self { $(AnyConnection::$variant(c) => c.unary(request, options).await,)+ }
            }

            async fn open(
                &self,
                method: Method,
                options: &CallOptions,
            ) -> Result<(AnySender, AnyReceiver), Status> {
                match self {
                    $(AnyConnection::$variant(c) => {
                        let (s, r) = c.open(method, options).await?;
                        Ok((AnySender::$variant(s), AnyReceiver::$variant(r)))
                    })+
                }
            }

            async fn close(&self) {
                match self { $(AnyConnection::$variant(c) => c.close().await,)+ }
            }

            fn wire_bytes(&self) -> Option<WireBytes> {
                match self { $(AnyConnection::$variant(c) => c.wire_bytes(),)+ }
            }
        }

        impl CallSender for AnySender {
            async fn send(&mut self, request: EchoRequest) -> Result<(), Status> {
                match self { $(AnySender::$variant(s) => s.send(request).await,)+ }
            }

            async fn close_send(&mut self) -> Result<(), Status> {
                match self { $(AnySender::$variant(s) => s.close_send().await,)+ }
            }
        }

        impl CallReceiver for AnyReceiver {
            async fn headers(&mut self) -> Result<Metadata, Status> {
                match self { $(AnyReceiver::$variant(r) => r.headers().await,)+ }
            }

            async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
                match self { $(AnyReceiver::$variant(r) => r.recv().await,)+ }
            }

            fn trailers(&self) -> &Metadata {
                match self { $(AnyReceiver::$variant(r) => r.trailers(),)+ }
            }

            fn cancel(&mut self) {
                match self { $(AnyReceiver::$variant(r) => r.cancel(),)+ }
            }
        }

        impl Server for AnyServer {
            fn endpoint(&self) -> String {
                match self { $(AnyServer::$variant(s) => s.endpoint(),)+ }
            }

            async fn shutdown(self) {
                match self { $(AnyServer::$variant(s) => s.shutdown().await,)+ }
            }

            async fn drain(self, grace: Duration) -> DrainReport {
                match self { $(AnyServer::$variant(s) => s.drain(grace).await,)+ }
            }
        }
    };
}

registry! {
    Inproc => inproc::Inproc = "inproc",
    Tcp => tcp::Tcp = "tcp",
    Nats => nats::Nats = "nats",
    Grpc => grpc::Grpc = "grpc",
    Quic => quic::Quic = "quic",
    Mqtt => mqtt::Mqtt = "mqtt",
}

/// The transport called `name`, or an error listing the known ones.
pub fn transport(name: &str) -> Result<AnyTransport, TransportError> {
    AnyTransport::by_name(name).ok_or_else(|| {
        TransportError::Config(format!(
            "unknown transport {name:?} (known: {})",
            NAMES.join(", ")
        ))
    })
}
