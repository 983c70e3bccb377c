//! Shared pieces of wirebench's criterion benchmarks (`benches/benches/*.rs`; run them with
//! `cargo bench` from the workspace root): an echo server on a thread of its own, so the
//! client's measured loop never shares a runtime with the server; and the codec comparison
//! ([`codecs`]) shared by the `codecs` bench and its tests (content checks, bytes on the wire).

pub mod codecs;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use wirebench_core::{Echo, Server, ServerConfig, Transport, TransportError};
use wirebench_transports::registry::AnyTransport;

/// Why a bench server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its thread or runtime could not be created.
    #[error("starting the server's thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The transport refused to serve (not built, not supported here, no port...).
    #[error(transparent)]
    Serve(#[from] TransportError),
    /// The thread ended before it said the server was ready.
    #[error("the server's thread ended before it was ready")]
    Died,
}

/// A server running on its own thread and current-thread runtime until dropped.
#[derive(Debug)]
pub struct BenchServer {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BenchServer {
    /// Starts `transport`'s server, or says why it cannot run here.
    pub fn start(transport: AnyTransport) -> Result<BenchServer, StartError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("bench-{}-server", transport.name()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match transport
                        .serve(&ServerConfig::loopback(), Arc::new(Echo::default()))
                        .await
                    {
                        Ok(server) => {
                            let _ = ready_tx.send(Ok(server.endpoint()));
                            let _ = stop_rx.await;
                            server.shutdown().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Serve(e)));
                        }
                    }
                });
            })
            .map_err(StartError::Thread)?;
        let endpoint = ready_rx.recv().map_err(|_| StartError::Died)??;
        Ok(BenchServer {
            endpoint,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A single-threaded runtime for the measuring side.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"))
}
