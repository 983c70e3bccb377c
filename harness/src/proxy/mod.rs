//! The userspace fault proxy: sits between a client and a server and impairs the bytes that
//! pass (these machines have no kernel netem). This is its TCP core with the slicer; other
//! faults plug into [`Pipe`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wirebench_scenarios::conformance::{BoxFuture, FaultInjector, FaultPath};

/// What happens to the bytes of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pipe {
    /// Forward in writes of at most this many bytes, each flushed on its own.
    pub slice: Option<usize>,
    /// Pause between slices.
    pub slice_pause: Duration,
}

/// A running TCP proxy: one listener, one upstream, a pipe per direction.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub async fn start(
        upstream: SocketAddr,
        to_server: Pipe,
        to_client: Pipe,
    ) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = async {
                            tokio::join!(pump(cr, sw, to_server), pump(sr, cw, to_client))
                        } => {}
                    }
                });
            }
        });
        Ok(TcpProxy { addr, stop })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies one direction through its pipe until EOF, then half-closes the other side.
async fn pump(mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf, pipe: Pipe) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = pipe.slice.unwrap_or(n).max(1);
        for part in buf[..n].chunks(chunk) {
            if wr.write_all(part).await.is_err() {
                return;
            }
            if pipe.slice.is_some() && !pipe.slice_pause.is_zero() {
                tokio::time::sleep(pipe.slice_pause).await;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// The harness's [`FaultInjector`] for conformance cases.
#[derive(Clone, Copy, Debug, Default)]
pub struct HarnessFaults;

impl HarnessFaults {
    /// As the trait object conformance cases take.
    pub fn shared() -> Arc<dyn FaultInjector> {
        Arc::new(HarnessFaults)
    }
}

impl FaultInjector for HarnessFaults {
    fn sliced(
        &self,
        upstream: SocketAddr,
        chunk: usize,
        pause: Duration,
    ) -> BoxFuture<'_, std::io::Result<FaultPath>> {
        Box::pin(async move {
            let pipe = Pipe {
                slice: Some(chunk),
                slice_pause: pause,
            };
            let proxy = TcpProxy::start(upstream, pipe, pipe).await?;
            Ok(FaultPath {
                endpoint: proxy.local_addr().to_string(),
                guard: Box::new(proxy),
            })
        })
    }
}
