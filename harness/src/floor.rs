//! The loopback floor — a blocking `std::net` TCP ping-pong with `TCP_NODELAY`, one message
//! in flight — and the same measurement through a transport, so that every transport is shown
//! next to the floor measured in the same run. Transports can also be probed with several
//! calls in flight on their connection (a simple throughput measurement), and `nats` beside its
//! yardstick, a minimal plain async-nats request/reply pair, and `tcp` beside its own, the floor's
//! ping-pong on tokio, each pair driven by one plain client loop so that it is compared like
//! for like.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures::future::join_all;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wirebench_core::Yardstick;
use wirebench_core::{
    CallOptions, ClientConfig, Connection, Echo, EchoRequest, Server, ServerConfig, Transport,
};
use wirebench_transports::registry::{AnyConnection, AnyServer, AnyTransport, AnyYardstick};

use crate::affinity::{CpuMask, CpusSeen, Pin, current_cpu, pin_current_thread};
use crate::load::{self, EngineOptions, NoHooks, Target};
use wirebench_scenarios::load::{Length, LoadSpec, Mode};

/// How to measure.
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// Bytes per message (each way).
    pub payload: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time run first and discarded.
    pub warmup: Duration,
    /// Where the client and server threads run.
    pub pin: Pin,
    /// Calls in flight on the client's connection (1 = ping-pong); the floor itself is always
    /// one.
    pub in_flight: usize,
}

/// Latency percentiles of a run, in nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Round trips measured.
    pub count: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

impl LatencySummary {
    /// Summarizes a histogram.
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// One latency probe's result.
#[derive(Debug)]
pub struct Probe {
    /// `floor` or the transport's name.
    pub name: String,
    /// Round-trip times, ns.
    pub histogram: Histogram<u64>,
    /// How long the measured phase ran.
    pub elapsed: Duration,
    /// CPUs the client thread ran on.
    pub client_cpus: CpusSeen,
    /// CPUs the server thread ran on.
    pub server_cpus: CpusSeen,
}

pub use wirebench_reports::histogram::latency_histogram;

const CPU_SAMPLE_EVERY: u64 = 1024;

fn pin(cpu: Option<usize>) -> Result<()> {
    if let Some(c) = cpu {
        pin_current_thread(c).map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

/// Measures the floor: a blocking TCP ping-pong between two threads of this process.
pub fn measure_floor(cfg: &ProbeConfig) -> Result<Probe> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the floor's listener")?;
    let addr = listener.local_addr()?;
    let payload = cfg.payload.max(1);
    let (client_cpu, server_cpu) = cfg.pin.cpus().unzip();
    let server = std::thread::Builder::new()
        .name("floor-server".into())
        .spawn(move || -> Result<CpusSeen> {
            pin(server_cpu)?;
            let (mut s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            let mut buf = vec![0u8; payload];
            let mut cpus = CpusSeen::default();
            let mut n = 0u64;
            loop {
                if s.read_exact(&mut buf).is_err() {
                    return Ok(cpus);
                }
                s.write_all(&buf)?;
                if n.is_multiple_of(CPU_SAMPLE_EVERY) {
                    cpus.note(current_cpu());
                }
                n += 1;
            }
        })?;
    pin(client_cpu)?;
    let mut s = TcpStream::connect(addr).context("connecting to the floor's listener")?;
    s.set_nodelay(true)?;
    let out = vec![0x5au8; payload];
    let mut back = vec![0u8; payload];
    let mut h = latency_histogram();
    let mut cpus = CpusSeen::default();
    let warm_until = Instant::now() + cfg.warmup;
    while Instant::now() < warm_until {
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
    }
    let started = Instant::now();
    let end = started + cfg.duration;
    let mut n = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
        h.saturating_record(t0.elapsed().as_nanos() as u64);
        if n.is_multiple_of(CPU_SAMPLE_EVERY) {
            cpus.note(current_cpu());
        }
        n += 1;
    }
    let elapsed = started.elapsed();
    drop(s);
    let server_cpus = server
        .join()
        .map_err(|_| anyhow!("floor server thread panicked"))??;
    Ok(Probe {
        name: "floor".into(),
        histogram: h,
        elapsed,
        client_cpus: cpus,
        server_cpus,
    })
}

/// What a thread spinning on one CPU saw of the host: every stretch longer than
/// [`GAP_NS`] between two consecutive clock reads is time the thread did not run (an
/// interrupt, the hypervisor taking the vCPU). No process can pace requests or answer them
/// more evenly than this, so it bounds what an open loop's generator lag can be here.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostGaps {
    /// The CPU spun on.
    pub cpu: usize,
    /// How long it spun, ns.
    pub spun_ns: u64,
    /// Gaps longer than 10 µs.
    pub over_10us: u64,
    /// Gaps longer than 50 µs.
    pub over_50us: u64,
    /// Gaps longer than 100 µs.
    pub over_100us: u64,
    /// The time lost in gaps, ns.
    pub lost_ns: u64,
    /// The longest gap, ns.
    pub longest_ns: u64,
}

/// The shortest stretch between two clock reads counted as a gap.
pub const GAP_NS: u64 = 10_000;

impl HostGaps {
    /// Accounts the time between two consecutive clock reads.
    fn note(&mut self, delta_ns: u64) {
        self.spun_ns += delta_ns;
        self.longest_ns = self.longest_ns.max(delta_ns);
        if delta_ns > GAP_NS {
            self.over_10us += 1;
            self.lost_ns += delta_ns;
            self.over_50us += u64::from(delta_ns > 50_000);
            self.over_100us += u64::from(delta_ns > 100_000);
        }
    }

