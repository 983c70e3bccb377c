//! The yardstick for the `grpc` transport's speed: the least code that does a gRPC unary echo
//! with tonic — the stock generated server (`proto/yardstick.proto`) on
//! `tonic::transport::Server`, called through the stock generated client on a
//! `tonic::transport::Channel`, default settings on both. No metadata, no deadlines, no echo
//! logic: what the transport costs beyond it is the price of the RPC model (and of driving h2
//! ourselves). The `floor` command measures it beside `grpc` in the same run.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use wirebench_core::transport::{TransportError, parse_socket_addr};

/// Code generated from `proto/yardstick.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("wirebench.yardstick.v1");
}

use proto::Blob;
use proto::yardstick_client::YardstickClient;
use proto::yardstick_server::{Yardstick as YardstickService, YardstickServer};

/// The service: answers with the request's payload.
#[derive(Debug, Default)]
struct EchoBlob;

#[tonic::async_trait]
impl YardstickService for EchoBlob {
    async fn echo(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

fn grpc_err(what: &str) -> impl Fn(String) -> TransportError + '_ {
    move |e| TransportError::Protocol(format!("tonic yardstick: {what}: {e}"))
}

/// The minimal server.
#[derive(Debug)]
pub struct BaselineServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl BaselineServer {
    /// Listens on a TCP port of 127.0.0.1 (`TCP_NODELAY`, as tonic's own `serve` sets).
    pub fn start() -> Result<BaselineServer, TransportError> {
        let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| TransportError::io("binding the tonic yardstick", e))?
            .with_nodelay(Some(true));
        let addr = incoming
            .local_addr()
            .map_err(|e| TransportError::io("the tonic yardstick's address", e))?;
        let task = tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .serve_with_incoming(YardstickServer::new(EchoBlob), incoming)
                .await
            {
                tracing::warn!("tonic yardstick server: {e}");
            }
        });
        Ok(BaselineServer { addr, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The minimal client: one channel (one HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct BaselineClient {
    client: YardstickClient<tonic::transport::Channel>,
}

impl BaselineClient {
    /// Connects to `addr` over plaintext HTTP/2.
    pub async fn connect(addr: SocketAddr) -> Result<BaselineClient, TransportError> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| grpc_err("endpoint")(e.to_string()))?
            .connect()
            .await
            .map_err(|e| grpc_err("connect")(e.to_string()))?;
        Ok(BaselineClient {
            client: YardstickClient::new(channel),
        })
    }

    /// One unary call: returns the answer's payload.
    pub async fn call(&self, payload: Bytes) -> Result<Bytes, TransportError> {
        // A clone per call is how the generated client is used concurrently (it is cheap:
        // the channel is a handle).
        let mut client = self.client.clone();
        let reply = client
            .echo(Blob { payload })
            .await
            .map_err(|e| grpc_err("call")(e.to_string()))?;
        Ok(reply.into_inner().payload)
    }
}

/// The `grpc` transport's yardstick (`tonic-min*`): a [`BaselineServer`] and its client.
#[derive(Clone, Copy, Debug, Default)]
pub struct TonicYardstick;

impl wirebench_core::Yardstick for TonicYardstick {
    type Server = BaselineServer;
    type Client = BaselineClient;

    fn name(&self) -> &'static str {
        "tonic-min*"
    }

    async fn serve(&self) -> Result<(BaselineServer, String), TransportError> {
        let server = BaselineServer::start()?;
        let addr = server.addr();
        Ok((server, addr.to_string()))
    }

    async fn stop(server: BaselineServer) {
        server.stop();
    }

    async fn connect(&self, endpoint: &str) -> Result<BaselineClient, TransportError> {
        BaselineClient::connect(parse_socket_addr(endpoint)?).await
    }

    async fn call(client: &BaselineClient, payload: Bytes) -> Result<(), TransportError> {
        client.call(payload).await.map(drop)
    }

    async fn close(_client: BaselineClient) {}
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn echoes_every_payload() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let server = BaselineServer::start().unwrap();
            let client = BaselineClient::connect(server.addr()).await.unwrap();
            for n in [0usize, 1, 64, 70_000, 1 << 20] {
                let payload: Bytes = (0..n).map(|i| (i % 251) as u8).collect();
                assert_eq!(
                    client.call(payload.clone()).await.unwrap(),
                    payload,
                    "{n} bytes"
                );
            }
            server.stop();
        })
        .await
        .expect("the tonic yardstick did not answer within 20 s");
    }
}
