//! Conformance: named cases that check one behaviour each against any transport, returning
//! `pass`, `fail(reason)` or `unsupported(reason)`.
//!
//! A case declares the [`Capability`]s it needs; when the transport does not declare one, the
//! case is `unsupported` with the transport's own reason and is never run — an unsupported
//! case can never become a pass. Each case starts its own in-process server (port 0), so cases
//! are independent and can watch what the server observed.

mod cases;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use wirebench_transports::broker::{
    AnyBroker, AnyBrokerClient, AnyBrokerHandle, Broker, BrokerClientConfig, BrokerError,
    BrokerHandle, BrokerTarget, RestartMode,
};
use wirebench_transports::registry::{AnyConnection, AnyServer, AnyTransport};
use wirebench_transports::{
    Capability, ClientConfig, Echo, EchoConfig, Server, ServerConfig, Status, Transport,
    TransportError,
};

pub use cases::all as cases;

/// A boxed future (cases are not a hot path).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a case returns when it passes: an optional note for the report.
pub type CaseResult = Result<Option<String>, Failure>;

/// Why a case failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Failure {
        Failure(format!("unexpected status {s}"))
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Failure {
        Failure(format!("transport error: {e}"))
    }
}

impl From<BrokerError> for Failure {
    fn from(e: BrokerError) -> Failure {
        Failure(format!("broker error: {e}"))
    }
}

/// Fails the case with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure(format!($($arg)+)));
        }
    };
}

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Unique name (`unary_large`).
    pub name: &'static str,
    /// Group for reports (`unary`, `streaming`, `deadline`, ...).
    pub group: &'static str,
    /// What the case checks, in one sentence.
    pub summary: &'static str,
    /// Capabilities the transport must declare.
    pub needs: &'static [Capability],
    /// The case needs the harness's fault proxy.
    pub needs_faults: bool,
    /// The case fails if it runs longer than this.
    pub timeout: Duration,
    /// The case itself.
    pub run: fn(Ctx) -> BoxFuture<'static, CaseResult>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// A case's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The behaviour holds.
    Pass {
        /// Something worth reporting (counts, timings).
        note: Option<String>,
    },
    /// The transport declares the capabilities but the behaviour does not hold.
    Fail {
        /// What went wrong.
        reason: String,
    },
    /// The transport does not declare a needed capability (or the environment lacks
    /// something), with the reason.
    Unsupported {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// `pass`, `fail` or `unsupported`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Pass { .. } => "pass",
            Outcome::Fail { .. } => "fail",
            Outcome::Unsupported { .. } => "unsupported",
        }
    }

    /// The note or reason, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Pass { note } => note.as_deref(),
            Outcome::Fail { reason } | Outcome::Unsupported { reason } => Some(reason),
        }
    }

    /// True for a failure.
    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }
}

/// A path whose traffic passes through a fault (kept alive by the guard).
pub struct FaultPath {
    /// Where clients connect to go through the fault.
    pub endpoint: String,
    /// Keeps the path open; dropping it closes it.
    pub guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for FaultPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultPath")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Faults the harness can place between a client and a server (its userspace proxy).
pub trait FaultInjector: Send + Sync {
    /// A TCP path to `upstream` that forwards both directions in writes of at most
    /// `chunk` bytes, each flushed on its own, with `pause` between them.
    fn sliced(
        &self,
        upstream: SocketAddr,
        chunk: usize,
        pause: Duration,
    ) -> BoxFuture<'_, std::io::Result<FaultPath>>;
}

/// How cases reach the transport: configuration templates and the harness's services.
#[derive(Clone, Default)]
pub struct Env {
    /// Client configuration every connection starts from.
    pub client: ClientConfig,
    /// Server configuration every server starts from.
    pub server: Option<ServerConfig>,
    /// Echo policy every server starts from.
    pub echo: EchoConfig,
    /// The fault proxy, when the harness provides one.
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// For a broker transport: the URL of an existing broker that every case attaches to
    /// (its servers and its broker cases); `None` starts a private broker for each case.
    pub broker_url: Option<String>,
    /// Capabilities this environment withdraws from the transport, with the reason (an
    /// external broker, say, cannot be restarted by the harness). Cases needing them are
    /// `unsupported`.
    pub withdrawn: Vec<(Capability, String)>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("echo", &self.echo)
            .field("faults", &self.faults.is_some())
            .field("broker_url", &self.broker_url)
            .field("withdrawn", &self.withdrawn)
            .finish()
    }
}

