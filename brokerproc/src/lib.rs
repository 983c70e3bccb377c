//! Running a broker program (`nats-server`, `mosquitto`, ...) for the broker transports, their
//! tests and the harness, the same way for every broker: find the program ([`Program`]), start
//! it on a loopback port with a private directory, learn from its own log where it listens and
//! when it is ready, confirm it serves, restart it in place (same address, same storage), and
//! stop it. What differs per broker — its configuration, its log lines, its greeting — is a
//! [`Recipe`].
//!
//! No broker outlives its owner: dropping a [`BrokerProcess`] kills it, and a watchdog kills it
//! if this process dies without dropping it (a SIGKILLed test binary, say). The watchdog is a
//! `sh` parent holding a pipe whose other end only this process holds: when that end closes,
//! for whatever reason, the shell kills the broker. No `unsafe` (`pre_exec`) is needed, and
//! unlike `PR_SET_PDEATHSIG` it does not fire when merely the spawning *thread* ends.
//!
//! A transport's broker handle — its own private broker, or an external one it attaches to —
//! is [`BrokerAt`], whatever runs the private broker ([`PrivateBroker`]: a program here, or a
//! library in this process).
//!
//! Depends on `wirebench-core` (the broker API and errors) only.

mod program;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use wirebench_core::broker::{BrokerError, BrokerHandle, BrokerTarget, RestartMode};

pub use program::Program;

/// How long a broker may take to become ready (JetStream recovers its storage first).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept for error messages.
const LOG_LINES: usize = 40;
/// Attempts at an address another process may take between two starts.
const ATTEMPTS: usize = 3;
/// The file in a broker directory naming the pid of the process that owns it.
const OWNER_FILE: &str = "owner.pid";
/// The line the watchdog prints first: the broker's pid.
const PID_MARK: &str = "wirebench-broker-pid ";

/// The watchdog: runs the broker as its child, prints the broker's pid, kills the broker when
/// stdin (fd 3 here) reaches EOF, and exits with the broker's status.
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null 3<&- 2>&1 &
b=$!
echo "wirebench-broker-pid $b"
{ read -r _ <&3; kill -KILL "$b" 2>/dev/null; } &
w=$!
exec 3<&-
wait "$b"
s=$?
kill "$w" 2>/dev/null
exit $s
"#;

/// What one line of a broker's log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLine {
    /// It listens for clients on this address.
    Listening(SocketAddr),
    /// It is ready to serve.
    Ready,
}

/// How to start a run of a broker program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program's arguments.
    pub args: Vec<OsString>,
    /// The address it will listen on, when known before it starts (else its log says).
    pub addr: Option<SocketAddr>,
}

/// What differs between brokers: how to configure one, and how to read it.
pub trait Recipe: fmt::Debug + Send + Sync + 'static {
    /// The program.
    const PROGRAM: Program;

    /// The scheme of its clients' URLs (`nats`, `mqtt`).
    const SCHEME: &'static str;

    /// What its temporary directories are called (`wirebench-nats-`): directories left by a
    /// process that died are swept by the next start.
    const DIR_PREFIX: &'static str;

    /// Writes what the program needs into `dir` to listen on `addr` (port 0: any free port)
    /// and says how to run it.
    fn launch(&self, dir: &Path, addr: SocketAddr) -> Result<Launch, BrokerError>;

    /// What a line of its log says, if anything this crate waits for.
    fn read_line(&self, line: &str) -> Option<LogLine>;

    /// Confirms that the broker at `addr` serves (reads its greeting, say).
    fn probe(&self, addr: SocketAddr) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

