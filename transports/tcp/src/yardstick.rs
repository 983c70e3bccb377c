//! The yardstick for `tcp`: the floor's ping-pong with tokio on both sides (a `TCP_NODELAY`
//! socket, no framing, no codec). Its gap to the blocking floor is what an async runtime alone
//! costs (epoll instead of a blocking read, the scheduler), so `tcp*` beside it shows what the
//! transport itself adds.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wirebench_core::{TransportError, Yardstick};

/// A tokio ping-pong of `payload` bytes each way (at least one, as the floor sends).
#[derive(Clone, Copy, Debug)]
pub struct TokioPingPong {
    payload: usize,
}

impl TokioPingPong {
    /// A ping-pong of `payload` bytes.
    pub fn new(payload: usize) -> TokioPingPong {
        TokioPingPong {
            payload: payload.max(1),
        }
    }
}

/// A client: one socket and its read buffer (one call at a time).
#[derive(Debug)]
pub struct PingPongClient(tokio::sync::Mutex<(TcpStream, Vec<u8>)>);

impl Yardstick for TokioPingPong {
    type Server = tokio::task::AbortHandle;
    type Client = PingPongClient;

    fn name(&self) -> &'static str {
        "tokio-min*"
    }

    async fn serve(&self) -> Result<(Self::Server, String), TransportError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| TransportError::io("binding the tokio ping-pong listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TransportError::io("reading the ping-pong's address", e))?;
        let payload = self.payload;
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; payload];
                    while s.read_exact(&mut buf).await.is_ok() {
                        if s.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok((task.abort_handle(), addr.to_string()))
    }

    async fn stop(server: Self::Server) {
        server.abort();
    }

    async fn connect(&self, endpoint: &str) -> Result<PingPongClient, TransportError> {
        let s = TcpStream::connect(endpoint)
            .await
            .map_err(|e| TransportError::io(format!("connecting to {endpoint}"), e))?;
        s.set_nodelay(true)
            .map_err(|e| TransportError::io("setting TCP_NODELAY", e))?;
        Ok(PingPongClient(tokio::sync::Mutex::new((
            s,
            vec![0u8; self.payload],
        ))))
    }

    async fn call(client: &PingPongClient, payload: Bytes) -> Result<(), TransportError> {
        let mut guard = client.0.lock().await;
        let (s, buf) = &mut *guard;
        // The floor sends at least one byte; so does its yardstick.
        let out: &[u8] = if payload.is_empty() {
            &[0x5a]
        } else {
            &payload
        };
        let n = out.len().min(buf.len());
        s.write_all(&out[..n])
            .await
            .map_err(|e| TransportError::io("ping", e))?;
        s.read_exact(&mut buf[..n])
            .await
            .map_err(|e| TransportError::io("pong", e))?;
        Ok(())
    }

    async fn close(_client: PingPongClient) {}
}
