//! The userspace fault proxy: sits between a client and a server and impairs what passes,
//! per direction, as Toxiproxy does for TCP — and for UDP too, so QUIC can be impaired (these
//! machines have no kernel netem). Faults change while traffic flows ([`Proxy::set_faults`]);
//! counters say what passed and what was done to it.

/// The fault spec syntax lives in `wirebench-scenarios` so suites can validate their fault
/// plans at parse time (with file and line) without depending on the harness.
pub use wirebench_scenarios::faultspec as spec;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Normal, Pareto};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;

use crate::pacer::Pacer;
use tokio_util::sync::CancellationToken;
use wirebench_core::WireProtocol;
use wirebench_scenarios::conformance::{
    BoxFuture, FaultControl, FaultCounters, FaultError, FaultInjector, FaultPath,
};

pub use spec::{Dir, Fault, FaultKind, Jitter, LossModel, SpecError};

/// Errors starting or configuring a proxy.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// Binding the listening socket failed.
    #[error("binding the proxy on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A fault that means nothing for this protocol (e.g. `loss` on TCP).
    #[error(
        "fault {fault} does not apply to {protocol}: {protocol} takes {usable}{hint} (all faults: \
         `wirebench proxy --help`)"
    )]
    NotApplicable {
        /// The fault.
        fault: String,
        /// `tcp` or `udp`.
        protocol: &'static str,
        /// The faults that do apply to `protocol`.
        usable: &'static str,
        /// How to get the fault where it applies.
        hint: &'static str,
    },
}

/// The faults in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSet {
    /// In the order given.
    pub faults: Vec<Fault>,
}

/// What the proxy saw and did (monotonic counters).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted (TCP) or client flows seen (UDP).
    pub connections: AtomicU64,
    /// Connections refused.
    pub refused: AtomicU64,
    /// Connections reset.
    pub resets: AtomicU64,
    /// Connections closed by a data limit.
    pub limited: AtomicU64,
    /// Half-closes held back.
    pub slow_closed: AtomicU64,
    /// Bytes read from clients.
    pub bytes_up: AtomicU64,
    /// Bytes read from the server.
    pub bytes_down: AtomicU64,
    /// Packets from clients (UDP).
    pub packets_up: AtomicU64,
    /// Packets from the server (UDP).
    pub packets_down: AtomicU64,
    /// Chunks or packets delayed.
    pub delayed: AtomicU64,
    /// Chunks written in slices.
    pub sliced: AtomicU64,
    /// Bytes swallowed by a blackhole.
    pub blackholed: AtomicU64,
    /// Packets dropped.
    pub dropped: AtomicU64,
    /// Packets duplicated.
    pub duplicated: AtomicU64,
    /// Packets held back to be reordered.
    pub reordered: AtomicU64,
    /// Packets corrupted.
    pub corrupted: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// See [`Counters`].
    pub connections: u64,
    /// See [`Counters`].
    pub refused: u64,
    /// See [`Counters`].
    pub resets: u64,
    /// See [`Counters`].
    pub limited: u64,
    /// See [`Counters`].
    pub slow_closed: u64,
    /// See [`Counters`].
    pub bytes_up: u64,
    /// See [`Counters`].
    pub bytes_down: u64,
    /// See [`Counters`].
    pub packets_up: u64,
    /// See [`Counters`].
    pub packets_down: u64,
    /// See [`Counters`].
    pub delayed: u64,
    /// See [`Counters`].
    pub sliced: u64,
    /// See [`Counters`].
    pub blackholed: u64,
    /// See [`Counters`].
    pub dropped: u64,
    /// See [`Counters`].
    pub duplicated: u64,
    /// See [`Counters`].
    pub reordered: u64,
    /// See [`Counters`].
    pub corrupted: u64,
}

impl Counters {
    fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn bytes(&self, d: Dir) -> &AtomicU64 {
        if d == Dir::Up {
            &self.bytes_up
        } else {
            &self.bytes_down
        }
    }

    fn packets(&self, d: Dir) -> &AtomicU64 {
        if d == Dir::Up {
            &self.packets_up
        } else {
            &self.packets_down
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            connections: r(&self.connections),
            refused: r(&self.refused),
            resets: r(&self.resets),
            limited: r(&self.limited),
            slow_closed: r(&self.slow_closed),
            bytes_up: r(&self.bytes_up),
            bytes_down: r(&self.bytes_down),
            packets_up: r(&self.packets_up),
            packets_down: r(&self.packets_down),
            delayed: r(&self.delayed),
            sliced: r(&self.sliced),
            blackholed: r(&self.blackholed),
            dropped: r(&self.dropped),
            duplicated: r(&self.duplicated),
            reordered: r(&self.reordered),
            corrupted: r(&self.corrupted),
        }
    }
}

/// Holds delayed bytes until their release time. tokio's timer would round every release up to
/// its next millisecond tick (a `latency:1ms` fault measured 1 to 2 ms a way), so releases go
/// through the microsecond [`Pacer`]; tokio's timer is the fallback if no timerfd can be had.
pub(crate) struct Release(Option<Pacer>);

impl Release {
    pub(crate) fn new() -> Release {
        match Pacer::new() {
            Ok(p) => Release(Some(p)),
            Err(e) => {
                tracing::warn!("proxy: no timerfd ({e}); delays round up to tokio's 1 ms ticks");
                Release(None)
            }
        }
    }