/// Why a broker that said it was ready does not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Its port refused or dropped the connection.
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection broke before its greeting arrived.
    #[error("reading its greeting: {0}")]
    Read(#[source] std::io::Error),
    /// It greeted with something else than the protocol's greeting.
    #[error("it greeted with {got:?}, not {expected:?}")]
    Greeting {
        /// The bytes it sent.
        got: Vec<u8>,
        /// The greeting the protocol begins with.
        expected: &'static str,
    },
    /// Nothing answered in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Removes broker directories named `prefix*` left by processes that died without cleaning up
/// (best effort; a directory whose owner is alive, or unknown, is left alone).
fn sweep_stale_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix));
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
    Line(LogLine),
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

/// A broker this process runs, with its files in a temporary directory.
#[derive(Debug)]
pub struct BrokerProcess<R: Recipe> {
    /// Shared with the task that reads the broker's log.
    recipe: Arc<R>,
    program: PathBuf,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    running: Option<Running>,
    log: LogTail,
}

impl<R: Recipe> BrokerProcess<R> {
    /// Starts the broker listening on `bind` (an IP and a port; port 0 picks a free one) and
    /// returns once it serves.
    pub async fn start(recipe: R, bind: SocketAddr) -> Result<BrokerProcess<R>, BrokerError> {
        let program = R::PROGRAM.locate()?;
        sweep_stale_dirs(R::DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(R::DIR_PREFIX)
            .tempdir()
            .map_err(|e| BrokerError::io("creating the broker's temporary directory", e))?;
        // Names the owner, so a later start can remove the directory if this process dies
        // without dropping the handle (SIGKILL leaves it behind).
        let _ = std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string());
        let mut p = BrokerProcess {
            recipe: Arc::new(recipe),
            program,
            dir,
            addr: bind,
            running: None,
            log: Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES))),
        };
        p.launch_retrying(bind).await?;
        Ok(p)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to: `SCHEME://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", R::SCHEME, self.addr)
    }

    /// The broker's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.pid.as_raw())
    }

    /// The last lines the broker logged.
    pub fn log_tail(&self) -> String {
        tail_text(&self.log)
    }

    /// Starts a run on `addr`, again when another process took a port in between.
    async fn launch_retrying(&mut self, addr: SocketAddr) -> Result<(), BrokerError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match self.launch(addr).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let in_use = matches!(&e, BrokerError::Start { log, .. }
                        if log.to_ascii_lowercase().contains("address already in use"));
                    if !in_use {
                        return Err(e);
                    }
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| BrokerError::Start {
            reason: "the broker did not start".into(),
            log: String::new(),
        }))
    }

    /// Starts the process on `addr` and waits until it is ready.
    async fn launch(&mut self, addr: SocketAddr) -> Result<(), BrokerError> {
        let launch = self.recipe.launch(self.dir.path(), addr)?;
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("wirebench-broker-watchdog")
            .arg(&self.program)
            .args(&launch.args)
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
        tokio::spawn(drain_log(out, self.log.clone(), tx, self.recipe.clone()));

        let mut pid = None;
        let mut listening = launch.addr;
        let waited = tokio::time::timeout(READY_TIMEOUT, async {
            let mut ready = false;
            while let Some(ev) = rx.recv().await {
                match ev {
                    Started::Pid(p) => pid = Some(Pid::from_raw(p)),
                    Started::Line(LogLine::Listening(a)) => listening = Some(a),
                    Started::Line(LogLine::Ready) => ready = true,
                }
                // The watchdog prints the pid while the broker starts, on the same pipe: on a
                // busy machine the broker's ready line can come first.
                if ready && pid.is_some() {
                    return true;
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
        let program = self.program.display().to_string();
        match waited {
            Ok(true) => {}
            Ok(false) => {
                // The output ended: the broker exited before it was ready.
                let status = shell.wait().await.ok();
                return Err(fail(
                    format!(
                        "{program} exited before it was ready ({})",
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
                    format!("{program} was not ready within {READY_TIMEOUT:?}"),
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
        if let Err(e) = self.recipe.probe(addr).await {
            self.stop_running(RestartMode::Kill).await;
            return Err(fail(
                format!("the broker said it was ready, but {addr} does not serve: {e}"),
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
                "{} (pid {}) did not stop within {STOP_TIMEOUT:?}: killing it",
                self.program.display(),
                run.pid
            );
            let _ = kill(run.pid, Signal::SIGKILL);
            let _ = run.shell.wait().await;
        }
    }

    /// Stops the broker and starts it again on the same address with the same storage.
    pub async fn restart(&mut self, mode: RestartMode) -> Result<(), BrokerError> {
        self.stop_running(mode).await;
        // The port was just released: rebinding normally works at once; another process
        // taking the port in between is retried briefly.
        self.launch_retrying(self.addr).await
    }

    /// Stops the broker (killing it: a private broker's data is not kept).
    pub async fn stop(mut self) {
        self.stop_running(RestartMode::Kill).await;
    }
}

fn kill_now(run: Running) {
    let _ = kill(run.pid, Signal::SIGKILL);
}

impl<R: Recipe> Drop for BrokerProcess<R> {
    fn drop(&mut self) {
        // Kill the broker now; the lifeline closing ends the watchdog, the shell reaps the
        // broker and exits, and tokio reaps the shell in the background.
        if let Some(run) = self.running.take() {
            kill_now(run);
        }
    }
}

/// A broker this process runs, whatever runs it: a program ([`BrokerProcess`]), or a library
/// linked into this process.
pub trait PrivateBroker: fmt::Debug + Send + Sync + 'static {
    /// Where clients connect.
    fn url(&self) -> String;

    /// Stops it and starts it again on the same address; returns once it serves.
    fn restart(
        &mut self,
        mode: RestartMode,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Stops it.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

impl<R: Recipe> PrivateBroker for BrokerProcess<R> {
    fn url(&self) -> String {
        BrokerProcess::url(self)
    }

    async fn restart(&mut self, mode: RestartMode) -> Result<(), BrokerError> {
        BrokerProcess::restart(self, mode).await
    }

    async fn stop(self) {
        BrokerProcess::stop(self).await;
    }
}

/// A transport's broker: a private one it started (and may restart), or an external one at a
/// URL, which it never restarts or stops.
#[derive(Debug)]
pub struct BrokerAt<P: PrivateBroker> {
    private: Option<P>,
    url: String,
}

impl<P: PrivateBroker> BrokerAt<P> {
    /// The broker `target` asks for: a private one from `start`, or the external one at a URL
    /// of `scheme` (`nats`, `mqtt`).
    pub async fn new<F>(
        target: &BrokerTarget,
        scheme: &str,
        start: impl FnOnce() -> F,
    ) -> Result<BrokerAt<P>, BrokerError>
    where
        F: Future<Output = Result<P, BrokerError>>,
    {
        match target {
            BrokerTarget::Private => {
                let p = start().await?;
                Ok(BrokerAt {
                    url: p.url(),
                    private: Some(p),
                })
            }
            BrokerTarget::External(url) => {
                let authority = url
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    .map(|r| r.split('/').next().unwrap_or(r));
                if !authority.is_some_and(|a| a.contains(':')) {
                    return Err(BrokerError::Config(format!(
                        "{url:?} is not a broker URL of this transport ({scheme}://HOST:PORT)"
                    )));
                }
                Ok(BrokerAt {
                    private: None,
                    url: url.clone(),
                })
            }
        }
    }
}

impl<P: PrivateBroker> BrokerHandle for BrokerAt<P> {
    fn url(&self) -> String {
        self.private
            .as_ref()
            .map_or_else(|| self.url.clone(), PrivateBroker::url)
    }

    fn can_restart(&self) -> bool {
        self.private.is_some()
    }

    async fn restart(&mut self, mode: RestartMode) -> Result<(), BrokerError> {
        match &mut self.private {
            Some(p) => p.restart(mode).await,
            None => Err(BrokerError::Unsupported(format!(
                "the broker at {} is external: wirebench does not restart it",
                self.url
            ))),
        }
    }

    async fn stop(self) {
        if let Some(p) = self.private {
            p.stop().await;
        }
    }
}

/// Reads the broker's output: reports its pid, address and readiness, keeps the last lines.
async fn drain_log<R: Recipe>(
    out: ChildStdout,
    log: LogTail,
    tx: mpsc::UnboundedSender<Started>,
    recipe: Arc<R>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(pid) = line.strip_prefix(PID_MARK) {
            if let Ok(pid) = pid.trim().parse() {
                let _ = tx.send(Started::Pid(pid));
            }
            continue;
        }
        if let Some(said) = recipe.read_line(&line) {
            let _ = tx.send(Started::Line(said));
        }
        if let Ok(mut l) = log.lock() {
            if l.len() == LOG_LINES {
                l.pop_front();
            }
            l.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "broker" that is `sh`: it prints what a broker would, then sleeps.
    #[derive(Clone, Debug)]
    struct Script(&'static str);

    impl Recipe for Script {
        const PROGRAM: Program = Program {
            name: "sh",
            env: "WIREBENCH_TEST_BROKERPROC_SH",
            install_hint: "",
        };
        const SCHEME: &'static str = "test";
        const DIR_PREFIX: &'static str = "wirebench-brokerproc-test-";

        fn launch(&self, _dir: &Path, addr: SocketAddr) -> Result<Launch, BrokerError> {
            Ok(Launch {
                args: vec!["-c".into(), self.0.into()],
                addr: Some(addr),
            })
        }

        fn read_line(&self, line: &str) -> Option<LogLine> {
            (line == "ready").then_some(LogLine::Ready)
        }

        async fn probe(&self, _addr: SocketAddr) -> Result<(), ProbeError> {
            Ok(())
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

    const ADDR: &str = "127.0.0.1:1";

    #[tokio::test]
    async fn starts_restarts_and_stops_without_orphans() {
        let run = Script("echo ready; exec sleep 60");
        let mut p = BrokerProcess::start(run, ADDR.parse().unwrap())
            .await
            .unwrap();
        let first = p.pid().unwrap();
        assert!(alive(first));
        p.restart(RestartMode::Kill).await.unwrap();
        let second = p.pid().unwrap();
        assert_ne!(first, second);
        assert!(gone(first).await);
        p.restart(RestartMode::Graceful).await.unwrap();
        let third = p.pid().unwrap();
        assert!(gone(second).await);
        drop(p);
        assert!(gone(third).await, "dropping the handle kills the broker");
    }

    #[tokio::test]
    async fn a_broker_that_exits_fails_with_its_output() {
        let run = Script("echo something went wrong; exit 3");
        let e = BrokerProcess::start(run, ADDR.parse().unwrap())
            .await
            .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("exited before it was ready"), "{s}");
        assert!(s.contains("something went wrong"), "{s}");
    }

    #[tokio::test]
    async fn a_lost_port_is_retried_then_reported() {
        let run = Script("echo Address already in use; exit 1");
        let e = BrokerProcess::start(run, ADDR.parse().unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("Address already in use"), "{e}");
    }

    #[test]
    fn directories_of_dead_owners_are_swept_and_live_ones_kept() {
        const PREFIX: &str = "wirebench-brokerproc-sweep-";
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let orphan = tempfile::Builder::new().prefix(PREFIX).tempdir().unwrap();
        std::fs::write(orphan.path().join(OWNER_FILE), dead.to_string()).unwrap();
        let live = tempfile::Builder::new().prefix(PREFIX).tempdir().unwrap();
        std::fs::write(live.path().join(OWNER_FILE), std::process::id().to_string()).unwrap();
        sweep_stale_dirs(PREFIX);
        assert!(!orphan.path().exists(), "the dead owner's directory stayed");
        assert!(live.path().exists(), "a live owner's directory was removed");
    }
}
