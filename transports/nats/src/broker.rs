//! Running `nats-server` for tests and the harness ([`NatsProcess`], over
//! `wirebench-brokerproc`): on an ephemeral loopback port with JetStream in its temporary
//! directory, restartable in place (same port, same storage).
//!
//! Readiness is read from the broker's own log (`Listening for client connections on ADDR`,
//! then `Server is ready`), then confirmed by connecting and reading its `INFO` line; port 0
//! asks nats-server for a free port itself (`port: -1`), so the first start has no bind race.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use wirebench_brokerproc::{BrokerProcess, Launch, LogLine, ProbeError, Program, Recipe};
use wirebench_core::broker::BrokerError;

/// The broker program: `nats-server`, or what `WIREBENCH_NATS_SERVER` names.
pub const PROGRAM: Program = Program {
    name: "nats-server",
    env: "WIREBENCH_NATS_SERVER",
    install_hint: "install it (`apt-get install -y nats-server`), set WIREBENCH_NATS_SERVER to \
                   its path, or pass --broker-url nats://HOST:PORT to use a running broker",
};
/// Largest message a private broker accepts: 8 MiB (nats-server's default is 1 MiB), so the
/// RPC model's default 4 MiB message limit fits with its headers.
pub const MAX_PAYLOAD: usize = 8 << 20;

/// A `nats-server` this process runs.
pub type NatsProcess = BrokerProcess<NatsServer>;

/// How to run `nats-server`: JetStream on, storage in the process's directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct NatsServer;

/// Finds `nats-server` (see [`Program::locate`]).
pub fn locate() -> Result<PathBuf, BrokerError> {
    PROGRAM.locate()
}

/// Starts a private `nats-server` on `bind` (port 0: any free port).
pub async fn start(bind: SocketAddr) -> Result<NatsProcess, BrokerError> {
    BrokerProcess::start(NatsServer, bind).await
}

impl Recipe for NatsServer {
    const PROGRAM: Program = PROGRAM;
    const SCHEME: &'static str = "nats";
    const DIR_PREFIX: &'static str = "wirebench-nats-";

    fn launch(&self, dir: &Path, addr: SocketAddr) -> Result<Launch, BrokerError> {
        let store = dir.join("jetstream");
        let store = store.to_str().filter(|s| !s.contains(['"', '\\', '\n']));
        let Some(store) = store else {
            return Err(BrokerError::Config(format!(
                "temporary directory {} cannot be written into a nats-server config",
                dir.display()
            )));
        };
        // Port 0 means "any free port": nats-server's own spelling of that is -1.
        let port: i32 = if addr.port() == 0 {
            -1
        } else {
            i32::from(addr.port())
        };
        let config = format!(
            "# written by wirebench for one private broker\n\
             host: \"{}\"\nport: {port}\nmax_payload: {MAX_PAYLOAD}\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n",
            addr.ip()
        );
        let path = dir.join("nats-server.conf");
        std::fs::write(&path, config)
            .map_err(|e| BrokerError::io(format!("writing {}", path.display()), e))?;
        Ok(Launch {
            args: vec!["-c".into(), path.into_os_string()],
            addr: None,
        })
    }

    fn read_line(&self, line: &str) -> Option<LogLine> {
        if let Some((_, addr)) = line.split_once("Listening for client connections on ") {
            return addr.trim().parse().ok().map(LogLine::Listening);
        }
        line.contains("Server is ready").then_some(LogLine::Ready)
    }

    /// Connects and reads nats-server's `INFO` greeting.
    async fn probe(&self, addr: SocketAddr) -> Result<(), ProbeError> {
        const WITHIN: Duration = Duration::from_secs(5);
        let check = async {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(ProbeError::Connect)?;
            let mut head = [0u8; 5];
            s.read_exact(&mut head).await.map_err(ProbeError::Read)?;
            if &head == b"INFO " {
                Ok(())
            } else {
                Err(ProbeError::Greeting {
                    got: head.to_vec(),
                    expected: "INFO ",
                })
            }
        };
        tokio::time::timeout(WITHIN, check)
            .await
            .map_err(|_| ProbeError::Timeout(WITHIN))?
    }
}

#[cfg(test)]
mod tests {
    use wirebench_core::broker::RestartMode;

    use super::*;

    fn available() -> bool {
        match locate() {
            Ok(_) => true,
            Err(e) => {
                // CI must run these tests: there a missing server is a failure.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set and nats-server is missing: {e}"
                );
                eprintln!("skipped: {e}");
                false
            }
        }
    }

    #[test]
    fn the_install_hint_names_the_package() {
        assert!(
            PROGRAM
                .install_hint
                .contains("apt-get install -y nats-server")
        );
    }

    #[test]
    fn log_lines_say_where_and_when() {
        let r = NatsServer;
        assert_eq!(
            r.read_line("[1] [INF] Listening for client connections on 127.0.0.1:4222"),
            Some(LogLine::Listening("127.0.0.1:4222".parse().unwrap()))
        );
        assert_eq!(
            r.read_line("[1] [INF] Server is ready"),
            Some(LogLine::Ready)
        );
        assert_eq!(r.read_line("[1] [INF] Starting nats-server"), None);
    }

    #[tokio::test]
    async fn a_real_broker_starts_on_a_free_port_and_restarts_there() {
        if !available() {
            return;
        }
        let mut p = tokio::time::timeout(
            Duration::from_secs(30),
            start("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        let addr = p.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(p.url(), format!("nats://{addr}"));
        NatsServer.probe(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), p.restart(RestartMode::Kill))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.addr(), addr, "a restart keeps the address");
        NatsServer.probe(addr).await.unwrap();
        p.stop().await;
    }
}
