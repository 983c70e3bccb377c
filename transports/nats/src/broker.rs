//! Running `nats-server` for tests and the harness: find the program, start it on an
//! ephemeral loopback port with JetStream in a temporary directory, wait until it accepts
//! connections, restart it in place (same port, same storage), and stop it.
//!
//! No broker outlives its owner: dropping a [`NatsProcess`] kills it, and a watchdog kills it
//! if this process dies without dropping it (a SIGKILLed test binary, say). The watchdog is a
//! `sh` parent holding a pipe whose other end only this process holds: when that end closes,
//! for whatever reason, the shell kills the broker. No `unsafe` (`pre_exec`) is needed, and
//! unlike `PR_SET_PDEATHSIG` it does not fire when merely the spawning *thread* ends.
//!
//! Readiness is read from the broker's own log (`Listening for client connections on ADDR`,
//! then `Server is ready`), then confirmed by connecting and reading its `INFO` line; port 0
//! asks nats-server for a free port itself (`port: -1`), so the first start has no bind race.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use wirebench_brokerrpc::Program;
use wirebench_core::broker::{BrokerError, RestartMode};

/// The broker program: `nats-server`, or what `WIREBENCH_NATS_SERVER` names.
pub const PROGRAM: Program = Program {
    name: "nats-server",
    env: "WIREBENCH_NATS_SERVER",
    install_hint: "install it (`apt-get install -y nats-server`), set WIREBENCH_NATS_SERVER to \
                   its path, or pass --broker-url nats://HOST:PORT to use a running broker",
};
/// How long a broker may take to become ready (JetStream recovers its storage first).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept for error messages.
const LOG_LINES: usize = 40;
/// Largest message a private broker accepts: 8 MiB (nats-server's default is 1 MiB), so the
/// RPC model's default 4 MiB message limit fits with its headers.
pub const MAX_PAYLOAD: usize = 8 << 20;

/// The watchdog: runs the broker as its child, prints the broker's pid, kills the broker when
/// stdin (fd 3 here) reaches EOF, and exits with the broker's status.
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null 3<&- 2>&1 &
b=$!
echo "wirebench-nats-pid $b"
{ read -r _ <&3; kill -KILL "$b" 2>/dev/null; } &
w=$!
exec 3<&-
wait "$b"
s=$?
kill "$w" 2>/dev/null
exit $s
"#;

/// Finds `nats-server` (see [`Program::locate`]).
pub fn locate() -> Result<PathBuf, BrokerError> {
    PROGRAM.locate()
}

/// Prefix of the brokers' temporary directories.
const DIR_PREFIX: &str = "wirebench-nats-";
/// The file in a broker directory naming the pid of the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Removes broker directories left by processes that died without cleaning up (best effort;
/// a directory whose owner is alive, or unknown, is left alone).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        // ESRCH: no such process. Anything else (alive, or not ours to signal) keeps it.
        if let Some(pid) = owner
            && kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The last lines a broker logged, shared with the task that drains its output.
type LogTail = Arc<Mutex<VecDeque<String>>>;

