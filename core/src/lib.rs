//! wirebench's contract: the `Echo` service's message model (requests, directives, responses),
//! status codes, metadata and deadlines; the [`Transport`]/[`Connection`]/[`Server`] traits every
//! transport implements and the [`Capabilities`] it declares; the one [`Echo`] implementation
//! every server adapts; the broker-level API broker transports add; TLS settings as data; the
//! pieces every transport shares (call event queues, drain, stream flow control); the units
//! grammar; and `inproc`, the transport without I/O that is the harness's floor.
//!
//! No network dependency: this crate depends on tokio's synchronisation and time, bytes,
//! futures and rustls' certificate types only, so the crates that need the model (scenarios,
//! fuzz targets, benches, reports' producers) compile none of the transports' stacks.

pub mod broker;
pub mod call;
pub mod drain;
pub mod echo;
pub mod inproc;
pub mod message;
pub mod metadata;
pub mod status;
pub mod tls;
pub mod transport;
pub mod units;
pub mod yardstick;

pub use broker::{Broker, BrokerError, NoBroker};
pub use drain::DrainReport;
pub use echo::{CallHead, Echo, EchoConfig, Observed, ServerCall};
pub use message::{Directives, EchoRequest, EchoResponse, FailWith, Method, pattern};
pub use metadata::{Metadata, MetadataValue};
pub use status::{Code, Status};
pub use transport::{
    CallOptions, CallReceiver, CallSender, Capabilities, Capability, ClientConfig, Connection,
    NetworkPath, Options, Server, ServerConfig, Transport, TransportError, UnaryReply, WireBytes,
    WireProtocol,
};
pub use yardstick::{NoYardstick, Yardstick, YardstickConfig};
