//! Per transport: unary round trip at 0 B, 1 KiB, 64 KiB and 1 MiB; server-stream throughput;
//! connection setup. Every registered transport is measured; one that cannot run here (a
//! broker that is not installed) is skipped with its reason printed.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wirebench_benches::{BenchServer, client_runtime};
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Connection, Directives, EchoRequest,
    Method, Transport,
};
use wirebench_transports::registry::AnyTransport;

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

fn unary(c: &mut Criterion) {
    let rt = client_runtime();
    for (t, server) in servers() {
        let mut g = c.benchmark_group(format!("unary/{}", t.name()));
        let conn = rt
            .block_on(t.connect(&ClientConfig::default(), server.endpoint()))
            .unwrap_or_else(|e| panic!("{}: connect: {e}", t.name()));
        let options = CallOptions::default();
        for (size, label) in SIZES {
            let payload = Bytes::from(vec![0x5a; size]);
            g.throughput(Throughput::Bytes(2 * size as u64));
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
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
    for (t, server) in servers() {
        if !t
            .capabilities()
            .supports(wirebench_core::Capability::ServerStream)
        {
            continue;
        }
        let mut g = c.benchmark_group(format!("stream/{}", t.name()));
        let conn = rt
            .block_on(t.connect(&ClientConfig::default(), server.endpoint()))
            .unwrap_or_else(|e| panic!("{}: connect: {e}", t.name()));
        let options = CallOptions::default();
        g.throughput(Throughput::Bytes(u64::from(MESSAGES * SIZE)));
        g.bench_function("server_stream_100x16KiB", |b| {
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
        g.finish();
    }
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
    targets = unary, server_stream, connect
}
criterion_main!(benches);
