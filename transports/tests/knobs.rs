//! Transport knobs take effect and keep calls working: several HTTP/2 connections behind one
//! `grpc` connection, every QUIC congestion controller and window, and QUIC 0-RTT on a
//! reconnection (used only by calls marked replay-safe).

// Test helpers: a failed unwrap is the test failing, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use wirebench_core::transport::Options;
use wirebench_core::{
    CallOptions, ClientConfig, Connection, Echo, EchoRequest, Server, ServerConfig, Transport,
};
use wirebench_grpc::Grpc;
use wirebench_quic::Quic;
use wirebench_tls::{TlsMaterial, TlsMode};

const LIMIT: Duration = Duration::from_secs(20);

fn options(pairs: &[(&str, &str)]) -> Options {
    let mut o = Options::new();
    for (k, v) in pairs {
        o.set(*k, *v);
    }
    o
}

async fn calls_work<C: Connection>(c: &C, n: usize) {
    let calls = (0..n).map(|i| async move {
        let r = c
            .unary(
                EchoRequest::new(vec![i as u8; 100]),
                &CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.message.payload[..], [i as u8; 100]);
    });
    join_all(calls).await;
}

#[tokio::test]
async fn grpc_spreads_calls_over_several_connections() {
    tokio::time::timeout(LIMIT, async {
        let knobs = options(&[
            ("connections", "3"),
            ("stream_window", "262144"),
            ("connection_window", "1048576"),
        ]);
        let server = Grpc
            .serve(
                &ServerConfig {
                    options: options(&[
                        ("max_concurrent_streams", "8"),
                        ("adaptive_window", "true"),
                    ]),
                    ..ServerConfig::loopback()
                },
                Arc::new(Echo::default()),
            )
            .await
            .unwrap();
        let config = ClientConfig {
            options: knobs,
            ..ClientConfig::default()
        };
        let c = Grpc.connect(&config, &server.endpoint()).await.unwrap();
        calls_work(&c, 30).await;
        // Three TCP connections each did an HTTP/2 handshake: more bytes than one would.
        let one = Grpc
            .connect(&ClientConfig::default(), &server.endpoint())
            .await
            .unwrap();
        calls_work(&one, 1).await;
        let (three, single) = (c.wire_bytes().unwrap(), one.wire_bytes().unwrap());
        assert!(three.sent > single.sent, "{three:?} vs {single:?}");
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn quic_runs_with_every_congestion_controller() {
    tokio::time::timeout(LIMIT, async {
        for cc in ["cubic", "newreno", "bbr"] {
            let knobs = options(&[
                ("congestion", cc),
                ("stream_window", "524288"),
                ("connection_window", "2097152"),
                ("send_window", "4194304"),
            ]);
            let server = Quic
                .serve(
                    &ServerConfig {
                        options: knobs.clone(),
                        ..ServerConfig::loopback()
                    },
                    Arc::new(Echo::default()),
                )
                .await
                .unwrap();
            let config = ClientConfig {
                options: knobs,
                ..ClientConfig::default()
            };
            let c = Quic.connect(&config, &server.endpoint()).await.unwrap();
            calls_work(&c, 20).await;
            server.shutdown().await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn quic_zero_rtt_on_reconnection() {
    tokio::time::timeout(LIMIT, async {
        let m = TlsMaterial::generate().unwrap();
        let knobs = options(&[("zero_rtt", "true")]);
        let server = Quic
            .serve(
                &ServerConfig {
                    options: knobs.clone(),
                    tls: m.server(TlsMode::Tls),
                    ..ServerConfig::loopback()
                },
                Arc::new(Echo::default()),
            )
            .await
            .unwrap();
        // Clones of these settings share one session cache: the second connection resumes.
        let config = ClientConfig {
            options: knobs,
            tls: m.client(TlsMode::Tls),
            ..ClientConfig::default()
        };
        let first = Quic.connect(&config, &server.endpoint()).await.unwrap();
        assert_eq!(first.zero_rtt(), None, "no ticket yet: a full handshake");
        calls_work(&first, 1).await;
        first.close().await;

        let second = Quic.connect(&config, &server.endpoint()).await.unwrap();
        assert!(
            second.zero_rtt().is_some(),
            "the reconnection was not made in 0-RTT"
        );
        let replay_safe = CallOptions {
            replay_safe: true,
            ..CallOptions::default()
        };
        let r = second
            .unary(EchoRequest::new(&b"early"[..]), &replay_safe)
            .await
            .unwrap();
        assert_eq!(&r.message.payload[..], b"early");
        calls_work(&second, 5).await;
        assert_eq!(
            second.zero_rtt(),
            Some(true),
            "the server should have accepted the early data"
        );
        server.shutdown().await;
    })
    .await
    .unwrap();
}
