//! Server child processes: the harness spawns `wirebench serve` (or a user's own server
//! command), waits for its ready line, and always reaps it — on success, on error, and when
//! the harness dies (the child watches its stdin, a pipe only the harness holds).
//!
//! The ready line is one JSON object on stdout:
//! `{"transport":"tcp","endpoint":"127.0.0.1:40123","pid":4242}`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wirebench_tls::TlsMode;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How long a stopped server child may take to exit after SIGTERM before it gets SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(2);
/// The drain grace a child started by `ServerCommand::Serve` gets: calls still running after it
/// are cut (UNAVAILABLE) and the child exits, well inside `KILL_AFTER`.
const DRAIN_GRACE: Duration = Duration::from_millis(1500);

/// The line a server prints on stdout once it accepts connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// The transport it serves.
    pub transport: String,
    /// Where to connect.
    pub endpoint: String,
    /// Its process id.
    pub pid: u32,
}

/// Why a server child could not be used.
#[derive(Debug, Error)]
pub enum ChildError {
    /// The process could not be started.
    #[error("cannot start server `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It did not print its ready line in time.
    #[error("server `{command}` did not become ready within {timeout:?}{tail}")]
    NotReady {
        /// The command.
        command: String,
        /// How long we waited.
        timeout: Duration,
        /// The last lines of its stderr, if any.
        tail: String,
    },
    /// It exited before becoming ready.
    #[error("server `{command}` exited before becoming ready ({status}){tail}")]
    Exited {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// Its exit code, when it exited rather than died of a signal.
        code: Option<i32>,
        /// The last lines of its stderr, if any.
        tail: String,
    },
    /// Its first line was not a ready line.
    #[error("server `{command}` printed {line:?} instead of its ready line ({reason})")]
    BadReady {
        /// The command.
        command: String,
        /// What it printed.
        line: String,
        /// Why that is not a ready line.
        reason: String,
    },
}

/// How to start a server child.
#[derive(Clone, Debug)]
pub enum ServerCommand {
    /// This executable's `serve` subcommand.
    Serve {
        /// The transport.
        transport: String,
        /// Where it listens (`--listen`; `127.0.0.1:0` picks a free port).
        listen: String,
        /// Server options (`--option KEY=VALUE`).
        options: BTreeMap<String, String>,
        /// Runtime threads (`--threads`).
        threads: Option<u32>,
        /// CPU to pin the server to (`--cpus`).
        cpu: Option<usize>,
        /// TLS mode and the directory of PEM files (`--tls`, `--tls-dir`).
        tls: Option<(TlsMode, PathBuf)>,
    },
    /// A user's command, run by `/bin/sh -c`; it must print the ready line. It gets
    /// `WIREBENCH_TRANSPORT` and `WIREBENCH_LISTEN` in its environment, and for a TLS point
    /// `WIREBENCH_TLS` (`tls` or `mtls`) and `WIREBENCH_TLS_DIR` (`ca.pem`, `server.pem`,
    /// `server.key`: the certificates the client trusts).
    Shell {
        /// The command line.
        command: String,
        /// The transport it serves.
        transport: String,
        /// TLS mode and the directory of PEM files.
        tls: Option<(TlsMode, PathBuf)>,
    },
}

impl ServerCommand {
    fn build(&self) -> std::io::Result<(Command, String)> {
        match self {
            ServerCommand::Serve {
                transport,
                listen,
                options,
                threads,
                cpu,
                tls,
            } => {
                let exe = std::env::current_exe()?;
                let mut c = Command::new(&exe);
                c.args(["serve", "--transport", transport, "--listen", listen]);
                c.arg("--watch-stdin");
                // Its SIGTERM drain must end before `terminate`'s SIGKILL would.
                c.arg("--drain-grace")
                    .arg(format!("{}ms", DRAIN_GRACE.as_millis()));
                for (k, v) in options {
                    c.arg("--option").arg(format!("{k}={v}"));
                }
                if let Some(t) = threads {
                    c.arg("--threads").arg(t.to_string());
                }
                if let Some(cpu) = cpu {
                    c.arg("--cpus").arg(cpu.to_string());
                }
                if let Some((mode, dir)) = tls {
                    c.arg("--tls").arg(mode.name()).arg("--tls-dir").arg(dir);
                }
                let shown = match tls {
                    Some((mode, _)) => {
                        format!("wirebench serve --transport {transport} --tls {mode}")
                    }
                    None => format!("wirebench serve --transport {transport}"),
                };
                Ok((c, shown))
            }
            ServerCommand::Shell {
                command,
                transport,
                tls,
            } => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(command);
                c.env("WIREBENCH_TRANSPORT", transport);
                c.env("WIREBENCH_LISTEN", "127.0.0.1:0");
                if let Some((mode, dir)) = tls {
                    c.env("WIREBENCH_TLS", mode.name())
                        .env("WIREBENCH_TLS_DIR", dir);
                }
                Ok((c, command.clone()))
            }
        }
    }
}

/// A running server child; killed (its whole process group) when dropped.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    /// Held only to be closed: the child exits when it reads EOF.
    _stdin: Option<ChildStdin>,
    /// What it reported.
    pub ready: ReadyLine,
    command: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

const TAIL_LINES: usize = 20;

fn tail_text(stderr: &Mutex<VecDeque<String>>) -> String {
    let lines = stderr.lock().map(|l| l.clone()).unwrap_or_default();
    if lines.is_empty() {
        String::new()
    } else {
        format!(
            "; its stderr ends: {}",
            lines.into_iter().collect::<Vec<_>>().join(" | ")
        )
    }
}

