//! Yardsticks: for a transport built on a stock library, the least code that does the same
//! round trip with that library alone (a plain async-nats request/reply, stock quinn, tonic's
//! generated client and server, a bare tokio ping-pong). The `floor` command measures a
//! transport and its yardstick through the same plain client loop, so the gap between them is
//! what wirebench's RPC model costs on top of the library.
//!
//! Each transport declares its own ([`crate::Transport::yardstick`]); nothing outside it names
//! one. [`NoYardstick`] is the type of a transport that has none.

use std::future::Future;

use bytes::Bytes;

use crate::transport::TransportError;

/// What a yardstick is asked to measure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct YardstickConfig {
    /// Bytes per message, each way.
    pub payload: usize,
    /// Calls kept in flight on the client's connection.
    pub in_flight: usize,
    /// The external broker the transport runs on, when one was given (a broker transport's
    /// yardstick uses the same broker).
    pub broker_url: Option<String>,
}

/// A minimal stock-library server and client doing one transport's round trip.
pub trait Yardstick: Send + Sync + 'static {
    /// What keeps the server (and any broker it started) running.
    type Server: Send + 'static;
    /// A client connection.
    type Client: Send + Sync + 'static;

    /// The row's name in the floor's table (`nats-min*`: `*` marks the plain client loop).
    fn name(&self) -> &'static str;

    /// Starts the server side; returns it and where a client connects.
    fn serve(&self) -> impl Future<Output = Result<(Self::Server, String), TransportError>> + Send;

    /// Stops the server side.
    fn stop(server: Self::Server) -> impl Future<Output = ()> + Send;

    /// Connects a client to `endpoint`.
    fn connect(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<Self::Client, TransportError>> + Send;

    /// One round trip carrying `payload` each way.
    fn call(
        client: &Self::Client,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Closes the client.
    fn close(client: Self::Client) -> impl Future<Output = ()> + Send;
}

/// The yardstick of a transport that has none: an empty enum, never constructed.
#[derive(Clone, Copy, Debug)]
pub enum NoYardstick {}

impl Yardstick for NoYardstick {
    type Server = NoYardstick;
    type Client = NoYardstick;

    fn name(&self) -> &'static str {
        match *self {}
    }

    async fn serve(&self) -> Result<(NoYardstick, String), TransportError> {
        match *self {}
    }

    async fn stop(server: NoYardstick) {
        match server {}
    }

    async fn connect(&self, _: &str) -> Result<NoYardstick, TransportError> {
        match *self {}
    }

    async fn call(client: &NoYardstick, _: Bytes) -> Result<(), TransportError> {
        match *client {}
    }

    async fn close(client: NoYardstick) {
        match client {}
    }
}
