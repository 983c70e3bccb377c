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
use wirebench_transports::grpc::baseline as grpc_min;
use wirebench_transports::nats::baseline::{BaselineClient, BaselineServer};
use wirebench_transports::nats::broker::NatsProcess;
use wirebench_transports::quic::baseline as quic_min;
use wirebench_transports::registry::{AnyConnection, AnyServer, AnyTransport};
use wirebench_transports::{
    CallOptions, ClientConfig, Connection, Echo, EchoRequest, Server, ServerConfig, Transport,
};

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

/// The minimal plain async-nats request/reply pair, on a private broker or `url`.
struct NatsBaseline {
    url: Option<String>,
}

/// The subject the yardstick answers on.
const BASELINE_SUBJECT: &str = "wb.floor.baseline";

impl PlainTarget for NatsBaseline {
    type Running = (BaselineServer, Option<NatsProcess>);
    type Conn = BaselineClient;

    async fn serve(&self) -> Result<(Self::Running, String)> {
        let (url, broker) = match &self.url {
            Some(u) => (u.clone(), None),
            None => {
                let b = NatsProcess::start(([127, 0, 0, 1], 0).into()).await?;
                (b.url(), Some(b))
            }
        };
        let server = BaselineServer::start(&url, BASELINE_SUBJECT).await?;
        Ok(((server, broker), url))
    }

    async fn stop((server, broker): Self::Running) {
        server.stop();
        if let Some(b) = broker {
            b.stop().await;
        }
    }

    async fn connect(&self, endpoint: &str) -> Result<BaselineClient> {
        Ok(BaselineClient::connect(endpoint, BASELINE_SUBJECT).await?)
    }

    async fn call(conn: &BaselineClient, payload: Bytes) -> Result<()> {
        conn.call(payload).await?;
        Ok(())
    }

    async fn close(_conn: BaselineClient) {}
}

/// The yardstick for `tcp`: the floor's ping-pong with tokio on both sides (current-thread
/// runtimes, a `TCP_NODELAY` socket, no framing, no codec), through the plain client loop. Its
/// gap to the floor is what an async runtime alone costs (epoll instead of a blocking read,
/// the scheduler), so `tcp*` next to it shows what the transport itself adds.
struct TokioPingPong {
    payload: usize,
}

/// A `TokioPingPong` client: one socket and its read buffer (one call at a time).
struct PingPongConn(tokio::sync::Mutex<(tokio::net::TcpStream, Vec<u8>)>);

impl PlainTarget for TokioPingPong {
    type Running = tokio::task::AbortHandle;
    type Conn = PingPongConn;

    async fn serve(&self) -> Result<(Self::Running, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the tokio ping-pong listener")?;
        let addr = listener.local_addr()?;
        let payload = self.payload.max(1);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; payload];
                    while s.read_exact(&mut buf).await.is_ok() {
                        if s.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok((task.abort_handle(), addr.to_string()))
    }

    async fn stop(running: Self::Running) {
        running.abort();
    }

    async fn connect(&self, endpoint: &str) -> Result<PingPongConn> {
        let s = tokio::net::TcpStream::connect(endpoint)
            .await
            .with_context(|| format!("connecting to the tokio ping-pong at {endpoint}"))?;
        s.set_nodelay(true)?;
        Ok(PingPongConn(tokio::sync::Mutex::new((
            s,
            vec![0u8; self.payload.max(1)],
        ))))
    }

    async fn call(conn: &PingPongConn, payload: Bytes) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut guard = conn.0.lock().await;
        let (s, buf) = &mut *guard;
        // The floor sends at least one byte; so does its yardstick.
        let out: &[u8] = if payload.is_empty() {
            &[0x5a]
        } else {
            &payload
        };
        s.write_all(out).await?;
        s.read_exact(&mut buf[..out.len()]).await?;
        Ok(())
    }

    async fn close(_conn: PingPongConn) {}
}

