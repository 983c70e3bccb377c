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

use wirebench_core::broker::{
    Broker, BrokerClientConfig, BrokerError, BrokerHandle, BrokerTarget, RestartMode,
};
use wirebench_core::tls::TlsMode;
use wirebench_core::{
    Capability, ClientConfig, DrainReport, Echo, EchoConfig, Server, ServerConfig, Status,
    Transport, TransportError, WireProtocol,
};
use wirebench_tls::{TlsError, TlsMaterial};

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

/// One conformance case, run against transports of type `T` (the harness's registry type, or
/// one transport's own type in that transport's tests).
pub struct Case<T: Transport> {
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
    pub run: fn(Ctx<T>) -> BoxFuture<'static, CaseResult>,
}

impl<T: Transport> Clone for Case<T> {
    fn clone(&self) -> Case<T> {
        *self
    }
}

impl<T: Transport> Copy for Case<T> {}

impl<T: Transport> fmt::Debug for Case<T> {
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

/// What a fault path's proxy saw and did, counted since it started (a copy of the harness
/// proxy's counters, so cases can check that a fault really applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Connections accepted (TCP) or client flows seen (UDP).
    pub connections: u64,
    /// Connections refused.
    pub refused: u64,
    /// Connections reset (RST).
    pub resets: u64,
    /// Connections closed by a data limit.
    pub limited: u64,
    /// Bytes read from clients.
    pub bytes_up: u64,
    /// Bytes read from the server.
    pub bytes_down: u64,
    /// Datagrams from clients (UDP).
    pub packets_up: u64,
    /// Datagrams from the server (UDP).
    pub packets_down: u64,
    /// Bytes swallowed by a blackhole.
    pub blackholed: u64,
    /// Datagrams dropped (UDP loss).
    pub dropped: u64,
}

