//! Transports side by side, one criterion group per workload with the transports as its
//! members (`unary/1KiB/tcp`, `unary/1KiB/grpc`, ...), so criterion's violin and line charts
//! compare transports directly: unary round trips at 0 B, 1 KiB, 64 KiB and 1 MiB, a server
//! stream, a bidi stream, and connection setup. Every registered transport is measured; one
//! that cannot run here (a broker that is not installed) is skipped with its reason printed.
//!
//! One workload: `cargo bench -p wirebench-benches --bench transports -- unary/1KiB`; one
//! transport: `... -- '/tcp$'`; both: `... -- 'unary/1KiB/tcp$'` (criterion's filter is a
//! regular expression over the benchmark id).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wirebench_benches::{BenchServer, client_runtime};
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Connection, Directives, EchoRequest,
    Method, Transport,
};
use wirebench_transports::registry::{AnyConnection, AnyTransport};

const SIZES: [(usize, &str); 4] = [
    (0, "0B"),
    (1024, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

fn servers() -> Vec<(AnyTransport, BenchServer)> {
    AnyTransport::all()
        .into_iter()
        .filter_map(|t| match BenchServer::start(t) {
            Ok(s) => Some((t, s)),
            Err(e) => {
                eprintln!("skipping {}: {e}", t.name());
                None
            }
        })
        .collect()
}

/// Every transport that runs here, with its server, for the groups that call on an open
/// connection.
struct Peer {
    transport: AnyTransport,
    server: BenchServer,
}

impl Peer {
    /// A fresh connection, opened just before its measurement: one opened earlier would sit
    /// idle while the other transports are measured, and an idle QUIC connection times out.
    fn connect(&self, rt: &tokio::runtime::Runtime) -> AnyConnection {
        rt.block_on(
            self.transport
                .connect(&ClientConfig::default(), self.server.endpoint()),
        )
        .unwrap_or_else(|e| panic!("{}: connect: {e}", self.transport.name()))
    }
}

/// The peers whose transport has `cap` (a stream workload skips the others).
fn supporting(peers: &[Peer], cap: wirebench_core::Capability) -> impl Iterator<Item = &Peer> {
    peers
        .iter()
        .filter(move |p| p.transport.capabilities().supports(cap))
}

fn peers() -> Vec<Peer> {
    servers()
        .into_iter()
        .map(|(transport, server)| Peer { transport, server })
        .collect()
}

fn unary(c: &mut Criterion) {
    let rt = client_runtime();
    let peers = peers();
    let options = CallOptions::default();
    for (size, label) in SIZES {
        let mut g = c.benchmark_group(format!("unary/{label}"));
        g.throughput(Throughput::Bytes(2 * size as u64));
        let payload = Bytes::from(vec![0x5a; size]);
        for p in &peers {
            let conn = p.connect(&rt);
            g.bench_function(BenchmarkId::from_parameter(p.transport.name()), |b| {
                b.to_async(&rt).iter(|| async {
                    let r = conn
                        .unary(EchoRequest::new(payload.clone()), &options)
                        .await
                        .unwrap_or_else(|e| panic!("unary failed: {e}"));
                    black_box(r);
                });
            });
        }
        g.finish();
    }
}

fn server_stream(c: &mut Criterion) {
    const MESSAGES: u32 = 100;
    const SIZE: u32 = 16 << 10;
    let rt = client_runtime();
    let peers = peers();
    let options = CallOptions::default();
    let mut g = c.benchmark_group("server_stream/100x16KiB");
    g.throughput(Throughput::Bytes(u64::from(MESSAGES * SIZE)));
    for p in supporting(&peers, wirebench_core::Capability::ServerStream) {
        let conn = p.connect(&rt);
        g.bench_function(BenchmarkId::from_parameter(p.transport.name()), |b| {
            b.to_async(&rt).iter(|| async {
                let (mut s, mut r) = conn
                    .open(Method::ServerStream, &options)
                    .await
                    .unwrap_or_else(|e| panic!("open failed: {e}"));
                let d = Directives {
                    response_count: Some(MESSAGES),
                    response_size: Some(SIZE),
                    ..Default::default()
                };
                s.send(EchoRequest::new(Bytes::new()).with_directives(d))
                    .await
                    .unwrap_or_else(|e| panic!("send failed: {e}"));
                s.close_send()
                    .await
                    .unwrap_or_else(|e| panic!("close failed: {e}"));
                let mut n = 0;
                while let Some(m) = r
                    .recv()
                    .await
                    .unwrap_or_else(|e| panic!("recv failed: {e}"))
                {
                    n += m.payload.len();
                }
                black_box(n);
            });
        });
    }
    g.finish();
}

fn bidi(c: &mut Criterion) {
    const ROUND_TRIPS: u32 = 100;
    const SIZE: usize = 1024;
    let rt = client_runtime();
    let peers = peers();
    let options = CallOptions::default();
    let payload = Bytes::from(vec![0x5a; SIZE]);
    let mut g = c.benchmark_group("bidi/100x1KiB");
    g.throughput(Throughput::Bytes(2 * u64::from(ROUND_TRIPS) * SIZE as u64));
    for p in supporting(&peers, wirebench_core::Capability::Bidi) {
        let conn = p.connect(&rt);
        g.bench_function(BenchmarkId::from_parameter(p.transport.name()), |b| {
            b.to_async(&rt).iter(|| async {
                let (mut s, mut r) = conn
                    .open(Method::Bidi, &options)
                    .await
                    .unwrap_or_else(|e| panic!("open failed: {e}"));
                // Ping-pong: each message waits for its echo, as a chatty session would.
                for _ in 0..ROUND_TRIPS {
                    s.send(EchoRequest::new(payload.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("send failed: {e}"));
                    let m = r
                        .recv()
                        .await
                        .unwrap_or_else(|e| panic!("recv failed: {e}"))
                        .unwrap_or_else(|| panic!("stream ended early"));
                    black_box(m);
                }
                s.close_send()
                    .await
                    .unwrap_or_else(|e| panic!("close failed: {e}"));
                while r
                    .recv()
                    .await
                    .unwrap_or_else(|e| panic!("recv failed: {e}"))
                    .is_some()
                {}
            });
        });
    }
    g.finish();
}

fn connect(c: &mut Criterion) {
    let rt = client_runtime();
    let mut g = c.benchmark_group("connect");
    for (t, server) in servers() {
        g.bench_function(t.name(), |b| {
            b.to_async(&rt).iter(|| async {
                let conn = t
                    .connect(&ClientConfig::default(), server.endpoint())
                    .await
                    .unwrap_or_else(|e| panic!("connect failed: {e}"));
                // A connection is usable once a call completes (lazy transports connect then).
                conn.unary(EchoRequest::new(Bytes::new()), &CallOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("first call failed: {e}"));
                conn.close().await;
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = unary, server_stream, bidi, connect
}
criterion_main!(benches);
