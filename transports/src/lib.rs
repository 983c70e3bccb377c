//! The facade over wirebench's transports: the [`registry`] that selects one by name at run
//! time without boxing a call, with every transport crate behind a cargo feature of the same
//! name (default: all). `cargo build --no-default-features --features tcp` builds a wirebench
//! with `inproc` and `tcp` alone — no tonic, quinn or broker client in the tree.
//!
//! Adding a transport is its crate (`transports/<name>/`, depending on `wirebench-core` and the
//! shared crates it needs), a feature here, and one line in the `registry!` invocation.
//! Nothing else in wirebench matches on transport names: a transport declares its
//! capabilities, its broker URL scheme and its yardstick itself.

pub mod registry;

pub use registry::{
    AnyBroker, AnyBrokerClient, AnyBrokerHandle, AnyConnection, AnyConsumer, AnyDelivery,
    AnyReceiver, AnySender, AnyServer, AnySubscription, AnyTransport, AnyYardstick, names,
    transport,
};

#[cfg(feature = "mqtt")]
pub use wirebench_mqtt as mqtt;
#[cfg(feature = "nats")]
pub use wirebench_nats as nats;