/// The yardstick for `quic`: stock quinn, one stream per call carrying the raw payload (see
/// [`wirebench_transports::quic::baseline`]).
#[derive(Default)]
struct QuinnBaseline {
    /// The server's throwaway certificate, for the client to trust (set by `serve`).
    cert: std::sync::OnceLock<Vec<u8>>,
}

impl PlainTarget for QuinnBaseline {
    type Running = quic_min::BaselineServer;
    type Conn = quic_min::BaselineClient;

    async fn serve(&self) -> Result<(Self::Running, String)> {
        let server = quic_min::BaselineServer::start()?;
        let addr = server.addr()?;
        let _ = self.cert.set(server.certificate());
        Ok((server, addr.to_string()))
    }

    async fn stop(running: Self::Running) {
        running.stop();
    }

    async fn connect(&self, endpoint: &str) -> Result<Self::Conn> {
        let addr = endpoint
            .parse()
            .with_context(|| format!("the quinn yardstick's address {endpoint}"))?;
        let cert = self.cert.get().cloned().unwrap_or_default();
        Ok(quic_min::BaselineClient::connect(addr, cert).await?)
    }

    async fn call(conn: &Self::Conn, payload: Bytes) -> Result<()> {
        conn.call(&payload).await?;
        Ok(())
    }

    async fn close(conn: Self::Conn) {
        conn.close();
    }
}

/// The yardstick for `grpc`: tonic's stock server and Channel (see
/// [`wirebench_transports::grpc::baseline`]).
struct TonicBaseline;

impl PlainTarget for TonicBaseline {
    type Running = grpc_min::BaselineServer;
    type Conn = grpc_min::BaselineClient;

    async fn serve(&self) -> Result<(Self::Running, String)> {
        let server = grpc_min::BaselineServer::start()?;
        let addr = server.addr();
        Ok((server, addr.to_string()))
    }

    async fn stop(running: Self::Running) {
        running.stop();
    }

    async fn connect(&self, endpoint: &str) -> Result<Self::Conn> {
        let addr = endpoint
            .parse()
            .with_context(|| format!("the tonic yardstick's address {endpoint}"))?;
        Ok(grpc_min::BaselineClient::connect(addr).await?)
    }

    async fn call(conn: &Self::Conn, payload: Bytes) -> Result<()> {
        conn.call(payload).await?;
        Ok(())
    }

    async fn close(_conn: Self::Conn) {}
}

/// Measures `tokio-min*`, the minimal tokio ping-pong (see [`TokioPingPong`]), with the plain
/// client loop.
pub fn measure_tokio_ping_pong(cfg: &ProbeConfig) -> Result<Probe> {
    run_probe(
        "tokio-min*",
        TokioPingPong {
            payload: cfg.payload,
        },
        cfg,
    )
}

/// Measures `quinn-min*`, the minimal quinn request/response (see [`QuinnBaseline`]), with the
/// plain client loop.
pub fn measure_quinn_baseline(cfg: &ProbeConfig) -> Result<Probe> {
    run_probe("quinn-min*", QuinnBaseline::default(), cfg)
}

/// Measures `tonic-min*`, the minimal tonic unary echo (see [`TonicBaseline`]), with the plain
/// client loop.
pub fn measure_tonic_baseline(cfg: &ProbeConfig) -> Result<Probe> {
    run_probe("tonic-min*", TonicBaseline, cfg)
}

/// Measures the minimal plain async-nats request/reply pair (`nats-min*`), the yardstick for
/// `nats`, on a private broker or the one at `url`, with the plain client loop.
pub fn measure_nats_baseline(cfg: &ProbeConfig, url: Option<String>) -> Result<Probe> {
    run_probe("nats-min*", NatsBaseline { url }, cfg)
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
                measure_tokio_ping_pong(&cfg)
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
                measure_quinn_baseline(&cfg)
            });
            let tonic = within(Duration::from_secs(20), move || {
                measure_tonic_baseline(&cfg)
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