    /// Gaps longer than 50 µs per second spun.
    pub fn over_50us_per_s(&self) -> f64 {
        self.over_50us as f64 / (self.spun_ns as f64 / 1e9).max(1e-9)
    }
}

/// Spins on `cpu` for `duration` and reports the gaps (see [`HostGaps`]).
pub fn measure_host_gaps(cpu: usize, duration: Duration) -> Result<HostGaps> {
    std::thread::Builder::new()
        .name(format!("gaps-{cpu}"))
        .spawn(move || -> Result<HostGaps> {
            pin(Some(cpu))?;
            let mut g = HostGaps {
                cpu,
                ..HostGaps::default()
            };
            let start = Instant::now();
            let mut last = start;
            while last - start < duration {
                let now = Instant::now();
                g.note((now - last).as_nanos() as u64);
                last = now;
            }
            Ok(g)
        })?
        .join()
        .map_err(|_| anyhow!("the gap probe on CPU {cpu} panicked"))?
}

/// A pinned server thread's runtime: single-threaded, noting its CPU at every wake-up (a hook,
/// not a polling timer: a pending timer would make every park arm a kernel hrtimer, a cost
/// the blocking floor server does not pay).
fn server_runtime(cpu: Option<usize>) -> Result<(tokio::runtime::Runtime, Arc<CpuMask>)> {
    pin(cpu)?;
    let cpus = Arc::new(CpuMask::default());
    cpus.note_current();
    let noted = cpus.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_unpark(move || noted.note_current())
        .build()?;
    Ok((rt, cpus))
}

/// Measures a transport the same way: unary calls (`cfg.in_flight` at a time), the server on
/// its own thread and single-threaded runtime, the client on another. A broker transport starts
/// a private broker (its own process, not pinned).
pub fn measure_transport(transport: AnyTransport, cfg: &ProbeConfig) -> Result<Probe> {
    measure_transport_on(transport, cfg, ServerConfig::loopback())
}

/// [`measure_transport`] with the server started as `server_config` says (a broker URL, say).
pub fn measure_transport_on(
    transport: AnyTransport,
    cfg: &ProbeConfig,
    server_config: ServerConfig,
) -> Result<Probe> {
    let (client_cpu, server_cpu) = cfg.pin.cpus().unzip();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_server = stop.clone();
    let server = std::thread::Builder::new()
        .name(format!("{}-server", transport.name()))
        .spawn(move || -> Result<CpusSeen> {
            let (rt, cpus) = server_runtime(server_cpu)?;
            rt.block_on(async move {
                let server = transport
                    .serve(&server_config, Arc::new(Echo::default()))
                    .await?;
                let _ = ready_tx.send(server.endpoint());
                stop_server.notified().await;
                server.shutdown().await;
                Ok(cpus.seen())
            })
        })?;
    // A broker transport may start its broker first (JetStream recovers its storage).
    let endpoint = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("{} server did not start", transport.name()))?;
    // The client side is the load engine itself: a closed loop, `in_flight` unary calls.
    let spec = LoadSpec {
        name: "probe".into(),
        mode: Mode::Closed {
            concurrency: u32::try_from(cfg.in_flight.max(1)).unwrap_or(u32::MAX),
        },
        payload: cfg.payload,
        warmup: cfg.warmup,
        length: Length::Duration(cfg.duration),
        ..LoadSpec::default()
    };
    let target = Target {
        transport,
        endpoint,
        client: ClientConfig::default(),
    };
    let engine = EngineOptions {
        cpus: client_cpu.map(|c| vec![c]),
        ..EngineOptions::default()
    };
    let result = load::run(&spec, &target, &engine, &mut NoHooks);
    stop.notify_one();
    let server_cpus = server
        .join()
        .map_err(|_| anyhow!("{} server thread panicked", transport.name()))??;
    let outcome = result.map_err(|e| anyhow!("{} probe: {e}", transport.name()))?;
    Ok(Probe {
        name: transport.name().into(),
        histogram: outcome.merged.latency,
        elapsed: outcome.elapsed,
        client_cpus: outcome.client_cpus,
        server_cpus,
    })
}