    /// Returns at `at` or just after it.
    pub(crate) async fn until(&self, at: tokio::time::Instant) {
        if let Some(p) = &self.0
            && p.sleep_until(at.into_std()).await.is_ok()
        {
            return;
        }
        tokio::time::sleep_until(at).await;
    }
}

/// Draws one delay: the base plus jitter from its distribution, never below zero.
pub(crate) fn sample_delay(base: Duration, jitter: Jitter, rng: &mut SmallRng) -> Duration {
    let base_s = base.as_secs_f64();
    let s = match jitter {
        Jitter::None => base_s,
        Jitter::Uniform(w) => {
            let w = w.as_secs_f64();
            base_s + rng.random_range(-w..=w)
        }
        Jitter::Normal(sd) => match Normal::new(base_s, sd.as_secs_f64()) {
            Ok(n) => n.sample(rng),
            Err(_) => base_s,
        },
        // Pareto(scale, shape 1.5) has a heavy tail; subtract the scale so the base is the
        // minimum and the jitter only ever adds.
        Jitter::Pareto(scale) => match Pareto::new(scale.as_secs_f64().max(1e-9), 1.5) {
            Ok(p) => base_s + p.sample(rng) - scale.as_secs_f64(),
            Err(_) => base_s,
        },
    };
    Duration::from_secs_f64(s.max(0.0))
}

/// Which protocol a proxy carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A byte stream.
    Tcp,
    /// Datagrams.
    Udp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    protocol: Protocol,
    faults: watch::Sender<Arc<FaultSet>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl Proxy {
    /// Starts a proxy listening on `listen` (e.g. `127.0.0.1:0`) in front of `upstream`.
    /// `seed` makes every random decision reproducible.
    pub async fn start(
        protocol: Protocol,
        listen: &str,
        upstream: SocketAddr,
        faults: Vec<Fault>,
        seed: u64,
    ) -> Result<Proxy, ProxyError> {
        check(protocol, &faults)?;
        let (tx, rx) = watch::channel(Arc::new(FaultSet { faults }));
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let bind_err = |source| ProxyError::Bind {
            addr: listen.to_owned(),
            source,
        };
        let addr = match protocol {
            Protocol::Tcp => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(bind_err)?;
                let addr = listener.local_addr().map_err(bind_err)?;
                tokio::spawn(tcp::accept_loop(
                    listener,
                    upstream,
                    rx,
                    counters.clone(),
                    stop.clone(),
                    seed,
                ));
                addr
            }
            Protocol::Udp => {
                let socket = tokio::net::UdpSocket::bind(listen)
                    .await
                    .map_err(bind_err)?;
                let addr = socket.local_addr().map_err(bind_err)?;
                tokio::spawn(udp::run(
                    socket,
                    upstream,
                    rx,
                    counters.clone(),
                    stop.clone(),
                    seed,
                ));
                addr
            }
        };
        Ok(Proxy {
            addr,
            protocol,
            faults: tx,
            counters,
            stop,
        })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults in force, for new and existing connections alike.
    pub fn set_faults(&self, faults: Vec<Fault>) -> Result<(), ProxyError> {
        check(self.protocol, &faults)?;
        self.faults.send_replace(Arc::new(FaultSet { faults }));
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.borrow().faults.clone()
    }

    /// The counters now.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn check(protocol: Protocol, faults: &[Fault]) -> Result<(), ProxyError> {
    for f in faults {
        if !f.kind.applies_to(protocol == Protocol::Udp) {
            let udp = protocol == Protocol::Udp;
            return Err(ProxyError::NotApplicable {
                fault: f.to_string(),
                protocol: protocol.name(),
                usable: FaultKind::names_for(udp),
                hint: if udp {
                    ""
                } else {
                    "; packet faults need --udp, in front of a UDP service such as quic"
                },
            });
        }
    }
    Ok(())
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
    fn path(
        &self,
        protocol: WireProtocol,
        upstream: SocketAddr,
        specs: &[&str],
    ) -> BoxFuture<'_, Result<FaultPath, FaultError>> {
        let parsed: Result<Vec<Fault>, FaultError> = specs
            .iter()
            .map(|s| spec::parse(s).map_err(FaultError::from))
            .collect();
        Box::pin(async move {
            let protocol = match protocol {
                WireProtocol::Tcp => Protocol::Tcp,
                WireProtocol::Udp => Protocol::Udp,
            };
            // A fixed seed: a case's random faults (loss) are the same on every run.
            let proxy = Proxy::start(protocol, "127.0.0.1:0", upstream, parsed?, 1)
                .await
                .map_err(|e| FaultError::Proxy(e.into()))?;
            Ok(FaultPath {
                endpoint: proxy.local_addr().to_string(),
                addr: proxy.local_addr(),
                control: Box::new(proxy),
            })
        })
    }
}

impl FaultControl for Proxy {
    fn set_faults(&self, specs: &[&str]) -> Result<(), FaultError> {
        let faults = specs
            .iter()
            .map(|s| spec::parse(s))
            .collect::<Result<Vec<Fault>, _>>()?;
        Proxy::set_faults(self, faults).map_err(|e| FaultError::Proxy(e.into()))
    }

    fn counters(&self) -> FaultCounters {
        let c = Proxy::counters(self);
        FaultCounters {
            connections: c.connections,
            refused: c.refused,
            resets: c.resets,
            limited: c.limited,
            bytes_up: c.bytes_up,
            bytes_down: c.bytes_down,
            packets_up: c.packets_up,
            packets_down: c.packets_down,
            blackholed: c.blackholed,
            dropped: c.dropped,
        }
    }
}
