//! Running Debian's mosquitto as an *external* MQTT broker for tests and measurements: find the
//! program, start it on a free loopback port with a private config (`allow_anonymous true`,
//! `set_tcp_nodelay true`), wait until it serves, and stop it when dropped.
//!
//! mosquitto cannot bind port 0 and report the port, so a free port is found first (bind
//! port 0, read it, release it); a start that loses the port to another process in between
//! is retried. Readiness is mosquitto's own log line (`mosquitto version ... running`),
//! confirmed by a TCP connect.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wirebench_brokerrpc::Program;
use wirebench_core::broker::BrokerError;

/// The broker program: `mosquitto`, or what `WIREBENCH_MOSQUITTO` names.
pub const PROGRAM: Program = Program {
    name: "mosquitto",
    env: "WIREBENCH_MOSQUITTO",
    install_hint: "install it (`apt-get install -y mosquitto`) or set WIREBENCH_MOSQUITTO to its \
                   path",
};
/// How long mosquitto may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a free port.
const ATTEMPTS: usize = 3;

/// Finds mosquitto (see [`Program::locate`]).
pub fn locate() -> Result<PathBuf, BrokerError> {
    PROGRAM.locate()
}

/// A running mosquitto, killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free loopback port and waits until it serves. Blocking: call it
    /// outside async code (or through `spawn_blocking`).
    pub fn start() -> Result<Mosquitto, BrokerError> {
        let program = locate()?;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match launch(&program) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    let lost_port = matches!(&e, BrokerError::Start { log, .. }
                        if log.contains("Address already in use"));
                    if !lost_port {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| BrokerError::Start {
            reason: "mosquitto did not start".into(),
            log: String::new(),
        }))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, BrokerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BrokerError::io("finding a free port for mosquitto", e))
}

fn launch(program: &Path) -> Result<Mosquitto, BrokerError> {
    let port = free_port()?;
    let dir =
        tempfile::tempdir().map_err(|e| BrokerError::io("creating mosquitto's directory", e))?;
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "# written by wirebench for one test broker\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             set_tcp_nodelay true\n\
             log_dest stderr\n"
        ),
    )
    .map_err(|e| BrokerError::io(format!("writing {}", config.display()), e))?;
    let mut child = Command::new(program)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BrokerError::io(format!("starting {}", program.display()), e))?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(BrokerError::Start {
            reason: "mosquitto's stderr was not set up".into(),
            log: String::new(),
        });
    };
    // The log is read on a thread: readiness, then drained so mosquitto never blocks on it.
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let ready = loop {
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                let running = line.contains(" running");
                log.push(line);
                if running {
                    break true;
                }
            }
            // Timed out, or the log ended (mosquitto exited).
            Err(_) => break false,
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !ready || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        let _ = child.kill();
        let status = child.wait().ok();
        // What mosquitto said after the last line read.
        log.extend(rx.try_iter());
        return Err(BrokerError::Start {
            reason: format!(
                "{} did not serve on {addr} within {READY_TIMEOUT:?} ({})",
                program.display(),
                status.map_or("still running".into(), |s| s.to_string())
            ),
            log: log.join("\n"),
        });
    }
    Ok(Mosquitto {
        child,
        addr,
        _dir: dir,
    })
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
}
