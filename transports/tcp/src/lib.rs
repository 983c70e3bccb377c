//! `tcp`: a lean binary RPC protocol over TCP — length-prefixed frames with rkyv headers read
//! in place, calls multiplexed over one connection by stream id. The frame format is
//! documented byte for byte in `wirebench-wire` (the crate this transport drives with tokio);
//! this crate adds the connection: TLS, flow control, the client and the server.
//!
//! ## TLS
//!
//! With TLS the connection is TLS 1.3 (`rustls`) from its first byte, ALPN `wbrpc/1`; the
//! preface and frames above are the TLS application data, unchanged. Under mutual TLS the
//! server requires a client certificate signed by its configured CA and hands the
//! certificate's identity (subject common name, else first DNS name) to the handler. A client
//! that fails the handshake (wrong CA, wrong name, no client certificate) gets the TLS alert
//! and the connection is closed; nothing of the protocol is exchanged.
//!
//! ## Flow control
//!
//! There is no per-stream window: backpressure is per connection. Each call buffers up to
//! 64 messages per direction; when a receiver stops reading, the connection's reader waits,
//! TCP's window fills and the peer's writer stops — every call of that connection pauses.
//! A client that sends a whole stream before reading any response can therefore deadlock on
//! very large volumes, as with any windowed protocol.

mod client;
#[cfg(test)]
mod pipe_tests;
mod server;
mod yardstick;

use std::net::SocketAddr;
use std::sync::Arc;

pub use client::{TcpCancel, TcpConnection, TcpSender};
pub use server::TcpServer;
pub use yardstick::TokioPingPong;

use wirebench_core::{
    Capabilities, Capability, ClientConfig, Echo, NetworkPath, NoBroker, ServerConfig, Transport,
    TransportError, YardstickConfig,
};

/// Messages buffered per call and direction.
const STREAM_BUFFER: usize = 64;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// The ALPN protocol of `tcp` over TLS.
const ALPN: &[u8] = b"wbrpc/1";

/// The `tcp` transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Transport for Tcp {
    type Connection = TcpConnection;
    type Server = TcpServer;
    type Broker = NoBroker;
    type Yardstick = TokioPingPong;

    fn name(&self) -> &'static str {
        "tcp"
    }

    fn capabilities(&self) -> Capabilities {
        const GAPS: &[(Capability, &str)] = &[
            (
                Capability::MaxConcurrentStreams,
                "tcp has no per-connection call limit: every OPEN is admitted (backpressure is \
                 per connection, see the wire docs)",
            ),
            (
                Capability::Broker,
                "tcp is point-to-point RPC, not a message broker",
            ),
            (
                Capability::Datagrams,
                "tcp runs over TCP: loss applies to datagrams, and TCP retransmits below us",
            ),
            (
                Capability::DeadPeerDetection,
                "the tcp wire (version 1) has no ping frame, so a silent peer cannot be told from \
                 an idle one; kernel TCP keepalive only probes the nearest hop (a proxy or \
                 middlebox answers for a dead server) and takes minutes: calls need a deadline",
            ),
            (
                Capability::Reconnect,
                "a tcp connection is one socket: once the server goes, its calls fail with \
                 UNAVAILABLE and the caller connects again",
            ),
        ];
        Capabilities::all_except(GAPS)
    }

    async fn serve(
        &self,
        config: &ServerConfig,
        echo: Arc<Echo>,
    ) -> Result<TcpServer, TransportError> {
        config.options.check_known("tcp", &[])?;
        TcpServer::bind(&config.listen, echo, config.tls.as_ref()).await
    }

    async fn connect(
        &self,
        config: &ClientConfig,
        endpoint: &str,
    ) -> Result<TcpConnection, TransportError> {
        config.options.check_known("tcp", &[])?;
        TcpConnection::connect(config, endpoint).await
    }

    fn network_path(&self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        NetworkPath::tcp(endpoint)
    }

    fn endpoint_via(&self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        self.network_path(endpoint)?;
        Ok(via.to_string())
    }

    /// The floor's ping-pong on tokio, for one call in flight: its socket carries one message
    /// at a time.
    fn yardstick(&self, config: &YardstickConfig) -> Option<TokioPingPong> {
        (config.in_flight == 1).then(|| TokioPingPong::new(config.payload))
    }
}