/// What a case gets: the transport and the environment.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The transport under test.
    pub transport: AnyTransport,
    /// The environment.
    pub env: Arc<Env>,
}

/// A server started for one case.
#[derive(Debug)]
pub struct TestServer {
    server: Option<AnyServer>,
    /// The echo service it serves (what it observed is readable here).
    pub echo: Arc<Echo>,
    /// Where to connect.
    pub endpoint: String,
}

impl TestServer {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(s.shutdown());
        }
    }
}

impl Ctx {
    /// A server with the environment's echo policy.
    pub async fn server(&self) -> Result<TestServer, Failure> {
        self.server_with(self.env.echo.clone()).await
    }

    /// A server with a specific echo policy. A broker transport's server attaches to the
    /// environment's broker when it names one (else the transport starts a private broker).
    pub async fn server_with(&self, echo: EchoConfig) -> Result<TestServer, Failure> {
        let echo = Arc::new(Echo::new(echo));
        let config = match (&self.env.server, &self.env.broker_url) {
            (Some(c), _) => c.clone(),
            (None, Some(url)) if self.transport.broker().is_some() => ServerConfig {
                listen: url.clone(),
                ..ServerConfig::loopback()
            },
            (None, _) => ServerConfig::loopback(),
        };
        let server = self.transport.serve(&config, echo.clone()).await?;
        Ok(TestServer {
            endpoint: server.endpoint(),
            server: Some(server),
            echo,
        })
    }

    /// A connection with the environment's client configuration.
    pub async fn connect(&self, endpoint: &str) -> Result<AnyConnection, Failure> {
        self.connect_with(endpoint, self.env.client.clone()).await
    }

    /// A connection with a specific client configuration.
    pub async fn connect_with(
        &self,
        endpoint: &str,
        config: ClientConfig,
    ) -> Result<AnyConnection, Failure> {
        Ok(self.transport.connect(&config, endpoint).await?)
    }

    /// The transport's declared capabilities.
    pub fn transport_caps(&self) -> wirebench_transports::Capabilities {
        self.transport.capabilities()
    }

    /// A broker for a broker case: the environment's external broker, or a private one
    /// started for this case (stopped when the returned handle drops).
    pub async fn broker(&self) -> Result<TestBroker, Failure> {
        let broker = self
            .transport
            .broker()
            .ok_or_else(|| Failure(format!("{} has no broker API", self.transport.name())))?;
        let target = match &self.env.broker_url {
            Some(url) => BrokerTarget::External(url.clone()),
            None => BrokerTarget::Private,
        };
        let handle = broker.start(&target).await?;
        Ok(TestBroker {
            broker,
            handle: Some(handle),
        })
    }

    /// The harness's fault proxy, or an `unsupported`-worthy reason.
    pub fn faults(&self) -> Result<&dyn FaultInjector, Failure> {
        self.env
            .faults
            .as_deref()
            .ok_or_else(|| Failure("needs the harness's fault proxy".into()))
    }
}

/// A broker started (or attached to) for one case.
#[derive(Debug)]
pub struct TestBroker {
    broker: AnyBroker,
    handle: Option<AnyBrokerHandle>,
}

impl TestBroker {
    fn handle(&self) -> Result<&AnyBrokerHandle, Failure> {
        self.handle
            .as_ref()
            .ok_or_else(|| Failure("the case's broker was stopped".into()))
    }