/// Why the harness could not put faults on a path.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// A fault spec did not parse, or does not apply to the path's protocol.
    #[error(transparent)]
    Spec(#[from] crate::faultspec::SpecError),
    /// The proxy could not start or change its faults.
    #[error("the fault proxy: {0}")]
    Proxy(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Live control of one fault path: change its faults while traffic flows, read its counters.
pub trait FaultControl: Send + Sync {
    /// Replaces the faults in force (for new and existing connections alike) with `specs`,
    /// each in the harness's fault spec syntax (`latency:50ms`, `reset`, `blackhole`,
    /// `limit:1000`, `loss:2%`, ...; see `wirebench proxy --help`). An empty list heals the
    /// path. A spec that does not parse or does not apply to the path's protocol is an error.
    fn set_faults(&self, specs: &[&str]) -> Result<(), FaultError>;

    /// The counters now.
    fn counters(&self) -> FaultCounters;
}

/// A path whose traffic passes through the harness's fault proxy (open while this lives).
pub struct FaultPath {
    /// Where clients connect to go through the proxy: the proxy's `IP:PORT`. A transport's
    /// endpoint through it comes from [`Transport::endpoint_via`] (see [`Ctx::fault_path`]).
    pub endpoint: String,
    /// The proxy's address.
    pub addr: SocketAddr,
    /// Live control; dropping it closes the path.
    pub control: Box<dyn FaultControl>,
}

impl FaultPath {
    /// Replaces the faults in force (see [`FaultControl::set_faults`]); the error names the
    /// spec.
    pub fn set_faults(&self, specs: &[&str]) -> Result<(), Failure> {
        self.control
            .set_faults(specs)
            .map_err(|e| Failure(format!("setting faults {specs:?}: {e}")))
    }

    /// Heals the path: no faults.
    pub fn clear(&self) -> Result<(), Failure> {
        self.set_faults(&[])
    }

    /// The proxy's counters now.
    pub fn counters(&self) -> FaultCounters {
        self.control.counters()
    }
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
    /// A path of `protocol` (TCP or UDP, as [`Transport::network_path`] says) in front of
    /// `upstream`, starting with the faults in `specs` (fault spec syntax, see
    /// [`FaultControl::set_faults`]; empty for a clean path).
    fn path(
        &self,
        protocol: WireProtocol,
        upstream: SocketAddr,
        specs: &[&str],
    ) -> BoxFuture<'_, Result<FaultPath, FaultError>>;

    /// A TCP path to `upstream` that forwards both directions in writes of at most
    /// `chunk` bytes, each flushed on its own, with `pause` between them (the `slicer` fault).
    fn sliced(
        &self,
        upstream: SocketAddr,
        chunk: usize,
        pause: Duration,
    ) -> BoxFuture<'_, Result<FaultPath, FaultError>> {
        let spec = format!("slicer:size={},delay={}ns", chunk.max(1), pause.as_nanos());
        Box::pin(async move {
            self.path(WireProtocol::Tcp, upstream, &[spec.as_str()])
                .await
        })
    }
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
    /// Certificates for cases that set up TLS themselves (the `tls` group) and for
    /// [`Env::with_tls`]; a case generates throwaway material when this is `None`.
    pub tls: Option<Arc<TlsMaterial>>,
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
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Env {
    /// Runs every case over TLS (`mode` other than `none`): servers present `material`'s
    /// server certificate, clients trust its CA and, under mutual TLS, present its client
    /// certificate. Transports without the needed capability report every case unsupported.
    pub fn with_tls(mut self, mode: TlsMode, material: Arc<TlsMaterial>) -> Env {
        let mut server = self.server.take().unwrap_or_else(ServerConfig::loopback);
        server.tls = material.server(mode);
        self.server = Some(server);
        self.client.tls = material.client(mode);
        self.tls = Some(material);
        self
    }

    /// The TLS mode every case runs under (from the server template).
    pub fn tls_mode(&self) -> TlsMode {
        match self.server.as_ref().and_then(|s| s.tls.as_ref()) {
            None => TlsMode::None,
            Some(t) if t.is_mutual() => TlsMode::Mutual,
            Some(_) => TlsMode::Tls,
        }
    }

    /// Capabilities every case needs in this environment (TLS when the suite runs over it).
    pub fn needs(&self) -> &'static [Capability] {
        match self.tls_mode() {
            TlsMode::None => &[],
            TlsMode::Tls => &[Capability::Tls],
            TlsMode::Mutual => &[Capability::Tls, Capability::MutualTls],
        }
    }
}

/// What a case gets: the transport and the environment.
#[derive(Clone, Debug)]
pub struct Ctx<T> {
    /// The transport under test.
    pub transport: T,
    /// The environment.
    pub env: Arc<Env>,
}

/// A server started for one case.
#[derive(Debug)]
pub struct TestServer<S: Server> {
    server: Option<S>,
    /// The echo service it serves (what it observed is readable here).
    pub echo: Arc<Echo>,
    /// Where to connect.
    pub endpoint: String,
}

impl<S: Server> TestServer<S> {
    /// Stops the server at once and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Drains the server (see [`Server::drain`]): the calls in flight may finish for up to
    /// `grace`.
    pub async fn drain(mut self, grace: Duration) -> DrainReport {
        match self.server.take() {
            Some(s) => s.drain(grace).await,
            None => DrainReport::default(),
        }
    }
}

impl<S: Server> Drop for TestServer<S> {
    fn drop(&mut self) {
        if let Some(s) = self.server.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(s.shutdown());
        }
    }
}

impl<T: Transport + Clone> Ctx<T> {
    /// A server with the environment's echo policy.
    pub async fn server(&self) -> Result<TestServer<T::Server>, Failure> {
        self.server_with(self.env.echo.clone()).await
    }

    /// A server with a specific echo policy. A broker transport's server attaches to the
    /// environment's broker when it names one (else the transport starts a private broker).
    pub async fn server_with(&self, echo: EchoConfig) -> Result<TestServer<T::Server>, Failure> {
        self.serve(self.server_config(), echo).await
    }