/// Something the plain client loop can serve and call: a transport, or a yardstick.
trait PlainTarget: Send + Sync + 'static {
    /// What keeps the server running.
    type Running;
    /// A client connection.
    type Conn: Send + Sync;

    /// Starts the server side; returns it and where to connect.
    async fn serve(&self) -> Result<(Self::Running, String)>;
    /// Stops it.
    async fn stop(running: Self::Running);
    /// Connects a client (the client side runs in a spawned task: `Send` futures).
    fn connect(&self, endpoint: &str) -> impl Future<Output = Result<Self::Conn>> + Send;
    /// One call.
    fn call(conn: &Self::Conn, payload: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Closes the client.
    fn close(conn: Self::Conn) -> impl Future<Output = ()> + Send;
}

/// A transport, served as `server` says.
struct TransportTarget {
    transport: AnyTransport,
    server: ServerConfig,
}

impl PlainTarget for TransportTarget {
    type Running = AnyServer;
    type Conn = AnyConnection;

    async fn serve(&self) -> Result<(AnyServer, String)> {
        let s = self
            .transport
            .serve(&self.server, Arc::new(Echo::default()))
            .await?;
        let endpoint = s.endpoint();
        Ok((s, endpoint))
    }

    async fn stop(running: AnyServer) {
        running.shutdown().await;
    }

    async fn connect(&self, endpoint: &str) -> Result<AnyConnection> {
        Ok(self
            .transport
            .connect(&ClientConfig::default(), endpoint)
            .await?)
    }

    async fn call(conn: &AnyConnection, payload: Bytes) -> Result<()> {
        conn.unary(EchoRequest::new(payload), &CallOptions::default())
            .await?;
        Ok(())
    }

    async fn close(conn: AnyConnection) {
        conn.close().await;
    }
}

/// A transport's yardstick (see `wirebench_core::yardstick`): each transport declares its own.
impl PlainTarget for AnyYardstick {
    type Running = <AnyYardstick as Yardstick>::Server;
    type Conn = <AnyYardstick as Yardstick>::Client;

    async fn serve(&self) -> Result<(Self::Running, String)> {
        Ok(Yardstick::serve(self).await?)
    }

    async fn stop(running: Self::Running) {
        <AnyYardstick as Yardstick>::stop(running).await;
    }

