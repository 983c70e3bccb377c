//! The loopback floor — a blocking `std::net` TCP ping-pong with `TCP_NODELAY`, one message
//! in flight — and the same measurement through a transport, so that every transport is shown
//! next to the floor measured in the same run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wirebench_transports::registry::AnyTransport;
use wirebench_transports::{
    CallOptions, ClientConfig, Connection, Echo, EchoRequest, Server, ServerConfig, Transport,
};

use crate::affinity::{CpusSeen, Pin, current_cpu, pin_current_thread};

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
    /// Calls in flight at once on the one connection of a transport probe (the floor itself
    /// is always one message in flight).
    pub inflight: usize,
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
    /// CPUs the client thread ran on.
    pub client_cpus: CpusSeen,
    /// CPUs the server thread ran on.
    pub server_cpus: CpusSeen,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// CPU time the client and server threads spent during the measured part (transport
    /// probes only: each side runs on one thread, so this is all of its work).
    pub cpu: Option<CpuCost>,
}

/// CPU time of each side of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuCost {
    /// Client thread CPU time.
    pub client: Duration,
    /// Server thread CPU time.
    pub server: Duration,
}

impl Probe {
    /// Completed calls per second of wall time.
    pub fn throughput(&self) -> f64 {
        self.histogram.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per call on (client, server).
    pub fn cpu_us_per_call(&self) -> Option<(f64, f64)> {
        let n = self.histogram.len().max(1) as f64;
        self.cpu.map(|c| {
            (
                c.client.as_secs_f64() * 1e6 / n,
                c.server.as_secs_f64() * 1e6 / n,
            )
        })
    }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// A histogram for nanosecond latencies from 1 ns to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

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
        client_cpus: cpus,
        server_cpus,
        elapsed,
        cpu: None,
    })
}

/// The phases of a transport probe, as the server thread sees them.
const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const DONE: u8 = 2;

/// Measures a transport the same way: unary calls (`cfg.inflight` at once on one
/// connection), the server on its own thread and single-threaded runtime, the client on
/// another; each side's thread CPU time is taken over the measured part.
pub fn measure_transport(transport: AnyTransport, cfg: &ProbeConfig) -> Result<Probe> {
    let (client_cpu, server_cpu) = cfg.pin.cpus().unzip();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (phase_tx, mut phase_rx) = tokio::sync::watch::channel(WARMING);
    let server = std::thread::Builder::new()
        .name(format!("{}-server", transport.name()))
        .spawn(move || -> Result<(CpusSeen, Duration)> {
            pin(server_cpu)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let server = transport
                    .serve(&ServerConfig::loopback(), Arc::new(Echo::default()))
                    .await?;
                let _ = ready_tx.send(server.endpoint());
                let mut cpus = CpusSeen::default();
                cpus.note(current_cpu());
                let mut cpu_start = Duration::ZERO;
                let mut cpu_end = Duration::ZERO;
                // The client drives the phases; a client that fails drops the sender.
                while phase_rx.changed().await.is_ok() {
                    cpus.note(current_cpu());
                    match *phase_rx.borrow_and_update() {
                        MEASURING => cpu_start = thread_cpu(),
                        DONE => {
                            cpu_end = thread_cpu();
                            break;
                        }
                        _ => {}
                    }
                }
                server.shutdown().await;
                Ok((cpus, cpu_end.saturating_sub(cpu_start)))
            })
        })?;
    let endpoint = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("{} server did not start", transport.name()))?;
    pin(client_cpu)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let payload = Bytes::from(vec![0x5au8; cfg.payload]);
    let inflight = cfg.inflight.max(1);
    let result = rt.block_on(async {
        let conn = transport
            .connect(&ClientConfig::default(), &endpoint)
            .await?;
        let options = CallOptions::default();
        let warm_until = Instant::now() + cfg.warmup;
        let warm = (0..inflight).map(|_| async {
            while Instant::now() < warm_until {
                conn.unary(EchoRequest::new(payload.clone()), &options)
                    .await?;
            }
            anyhow::Ok(())
        });
        futures::future::try_join_all(warm).await?;
        // One histogram and counters shared by the callers: they all run on this thread.
        let h = std::cell::RefCell::new(latency_histogram());
        let cpus = std::cell::RefCell::new(CpusSeen::default());
        let n = std::cell::Cell::new(0u64);
        let _ = phase_tx.send(MEASURING);
        let cpu_start = thread_cpu();
        let started = Instant::now();
        let end = started + cfg.duration;
        let callers = (0..inflight).map(|_| async {
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return anyhow::Ok(());
                }
                conn.unary(EchoRequest::new(payload.clone()), &options)
                    .await?;
                h.borrow_mut()
                    .saturating_record(t0.elapsed().as_nanos() as u64);
                if n.get().is_multiple_of(CPU_SAMPLE_EVERY) {
                    cpus.borrow_mut().note(current_cpu());
                }
                n.set(n.get() + 1);
            }
        });
        futures::future::try_join_all(callers).await?;
        let elapsed = started.elapsed();
        let client_cpu_time = thread_cpu().saturating_sub(cpu_start);
        let _ = phase_tx.send(DONE);
        conn.close().await;
        anyhow::Ok((h.into_inner(), cpus.into_inner(), elapsed, client_cpu_time))
    });
    // Whatever happened, the server thread must end (a failed client dropped the sender).
    drop(phase_tx);
    let (server_cpus, server_cpu_time) = server
        .join()
        .map_err(|_| anyhow!("{} server thread panicked", transport.name()))??;
    let (histogram, client_cpus, elapsed, client_cpu_time) = result?;
    Ok(Probe {
        name: transport.name().into(),
        histogram,
        client_cpus,
        server_cpus,
        elapsed,
        cpu: Some(CpuCost {
            client: client_cpu_time,
            server: server_cpu_time,
        }),
    })
}