    /// The environment's server configuration (a template for cases that change it). A
    /// broker transport's server attaches to the environment's broker when it names one.
    pub fn server_config(&self) -> ServerConfig {
        match (&self.env.server, &self.env.broker_url) {
            (Some(c), _) => c.clone(),
            (None, Some(url)) if self.transport.broker().is_some() => ServerConfig {
                listen: url.clone(),
                ..ServerConfig::loopback()
            },
            (None, _) => ServerConfig::loopback(),
        }
    }

    /// TLS material: the environment's, or freshly generated throwaway material.
    pub fn tls_material(&self) -> Result<Arc<TlsMaterial>, Failure> {
        match &self.env.tls {
            Some(m) => Ok(m.clone()),
            None => TlsMaterial::generate()
                .map(Arc::new)
                .map_err(|e: TlsError| Failure(format!("generating TLS material: {e}"))),
        }
    }

    /// A server with a specific configuration and echo policy.
    pub async fn serve(
        &self,
        config: ServerConfig,
        echo: EchoConfig,
    ) -> Result<TestServer<T::Server>, Failure> {
        let echo = Arc::new(Echo::new(echo));
        let server = self.transport.serve(&config, echo.clone()).await?;
        Ok(TestServer {
            endpoint: server.endpoint(),
            server: Some(server),
            echo,
        })
    }

    /// A connection with the environment's client configuration.
    pub async fn connect(&self, endpoint: &str) -> Result<T::Connection, Failure> {
        self.connect_with(endpoint, self.env.client.clone()).await
    }

    /// A connection with a specific client configuration.
    pub async fn connect_with(
        &self,
        endpoint: &str,
        config: ClientConfig,
    ) -> Result<T::Connection, Failure> {
        Ok(Transport::connect(&self.transport, &config, endpoint).await?)
    }

    /// The transport's declared capabilities.
    pub fn transport_caps(&self) -> wirebench_core::Capabilities {
        self.transport.capabilities()
    }

    /// A broker for a broker case: the environment's external broker, or a private one
    /// started for this case (stopped when the returned handle drops).
    pub async fn broker(&self) -> Result<TestBroker<T::Broker>, Failure> {
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

    /// Puts the harness's fault proxy in front of the client's network hop to `endpoint`
    /// (the server, or a broker transport's broker), with the protocol the transport uses
    /// there, starting with the faults in `specs`. Returns the path and the endpoint a client
    /// connects to in order to go through it.
    pub async fn fault_path(
        &self,
        endpoint: &str,
        specs: &[&str],
    ) -> Result<(FaultPath, String), Failure> {
        let hop = self.transport.network_path(endpoint)?;
        let path = self
            .faults()?
            .path(hop.protocol, hop.addr, specs)
            .await
            .map_err(|e| Failure(format!("starting the fault proxy: {e}")))?;
        let via = self.transport.endpoint_via(endpoint, path.addr)?;
        Ok((path, via))
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
pub struct TestBroker<B: Broker> {
    broker: B,
    handle: Option<B::Handle>,
}

impl<B: Broker> TestBroker<B> {
    fn handle(&self) -> Result<&B::Handle, Failure> {
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
    pub async fn client(&self) -> Result<B::Client, Failure> {
        self.client_with(&BrokerClientConfig::default()).await
    }

    /// A client with specific settings.
    pub async fn client_with(&self, config: &BrokerClientConfig) -> Result<B::Client, Failure> {
        let url = self.handle()?.url();
        Ok(Broker::connect(&self.broker, &url, config).await?)
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
pub fn precheck<T: Transport>(case: &Case<T>, transport: &T, env: &Env) -> Option<Outcome> {
    if let Some((cap, reason)) = transport.capabilities().first_missing(env.needs()) {
        return Some(Outcome::Unsupported {
            reason: format!(
                "the suite runs over {}: {} does not support {}: {reason}",
                env.tls_mode(),
                transport.name(),
                cap.name()
            ),
        });
    }
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
pub async fn run_case<T: Transport + Clone>(
    case: &Case<T>,
    transport: T,
    env: Arc<Env>,
) -> CaseReport {
    let started = Instant::now();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let outcome = match precheck(case, &transport, &env) {
        Some(o) => o,
        None => {
            let ctx = Ctx {
                transport: transport.clone(),
                env,
            };
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