    async fn connect(&self, endpoint: &str) -> Result<Self::Conn> {
        Ok(Yardstick::connect(self, endpoint).await?)
    }

    async fn call(conn: &Self::Conn, payload: Bytes) -> Result<()> {
        Ok(<AnyYardstick as Yardstick>::call(conn, payload).await?)
    }

    async fn close(conn: Self::Conn) {
        <AnyYardstick as Yardstick>::close(conn).await;
    }
}

/// Measures a transport's yardstick (its `name()`, e.g. `nats-min*`) with the plain client
/// loop, like for like with [`measure_plain`].
pub fn measure_yardstick(yardstick: AnyYardstick, cfg: &ProbeConfig) -> Result<Probe> {
    let name = yardstick.name();
    run_probe(name, yardstick, cfg)
}

/// Measures a transport with the plain client loop (`<name>*`), for a like-for-like comparison
/// with a yardstick measured by the same loop (the load engine has costs of its own).
pub fn measure_plain(
    transport: AnyTransport,
    cfg: &ProbeConfig,
    server: ServerConfig,
) -> Result<Probe> {
    let name = format!("{}*", transport.name());
    run_probe(&name, TransportTarget { transport, server }, cfg)
}

fn run_probe<T: PlainTarget>(name: &str, target: T, cfg: &ProbeConfig) -> Result<Probe> {
    let (client_cpu, server_cpu) = cfg.pin.cpus().unzip();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_server = stop.clone();
    let server = std::thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || -> Result<CpusSeen> {
            let (rt, cpus) = server_runtime(server_cpu)?;
            rt.block_on(async move {
                let (running, endpoint) = match target.serve().await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(CpusSeen::default());
                    }
                };
                let _ = ready_tx.send(Ok((endpoint, target)));
                stop_server.notified().await;
                T::stop(running).await;
                Ok(cpus.seen())
            })
        })?;
    let ready = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("{name} server did not start within 30 s"));
    let (endpoint, target) = match ready {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = server.join();
            return Err(e.context(format!("starting the {name} server")));
        }
        Err(e) => {
            stop.notify_one();
            return Err(e);
        }
    };
    let result = run_client(target, endpoint, cfg, client_cpu);
    stop.notify_one();
    let server_cpus = server
        .join()
        .map_err(|_| anyhow!("{name} server thread panicked"))??;
    let (histogram, client_cpus, elapsed) = result?;
    Ok(Probe {
        name: name.into(),
        histogram,
        elapsed,
        client_cpus,
        server_cpus,
    })
}

