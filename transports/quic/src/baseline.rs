//! The yardstick for the `quic` transport's speed: the least code that does a request/response
//! over quinn — stock `quinn::ServerConfig::with_single_cert` and
//! `ClientConfig::with_root_certificates` (default transport settings), one bidirectional
//! stream per call carrying the raw payload each way (write, FIN, read to the end). No framing,
//! no header, no status, no echo logic: what the transport costs beyond it is the price of the
//! RPC model. The `floor` command measures it beside `quic` in the same run.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use quinn::{Endpoint, crypto::rustls::QuicClientConfig};
use tokio::task::JoinHandle;

use wirebench_core::Yardstick;
use wirebench_core::transport::TransportError;

/// The largest payload the yardstick echoes.
const MAX_PAYLOAD: usize = 16 << 20;
/// The name the throwaway certificate is issued to.
const SERVER_NAME: &str = "localhost";

fn quic_err(what: &str) -> impl Fn(String) -> TransportError + '_ {
    move |e| TransportError::Protocol(format!("quinn yardstick: {what}: {e}"))
}

/// The minimal responder: answers every stream with what it read from it.
#[derive(Debug)]
pub struct BaselineServer {
    endpoint: Endpoint,
    task: JoinHandle<()>,
    /// The throwaway certificate (DER) clients trust.
    cert: Vec<u8>,
}

impl BaselineServer {
    /// Listens on a UDP port of 127.0.0.1 with a throwaway self-signed certificate.
    pub fn start() -> Result<BaselineServer, TransportError> {
        let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| quic_err("certificate")(e.to_string()))?;
        let der = cert.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = quinn::ServerConfig::with_single_cert(vec![der.clone().into()], key)
            .map_err(|e| quic_err("server config")(e.to_string()))?;
        let endpoint = Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| TransportError::io("binding the quinn yardstick", e))?;
        let accepting = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            if let Ok(data) = recv.read_to_end(MAX_PAYLOAD).await {
                                let _ = send.write_all(&data).await;
                                let _ = send.finish();
                            }
                        });
                    }
                });
            }
        });
        Ok(BaselineServer {
            endpoint,
            task,
            cert: der,
        })
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint
            .local_addr()
            .map_err(|e| TransportError::io("the quinn yardstick's address", e))
    }

    /// The certificate a client must trust (DER).
    pub fn certificate(&self) -> Vec<u8> {
        self.cert.clone()
    }

    /// Stops answering and closes the endpoint.
    pub fn stop(self) {
        self.endpoint.close(0u32.into(), b"");
        self.task.abort();
    }
}

/// The minimal requester: one connection, a stream per call.
#[derive(Debug)]
pub struct BaselineClient {
    conn: quinn::Connection,
    _endpoint: Endpoint,
}

impl BaselineClient {
    /// Connects to `addr`, trusting only `cert` (DER).
    pub async fn connect(
        addr: SocketAddr,
        cert: Vec<u8>,
    ) -> Result<BaselineClient, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(cert.into())
            .map_err(|e| quic_err("trusting the certificate")(e.to_string()))?;
        let crypto = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| quic_err("client config")(e.to_string()))?;
        let mut endpoint = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| TransportError::io("binding a UDP socket", e))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| quic_err("connect")(e.to_string()))?
            .await
            .map_err(|e| quic_err("handshake")(e.to_string()))?;
        Ok(BaselineClient {
            conn,
            _endpoint: endpoint,
        })
    }

    /// One request/response round trip: returns the answer.
    pub async fn call(&self, payload: &[u8]) -> Result<Bytes, TransportError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| quic_err("open")(e.to_string()))?;
        send.write_all(payload)
            .await
            .map_err(|e| quic_err("write")(e.to_string()))?;
        let _ = send.finish();
        let data = recv
            .read_to_end(MAX_PAYLOAD)
            .await
            .map_err(|e| quic_err("read")(e.to_string()))?;
        Ok(data.into())
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"");
    }
}

/// The `quic` transport's yardstick (`quinn-min*`): a [`BaselineServer`] and its client.
#[derive(Debug, Default)]
pub struct QuinnYardstick {
    /// The server's throwaway certificate, for the client to trust (set by `serve`).
    cert: OnceLock<Vec<u8>>,
}

impl Yardstick for QuinnYardstick {
    type Server = BaselineServer;
    type Client = BaselineClient;

    fn name(&self) -> &'static str {
        "quinn-min*"
    }

    async fn serve(&self) -> Result<(BaselineServer, String), TransportError> {
        let server = BaselineServer::start()?;
        let addr = server.addr()?;
        let _ = self.cert.set(server.certificate());
        Ok((server, addr.to_string()))
    }

    async fn stop(server: BaselineServer) {
        server.stop();
    }

    async fn connect(&self, endpoint: &str) -> Result<BaselineClient, TransportError> {
        let addr = wirebench_core::transport::parse_socket_addr(endpoint)?;
        let cert = self.cert.get().cloned().unwrap_or_default();
        BaselineClient::connect(addr, cert).await
    }

    async fn call(client: &BaselineClient, payload: Bytes) -> Result<(), TransportError> {
        client.call(&payload).await.map(drop)
    }

    async fn close(client: BaselineClient) {
        client.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn echoes_every_payload_on_streams_of_one_connection() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let server = BaselineServer::start().unwrap();
            let client = BaselineClient::connect(server.addr().unwrap(), server.certificate())
                .await
                .unwrap();
            for n in [0usize, 1, 64, 70_000, 1 << 20] {
                let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                assert_eq!(client.call(&payload).await.unwrap(), payload, "{n} bytes");
            }
            client.close();
            server.stop();
        })
        .await
        .expect("the quinn yardstick did not answer within 20 s");
    }

    #[tokio::test]
    async fn refuses_a_server_it_does_not_trust() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let server = BaselineServer::start().unwrap();
            let other = BaselineServer::start().unwrap();
            let e = BaselineClient::connect(server.addr().unwrap(), other.certificate())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("handshake"), "{e}");
        })
        .await
        .expect("the handshake did not end within 20 s");
    }
}
