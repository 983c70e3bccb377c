//! The loopback floor — a blocking `std::net` TCP ping-pong with `TCP_NODELAY`, one message
//! in flight — and the same measurement through a transport, so that every transport is shown
//! next to the floor measured in the same run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wirebench_transports::registry::AnyTransport;
use wirebench_transports::{ClientConfig, Echo, Server, ServerConfig, Transport};

use crate::affinity::{CpusSeen, Pin, current_cpu, pin_current_thread};
use crate::load::{self, EngineOptions, NoHooks, Target};
use wirebench_scenarios::load::{Length, LoadSpec};

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
    let end = Instant::now() + cfg.duration;
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
    drop(s);
    let server_cpus = server
        .join()
        .map_err(|_| anyhow!("floor server thread panicked"))??;
    Ok(Probe {
        name: "floor".into(),
        histogram: h,
        client_cpus: cpus,
        server_cpus,
    })
}

/// Measures a transport the same way: unary calls, one in flight, the server on its own
/// thread and single-threaded runtime, the client on another.
pub fn measure_transport(transport: AnyTransport, cfg: &ProbeConfig) -> Result<Probe> {
    let (client_cpu, server_cpu) = cfg.pin.cpus().unzip();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_server = stop.clone();
    let server = std::thread::Builder::new()
        .name(format!("{}-server", transport.name()))
        .spawn(move || -> Result<CpusSeen> {
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
                while !stop_server.load(Ordering::Acquire) {
                    cpus.note(current_cpu());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                server.shutdown().await;
                Ok(cpus)
            })
        })?;
    let endpoint = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("{} server did not start", transport.name()))?;
    // The client side is the load engine itself: a closed loop, one unary call in flight.
    let spec = LoadSpec {
        name: "probe".into(),
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
    stop.store(true, Ordering::Release);
    let server_cpus = server
        .join()
        .map_err(|_| anyhow!("{} server thread panicked", transport.name()))??;
    let outcome = result.map_err(|e| anyhow!("{} probe: {e}", transport.name()))?;
    Ok(Probe {
        name: transport.name().into(),
        histogram: outcome.merged.latency,
        client_cpus: outcome.client_cpus,
        server_cpus,
    })
}