fn tail_text(log: &LogTail) -> String {
    log.lock()
        .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// What the broker's output told us while it started.
#[derive(Debug)]
enum Started {
    Pid(i32),
    Listening(SocketAddr),
    Ready,
}

/// A running broker process and its watchdog.
#[derive(Debug)]
struct Running {
    /// The watchdog shell (the broker's parent).
    shell: Child,
    /// Our end of the watchdog's pipe: dropping it makes the watchdog kill the broker.
    _lifeline: ChildStdin,
    /// The broker's pid.
    pid: Pid,
}

/// A `nats-server` this process runs, with JetStream storage in a temporary directory.
#[derive(Debug)]
pub struct NatsProcess {
    program: PathBuf,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    running: Option<Running>,
    log: LogTail,
}

impl NatsProcess {
    /// Starts `nats-server` listening on `bind` (an IP and a port; port 0 picks a free one)
    /// and returns once it accepts connections.
    pub async fn start(bind: SocketAddr) -> Result<NatsProcess, BrokerError> {
        let program = locate()?;
        sweep_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| BrokerError::io("creating the broker's temporary directory", e))?;
        // Names the owner, so a later start can remove the directory if this process dies
        // without dropping the handle (SIGKILL leaves it behind).
        let _ = std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string());
        let mut p = NatsProcess {
            program,
            dir,
            addr: bind,
            running: None,
            log: Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES))),
        };
        p.launch().await?;
        Ok(p)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The broker's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.pid.as_raw())
    }

    /// The last lines the broker logged.
    pub fn log_tail(&self) -> String {
        tail_text(&self.log)
    }

    fn write_config(&self) -> Result<PathBuf, BrokerError> {
        let store = self.dir.path().join("jetstream");
        let store = store.to_str().filter(|s| !s.contains(['"', '\\', '\n']));
        let Some(store) = store else {
            return Err(BrokerError::Config(format!(
                "temporary directory {} cannot be written into a nats-server config",
                self.dir.path().display()
            )));
        };
        // Port 0 means "any free port": nats-server's own spelling of that is -1.
        let port: i32 = if self.addr.port() == 0 {
            -1
        } else {
            i32::from(self.addr.port())
        };
        let config = format!(
            "# written by wirebench for one private broker\n\
             host: \"{}\"\nport: {port}\nmax_payload: {MAX_PAYLOAD}\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n",
            self.addr.ip()
        );
        let path = self.dir.path().join("nats-server.conf");
        std::fs::write(&path, config)
            .map_err(|e| BrokerError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// Starts the process (with the current address) and waits until it is ready.
    async fn launch(&mut self) -> Result<(), BrokerError> {
        let config = self.write_config()?;
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("wirebench-nats-watchdog")
            .arg(&self.program)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Never SIGKILL the shell: it must live to reap the broker (else a zombie is left
            // to init). Closing the lifeline makes it kill the broker and exit by itself.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| BrokerError::io(format!("starting {}", self.program.display()), e))?;
        let (Some(lifeline), Some(out)) = (shell.stdin.take(), shell.stdout.take()) else {
            return Err(BrokerError::Start {
                reason: "the broker's pipes were not set up".into(),
                log: String::new(),
            });
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(drain_log(out, self.log.clone(), tx));

        let mut pid = None;
        let mut listening = None;
        let waited = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(ev) = rx.recv().await {
                match ev {
                    Started::Pid(p) => pid = Some(Pid::from_raw(p)),
                    Started::Listening(a) => listening = Some(a),
                    Started::Ready => return true,
                }
            }
            false
        })
        .await;
        let fail = |reason: String, log: &LogTail| BrokerError::Start {
            reason,
            log: tail_text(log),
        };
        let running = |pid: Option<Pid>, shell, lifeline| {
            pid.map(|pid| Running {
                shell,
                _lifeline: lifeline,
                pid,
            })
        };
        match waited {
            Ok(true) => {}
            Ok(false) => {
                // The output ended: the broker exited before it was ready.
                let status = shell.wait().await.ok();
                return Err(fail(
                    format!(
                        "{} exited before it was ready ({})",
                        self.program.display(),
                        status.map_or("status unknown".into(), |s| s.to_string())
                    ),
                    &self.log,
                ));
            }
            Err(_) => {
                // Kill it; the lifeline closing ends the watchdog too.
                if let Some(run) = running(pid, shell, lifeline) {
                    kill_now(run);
                }
                return Err(fail(
                    format!(
                        "{} was not ready within {READY_TIMEOUT:?}",
                        self.program.display()
                    ),
                    &self.log,
                ));
            }
        }
        let (Some(run), Some(addr)) = (running(pid, shell, lifeline), listening) else {
            return Err(fail(
                "the broker said it was ready without saying its pid and address".into(),
                &self.log,
            ));
        };
        self.running = Some(run);
        self.addr = addr;
        if let Err(e) = probe(addr).await {
            self.kill_running().await;
            return Err(fail(
                format!("the broker said it was ready, but {addr} does not answer: {e}"),
                &self.log,
            ));
        }
        Ok(())
    }

    /// Signals the broker and waits for it (and its watchdog) to exit; escalates to SIGKILL
    /// when a graceful stop takes too long.
    async fn stop_running(&mut self, mode: RestartMode) {
        let Some(mut run) = self.running.take() else {
            return;
        };
        let signal = match mode {
            RestartMode::Graceful => Signal::SIGTERM,
            RestartMode::Kill => Signal::SIGKILL,
        };
        let _ = kill(run.pid, signal);
        if tokio::time::timeout(STOP_TIMEOUT, run.shell.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "nats-server (pid {}) did not stop within {STOP_TIMEOUT:?}: killing it",
                run.pid
            );
            let _ = kill(run.pid, Signal::SIGKILL);
            let _ = run.shell.wait().await;
        }
    }

    async fn kill_running(&mut self) {
        self.stop_running(RestartMode::Kill).await;
    }

    /// Stops the broker and starts it again on the same address with the same storage.
    pub async fn restart(&mut self, mode: RestartMode) -> Result<(), BrokerError> {
        self.stop_running(mode).await;
        // The port was just released: nats-server sets SO_REUSEADDR, so rebinding normally
        // works at once; another process taking the port in between is retried briefly.
        let mut last = None;
        for _ in 0..3 {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let in_use = matches!(&e, BrokerError::Start { log, .. }
                        if log.contains("address already in use"));
                    if !in_use {
                        return Err(e);
                    }
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| BrokerError::Start {
            reason: "restart failed".into(),
            log: String::new(),
        }))
    }

    /// Stops the broker (killing it: a private broker's data is not kept).
    pub async fn stop(mut self) {
        self.kill_running().await;
    }
}

