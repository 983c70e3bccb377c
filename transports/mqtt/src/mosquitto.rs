//! Running Debian's mosquitto as an *external* MQTT broker for tests and measurements
//! ([`Mosquitto`], over `wirebench-brokerproc`): on a free loopback port with a private config
//! (`allow_anonymous true`, `set_tcp_nodelay true`), killed when dropped.
//!
//! mosquitto cannot bind port 0 and report the port, so a free port is found first (bind
//! port 0, read it, release it); a start that loses the port to another process in between is
//! retried. Readiness is mosquitto's own log line (`mosquitto version ... running`), confirmed
//! by a TCP connect.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wirebench_brokerproc::{BrokerProcess, Launch, LogLine, ProbeError, Program, Recipe};
use wirebench_core::broker::BrokerError;

/// The broker program: `mosquitto`, or what `WIREBENCH_MOSQUITTO` names.
pub const PROGRAM: Program = Program {
    name: "mosquitto",
    env: "WIREBENCH_MOSQUITTO",
    install_hint: "install it (`apt-get install -y mosquitto`) or set WIREBENCH_MOSQUITTO to its \
                   path",
};

/// A mosquitto this process runs.
pub type Mosquitto = BrokerProcess<MosquittoBroker>;

/// How to run mosquitto: anonymous clients, `TCP_NODELAY`, log to stderr.
#[derive(Clone, Copy, Debug, Default)]
pub struct MosquittoBroker;

/// Finds mosquitto (see [`Program::locate`]).
pub fn locate() -> Result<PathBuf, BrokerError> {
    PROGRAM.locate()
}

/// Starts mosquitto on a free loopback port and returns once it serves.
pub async fn start() -> Result<Mosquitto, BrokerError> {
    BrokerProcess::start(MosquittoBroker, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

fn free_port() -> Result<u16, BrokerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BrokerError::io("finding a free port for mosquitto", e))
}

impl Recipe for MosquittoBroker {
    const PROGRAM: Program = PROGRAM;
    const SCHEME: &'static str = "mqtt";
    const DIR_PREFIX: &'static str = "wirebench-mosquitto-";

    fn launch(&self, dir: &Path, addr: SocketAddr) -> Result<Launch, BrokerError> {
        let port = match addr.port() {
            0 => free_port()?,
            p => p,
        };
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "# written by wirebench for one test broker\n\
                 listener {port} {}\n\
                 allow_anonymous true\n\
                 set_tcp_nodelay true\n\
                 log_dest stderr\n",
                addr.ip()
            ),
        )
        .map_err(|e| BrokerError::io(format!("writing {}", config.display()), e))?;
        Ok(Launch {
            args: vec!["-c".into(), config.into_os_string()],
            addr: Some(SocketAddr::new(addr.ip(), port)),
        })
    }

    fn read_line(&self, line: &str) -> Option<LogLine> {
        line.contains(" running").then_some(LogLine::Ready)
    }

    async fn probe(&self, addr: SocketAddr) -> Result<(), ProbeError> {
        const WITHIN: Duration = Duration::from_secs(2);
        tokio::time::timeout(WITHIN, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| ProbeError::Timeout(WITHIN))?
            .map(drop)
            .map_err(ProbeError::Connect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_hint_names_the_package() {
        assert!(
            PROGRAM
                .install_hint
                .contains("apt-get install -y mosquitto")
        );
    }

    #[test]
    fn the_running_line_means_ready() {
        let r = MosquittoBroker;
        assert_eq!(
            r.read_line("1700000000: mosquitto version 2.0.11 running"),
            Some(LogLine::Ready)
        );
        assert_eq!(r.read_line("1700000000: Config loaded from x."), None);
    }
}