impl ChildServer {
    /// Starts the server and waits up to `timeout` for its ready line.
    pub fn spawn(cmd: &ServerCommand, timeout: Duration) -> Result<ChildServer, ChildError> {
        let (mut command, shown) = cmd.build().map_err(|source| ChildError::Spawn {
            command: format!("{cmd:?}"),
            source,
        })?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the terminal's Ctrl-C reaches only the harness, which
            // then stops the whole group; a shell command's children go with it.
            .process_group(0);
        let mut child = command.spawn().map_err(|source| ChildError::Spawn {
            command: shown.clone(),
            source,
        })?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            let _ = std::thread::Builder::new()
                .name("wb-child-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        tracing::debug!(target: "server", "{line}");
                        if let Ok(mut t) = tail.lock() {
                            if t.len() == TAIL_LINES {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let _ = std::thread::Builder::new()
                .name("wb-child-stdout".into())
                .spawn(move || {
                    let mut lines = BufReader::new(out).lines();
                    let first = lines.next();
                    let _ = tx.send(first);
                    // Keep draining so the child never blocks on a full pipe.
                    for line in lines.map_while(Result::ok) {
                        tracing::debug!(target: "server", "{line}");
                    }
                });
        }
        let stdin = child.stdin.take();
        let mut server = ChildServer {
            child,
            _stdin: stdin,
            ready: ReadyLine {
                transport: String::new(),
                endpoint: String::new(),
                pid: 0,
            },
            command: shown.clone(),
            stderr: stderr_tail,
        };
        let deadline = Instant::now() + timeout;
        let first = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => break line,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        return Err(ChildError::Exited {
                            command: shown,
                            status: status.to_string(),
                            code: status.code(),
                            tail: server.stderr_tail_after_exit(),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(ChildError::NotReady {
                            command: shown,
                            timeout,
                            tail: tail_text(&server.stderr),
                        });
                    }
                }
            }
        };
        let line = match first {
            Some(Ok(line)) => line,
            _ => {
                let waited = server.child.wait();
                return Err(ChildError::Exited {
                    command: shown,
                    status: waited
                        .as_ref()
                        .map_or_else(|e| e.to_string(), |s| s.to_string()),
                    code: waited.ok().and_then(|s| s.code()),
                    tail: server.stderr_tail_after_exit(),
                });
            }
        };
        let ready: ReadyLine =
            serde_json::from_str(line.trim()).map_err(|e| ChildError::BadReady {
                command: shown.clone(),
                line: line.clone(),
                reason: format!("expected {{\"transport\":..,\"endpoint\":..,\"pid\":..}}: {e}"),
            })?;
        server.ready = ready;
        Ok(server)
    }

    /// The stderr tail once the process is gone (its reader thread may lag a moment).
    fn stderr_tail_after_exit(&self) -> String {
        // The pipe closes when the process exits; give the reader thread a moment to take
        // the last lines (bounded, only on this error path).
        for _ in 0..20 {
            if self.stderr.lock().map(|t| !t.is_empty()).unwrap_or(true) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tail_text(&self.stderr)
    }

    /// The process id to read `/proc` from: the one it reported (a shell command may `exec`
    /// or fork), else the spawned one.
    pub fn pid(&self) -> u32 {
        if self.ready.pid != 0 {
            self.ready.pid
        } else {
            self.child.id()
        }
    }

    /// The command as shown to users.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Stops the server: SIGTERM to its process group, SIGKILL after a grace period.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pgid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + KILL_AFTER;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone(pid: u32) -> bool {
        // Reaped: no /proc entry (a zombie would still have one).
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn a_ready_server_is_killed_with_its_group_on_drop() {
        // The shell prints a ready line, then its child (sleep) holds the group open.
        let cmd = ServerCommand::Shell {
            command: "echo '{\"transport\":\"tcp\",\"endpoint\":\"127.0.0.1:9\",\"pid\":0}'; \
                      sleep 30 & wait"
                .into(),
            transport: "tcp".into(),
            tls: None,
        };
        let server = ChildServer::spawn(&cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(server.ready.endpoint, "127.0.0.1:9");
        let pid = server.pid();
        assert!(!gone(pid));
        let tasks =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        drop(server);
        assert!(gone(pid), "the server process was reaped");
        for child in tasks.split_whitespace() {
            let path = format!("/proc/{child}/stat");
            // The group's other members got the signal too. Delivery is asynchronous: a member
            // may still be running its way out (state R) just after the leader was reaped, and
            // linger as a zombie of init for a moment; a `sleep` that missed the signal would
            // stay in state S. So: gone or dead within a bound, never still sleeping.
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let stat = std::fs::read_to_string(&path).unwrap_or_default();
                if !stat.contains(") S ") && !stat.contains(") R ") {
                    break;
                }
                assert!(Instant::now() < until, "group member still running: {stat}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn never_ready_and_early_exit_are_errors_and_reaped() {
        let cmd = ServerCommand::Shell {
            command: "sleep 30".into(),
            transport: "tcp".into(),
            tls: None,
        };
        let e = ChildServer::spawn(&cmd, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ChildError::NotReady { .. }), "{e}");
        let cmd = ServerCommand::Shell {
            command: "echo broken >&2; exit 4".into(),
            transport: "tcp".into(),
            tls: None,
        };
        let e = ChildServer::spawn(&cmd, Duration::from_secs(10)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("exited before becoming ready"), "{text}");
        assert!(text.contains("broken"), "stderr tail is shown: {text}");
        let cmd = ServerCommand::Shell {
            command: "echo hello".into(),
            transport: "tcp".into(),
            tls: None,
        };
        let e = ChildServer::spawn(&cmd, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, ChildError::BadReady { .. }), "{e}");
    }
}
