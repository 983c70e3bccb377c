//! wirebench's RPC model — the `Echo` service, status codes, metadata, deadlines,
//! cancellation, capabilities — and one module per transport implementing it.
//!
//! Every transport serves the same [`echo::Echo`] logic and is called through the same
//! [`transport::Connection`] contract, so a comparison measures the transport alone.
//! [`registry`] selects a transport by name at run time without boxing a call.

pub mod broker;
pub mod call;
pub mod drain;
pub mod echo;
pub(crate) mod flow;
pub mod grpc;
pub mod inproc;
pub mod message;
pub mod metadata;
pub mod mqtt;
pub mod nats;
pub mod policy;
pub mod quic;
pub mod registry;
pub mod status;
pub mod tcp;
pub mod tls;
pub mod transport;

pub use drain::DrainReport;
pub use echo::{CallHead, Echo, EchoConfig, Observed, ServerCall};
pub use message::{Directives, EchoRequest, EchoResponse, FailWith, Method, pattern};
pub use metadata::{Metadata, MetadataValue};
pub use registry::{AnyConnection, AnyReceiver, AnySender, AnyServer, AnyTransport};
pub use status::{Code, Status};
pub use transport::{
    CallOptions, CallReceiver, CallSender, Capabilities, Capability, ClientConfig, Connection,
    NetworkPath, Server, ServerConfig, Transport, TransportError, UnaryReply, WireBytes,
    WireProtocol,
};