fn kill_now(run: Running) {
    let _ = kill(run.pid, Signal::SIGKILL);
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        // Kill the broker now; the lifeline closing ends the watchdog, the shell reaps the
        // broker and exits, and tokio reaps the shell in the background.
        if let Some(run) = self.running.take() {
            kill_now(run);
        }
    }
}

/// Reads the broker's output: reports its pid, address and readiness, keeps the last lines.
async fn drain_log(out: ChildStdout, log: LogTail, tx: mpsc::UnboundedSender<Started>) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(pid) = line.strip_prefix("wirebench-nats-pid ") {
            if let Ok(pid) = pid.trim().parse() {
                let _ = tx.send(Started::Pid(pid));
            }
            continue;
        }
        if let Some((_, addr)) = line.split_once("Listening for client connections on ")
            && let Ok(addr) = addr.trim().parse()
        {
            let _ = tx.send(Started::Listening(addr));
        } else if line.contains("Server is ready") {
            let _ = tx.send(Started::Ready);
        }
        if let Ok(mut l) = log.lock() {
            if l.len() == LOG_LINES {
                l.pop_front();
            }
            l.push_back(line);
        }
    }
}

/// Connects to `addr` and reads nats-server's `INFO` greeting.
async fn probe(addr: SocketAddr) -> Result<(), String> {
    let check = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
        if &head == b"INFO " {
            Ok(())
        } else {
            Err(format!("it greeted with {head:?}, not INFO"))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .map_err(|_| "no INFO within 5 s".to_owned())?
}

#[cfg(test)]
mod tests {
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

    fn alive(pid: i32) -> bool {
        kill(Pid::from_raw(pid), None).is_ok()
    }

    /// Waits (bounded) for a pid to disappear: killing is asynchronous to us.
    async fn gone(pid: i32) -> bool {
        tokio::time::timeout(Duration::from_secs(5), async {
            while alive(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
    }

    #[test]
    fn the_install_hint_names_the_package() {
        assert!(
            PROGRAM
                .install_hint
                .contains("apt-get install -y nats-server")
        );
    }

    #[tokio::test]
    async fn starts_restarts_and_stops_without_orphans() {
        if !available() {
            return;
        }
        let mut p = tokio::time::timeout(
            Duration::from_secs(30),
            NatsProcess::start("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        let addr = p.addr();
        assert_ne!(addr.port(), 0);
        let first = p.pid().unwrap();
        assert!(alive(first));
        probe(addr).await.unwrap();

        tokio::time::timeout(Duration::from_secs(30), p.restart(RestartMode::Kill))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.addr(), addr, "a restart keeps the address");
        let second = p.pid().unwrap();
        assert_ne!(first, second);
        assert!(gone(first).await);
        probe(addr).await.unwrap();

        tokio::time::timeout(Duration::from_secs(30), p.restart(RestartMode::Graceful))
            .await
            .unwrap()
            .unwrap();
        let third = p.pid().unwrap();
        assert!(gone(second).await);

        drop(p);
        assert!(gone(third).await, "dropping the handle kills the broker");
    }

    #[test]
    fn directories_of_dead_owners_are_swept_and_live_ones_kept() {
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let orphan = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap();
        std::fs::write(orphan.path().join(OWNER_FILE), dead.to_string()).unwrap();
        let live = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap();
        std::fs::write(live.path().join(OWNER_FILE), std::process::id().to_string()).unwrap();
        sweep_stale_dirs();
        assert!(!orphan.path().exists(), "the dead owner's directory stayed");
        assert!(live.path().exists(), "a live owner's directory was removed");
    }

    #[tokio::test]
    async fn a_bad_program_fails_with_its_output() {
        // A program that exits at once stands in for a broker that cannot start.
        let mut p = NatsProcess {
            program: PathBuf::from("/bin/false"),
            dir: tempfile::tempdir().unwrap(),
            addr: "127.0.0.1:0".parse().unwrap(),
            running: None,
            log: Arc::new(Mutex::new(VecDeque::new())),
        };
        let e = tokio::time::timeout(Duration::from_secs(20), p.launch())
            .await
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("exited before it was ready"), "{e}");
    }
}