fn run_client<T: PlainTarget>(
    target: T,
    endpoint: String,
    cfg: &ProbeConfig,
    client_cpu: Option<usize>,
) -> Result<(Histogram<u64>, CpusSeen, Duration)> {
    pin(client_cpu)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let payload = Bytes::from(vec![0x5au8; cfg.payload]);
    let cfg = *cfg;
    let endpoint = endpoint.to_owned();
    // The calls run in a spawned task, as the load engine's callers do: a block_on future
    // woken by another task costs the current-thread runtime an extra zero-timeout epoll_wait.
    rt.block_on(async move {
        tokio::spawn(async move {
            let conn = target.connect(&endpoint).await?;
            let callers = cfg.in_flight.max(1);
            let warm_until = Instant::now() + cfg.warmup;
            join_all((0..callers).map(|_| async {
                while Instant::now() < warm_until {
                    T::call(&conn, payload.clone()).await?;
                }
                anyhow::Ok(())
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
            let started = Instant::now();
            let end = started + cfg.duration;
            let per_caller = join_all((0..callers).map(|i| {
                let (conn, payload) = (&conn, &payload);
                async move {
                    let mut h = latency_histogram();
                    let mut cpus = CpusSeen::default();
                    let mut n = 0u64;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        T::call(conn, payload.clone()).await?;
                        h.saturating_record(t0.elapsed().as_nanos() as u64);
                        if i == 0 && n.is_multiple_of(CPU_SAMPLE_EVERY) {
                            cpus.note(current_cpu());
                        }
                        n += 1;
                    }
                    anyhow::Ok((h, cpus))
                }
            }))
            .await;
            let elapsed = started.elapsed();
            T::close(conn).await;
            let mut merged = latency_histogram();
            let mut cpus = CpusSeen::default();
            for r in per_caller {
                let (h, c) = r?;
                merged
                    .add(&h)
                    .map_err(|e| anyhow!("merging histograms: {e}"))?;
                for cpu in c.0 {
                    cpus.note(Some(cpu));
                }
            }
            Ok((merged, cpus, elapsed))
        })
        .await
        .map_err(|e| anyhow!("probe task failed: {e}"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on its own thread and fails the test if it takes longer than `limit`.
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).expect("probe finished in time")
    }

    #[test]
    fn host_gaps_count_only_long_stretches() {
        let mut g = HostGaps::default();
        for d in [30, 40, 9_999, 10_000, 10_001, 50_001, 100_001, 2_000_000] {
            g.note(d);
        }
        assert_eq!((g.over_10us, g.over_50us, g.over_100us), (4, 3, 2));
        assert_eq!(g.lost_ns, 10_001 + 50_001 + 100_001 + 2_000_000);
        assert_eq!(g.longest_ns, 2_000_000);
        assert_eq!(g.spun_ns, 2_180_072);
        let probed = measure_host_gaps(0, Duration::from_millis(20)).unwrap();
        assert!(probed.spun_ns >= 20_000_000 && probed.lost_ns <= probed.spun_ns);
    }

    /// The yardstick transport `name` declares for `cfg`.
    fn yardstick_of(name: &str, cfg: &ProbeConfig) -> AnyYardstick {
        let config = wirebench_core::YardstickConfig {
            payload: cfg.payload,
            in_flight: cfg.in_flight,
            broker_url: None,
        };
        AnyTransport::by_name(name)
            .and_then(|t| t.yardstick(&config))
            .expect("the transport declares a yardstick")
    }

    /// The floor and its tokio yardstick each complete round trips of every payload size
    /// (an echo that answered short would leave `read_exact` waiting: the time limit fails it).
    #[test]
    fn floor_and_tokio_ping_pong_measure_round_trips() {
        for payload in [0usize, 1, 64, 70_000] {
            let cfg = ProbeConfig {
                payload,
                duration: Duration::from_millis(100),
                warmup: Duration::from_millis(10),
                pin: Pin::None,
                in_flight: 1,
            };
            let floor = within(Duration::from_secs(20), move || measure_floor(&cfg)).unwrap();
            let tokio = within(Duration::from_secs(20), move || {
                measure_yardstick(yardstick_of("tcp", &cfg), &cfg)
            })
            .unwrap();
            for p in [&floor, &tokio] {
                assert!(
                    !p.histogram.is_empty(),
                    "{} at {payload} B: no round trips",
                    p.name
                );
                assert!(!p.client_cpus.0.is_empty() && !p.server_cpus.0.is_empty());
            }
            assert_eq!(tokio.name, "tokio-min*");
        }
    }

    #[test]
    fn quinn_and_tonic_yardsticks_measure_round_trips() {
        for in_flight in [1, 4] {
            let cfg = ProbeConfig {
                payload: 64,
                duration: Duration::from_millis(100),
                warmup: Duration::from_millis(10),
                pin: Pin::None,
                in_flight,
            };
            let quinn = within(Duration::from_secs(20), move || {
                measure_yardstick(yardstick_of("quic", &cfg), &cfg)
            });
            let tonic = within(Duration::from_secs(20), move || {
                measure_yardstick(yardstick_of("grpc", &cfg), &cfg)
            });
            for (p, name) in [
                (quinn.unwrap(), "quinn-min*"),
                (tonic.unwrap(), "tonic-min*"),
            ] {
                assert_eq!(p.name, name);
                assert!(!p.histogram.is_empty(), "{name}: no round trips");
                assert!(!p.client_cpus.0.is_empty() && !p.server_cpus.0.is_empty());
            }
        }
    }
}