    /// Where clients connect.
    pub fn url(&self) -> String {
        self.handle
            .as_ref()
            .map(BrokerHandle::url)
            .unwrap_or_default()
    }

    /// A client with default settings.
    pub async fn client(&self) -> Result<AnyBrokerClient, Failure> {
        self.client_with(&BrokerClientConfig::default()).await
    }

    /// A client with specific settings.
    pub async fn client_with(
        &self,
        config: &BrokerClientConfig,
    ) -> Result<AnyBrokerClient, Failure> {
        let url = self.handle()?.url();
        Ok(self.broker.connect(&url, config).await?)
    }

    /// Whether the harness can restart this broker.
    pub fn can_restart(&self) -> bool {
        self.handle.as_ref().is_some_and(BrokerHandle::can_restart)
    }

    /// Restarts the broker in place; returns once it accepts connections again.
    pub async fn restart(&mut self, mode: RestartMode) -> Result<(), Failure> {
        let h = self
            .handle
            .as_mut()
            .ok_or_else(|| Failure("the case's broker was stopped".into()))?;
        Ok(h.restart(mode).await?)
    }

    /// Stops a private broker (an external one is left alone).
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.stop().await;
        }
    }
}

/// One case's result against one transport.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The case's name.
    pub case: &'static str,
    /// Its group.
    pub group: &'static str,
    /// The transport's name.
    pub transport: &'static str,
    /// The verdict.
    pub outcome: Outcome,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Decides, without running it, whether `case` can run against `transport`.
pub fn precheck(case: &Case, transport: &AnyTransport, env: &Env) -> Option<Outcome> {
    if let Some((cap, reason)) = transport.capabilities().first_missing(case.needs) {
        return Some(Outcome::Unsupported {
            reason: format!(
                "{} does not support {}: {reason}",
                transport.name(),
                cap.name()
            ),
        });
    }
    if let Some((cap, reason)) = env
        .withdrawn
        .iter()
        .find(|(cap, _)| case.needs.contains(cap))
    {
        return Some(Outcome::Unsupported {
            reason: format!("{} is not available here: {reason}", cap.name()),
        });
    }
    if case.needs_faults && env.faults.is_none() {
        return Some(Outcome::Unsupported {
            reason: "needs the harness's fault proxy (run through `wirebench conformance`)".into(),
        });
    }
    None
}

static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// Counts panics anywhere in the process (server tasks included), so that a case cannot pass
/// while a handler panicked behind its back: tokio would otherwise just end that task.
/// Idempotent; the previous hook still runs.
pub fn install_panic_counter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = info.to_string();
            }
            previous(info);
        }));
    });
}

/// Runs one case against one transport (capability check, then the case under its timeout).
/// With [`install_panic_counter`], a panic during the case fails it.
pub async fn run_case(case: &Case, transport: AnyTransport, env: Arc<Env>) -> CaseReport {
    let started = Instant::now();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let outcome = match precheck(case, &transport, &env) {
        Some(o) => o,
        None => {
            let ctx = Ctx { transport, env };
            match tokio::time::timeout(case.timeout, (case.run)(ctx)).await {
                Ok(Ok(note)) => Outcome::Pass { note },
                Ok(Err(Failure(reason))) => Outcome::Fail { reason },
                Err(_) => Outcome::Fail {
                    reason: format!("timed out after {:?}", case.timeout),
                },
            }
        }
    };
    let outcome = if PANICS.load(Ordering::SeqCst) != panics_before && !outcome.is_fail() {
        let last = LAST_PANIC.lock().map(|s| s.clone()).unwrap_or_default();
        Outcome::Fail {
            reason: format!("a panic occurred while the case ran: {last}"),
        }
    } else {
        outcome
    };
    CaseReport {
        case: case.name,
        group: case.group,
        transport: transport.name(),
        outcome,
        elapsed: started.elapsed(),
    }
}
