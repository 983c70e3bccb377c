//! Smoke tests of every transport through the registry: unary, each streaming method, and a
//! connection that survives a failed call. The full behaviour is checked by the conformance
//! cases in `wirebench-scenarios`. Broker transports start a private broker per test (skipped
//! with a message when its program is missing, failed when `CI` is set).

use std::sync::Arc;
use std::time::Duration;

use wirebench_core::broker::Broker;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Code, Connection, Directives, Echo,
    EchoRequest, FailWith, Method, Server, ServerConfig, Transport, pattern,
};
use wirebench_transports::{AnyTransport, names};

const LIMIT: Duration = Duration::from_secs(10);

async fn each_transport<F, Fut>(f: F)
where
    F: Fn(AnyTransport, wirebench_transports::AnyConnection) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for name in names() {
        let t = AnyTransport::by_name(name).expect("registered transport");
        if let Some(b) = t.broker()
            && let Err(e) = b.check_available()
        {
            // Broker transports need their broker program; CI must have it.
            assert!(std::env::var_os("CI").is_none(), "CI is set: {name}: {e}");
            eprintln!("skipping {name}: {e}");
            continue;
        }
        let server = t
            .serve(&ServerConfig::loopback(), Arc::new(Echo::default()))
            .await
            .unwrap_or_else(|e| panic!("{name}: serve: {e}"));
        let conn = t
            .connect(&ClientConfig::default(), &server.endpoint())
            .await
            .unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        tokio::time::timeout(LIMIT, f(t, conn))
            .await
            .unwrap_or_else(|_| panic!("{name}: timed out"));
        server.shutdown().await;
    }
}

#[tokio::test]
async fn unary_echoes_and_sizes() {
    each_transport(|t, c| async move {
        let r = c
            .unary(EchoRequest::new(&b"hello"[..]), &CallOptions::default())
            .await
            .unwrap();
        assert_eq!(&r.message.payload[..], b"hello", "{}", t.name());
        let d = Directives {
            response_size: Some(100_000),
            ..Default::default()
        };
        let r = c
            .unary(
                EchoRequest::new(&b"x"[..]).with_directives(d),
                &CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.message.payload, pattern(100_000));
    })
    .await;
}

#[tokio::test]
async fn failed_call_leaves_connection_usable() {
    each_transport(|t, c| async move {
        let d = Directives {
            fail: Some(FailWith {
                code: Code::NotFound,
                message: "nope ✓".into(),
                after: 0,
            }),
            ..Default::default()
        };
        let e = c
            .unary(
                EchoRequest::new(&b""[..]).with_directives(d),
                &CallOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{}", t.name());
        assert_eq!(e.message(), "nope ✓");
        c.unary(EchoRequest::new(&b"ok"[..]), &CallOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn streams_work() {
    each_transport(|t, c| async move {
        // Server stream: explicit sizes.
        let (mut s, mut r) = c
            .open(Method::ServerStream, &CallOptions::default())
            .await
            .unwrap();
        let d = Directives {
            response_sizes: vec![3, 1, 4],
            ..Default::default()
        };
        s.send(EchoRequest::new(&b""[..]).with_directives(d))
            .await
            .unwrap();
        s.close_send().await.unwrap();
        let mut sizes = vec![];
        while let Some(m) = r.recv().await.unwrap() {
            sizes.push(m.payload.len());
        }
        assert_eq!(sizes, vec![3, 1, 4], "{}", t.name());

        // Client stream: counts.
        let (mut s, mut r) = c
            .open(Method::ClientStream, &CallOptions::default())
            .await
            .unwrap();
        for n in [10usize, 20, 30] {
            s.send(EchoRequest::new(pattern(n))).await.unwrap();
        }
        s.close_send().await.unwrap();
        let m = r.recv().await.unwrap().unwrap();
        assert_eq!((m.received_messages, m.received_bytes), (3, 60));
        assert!(r.recv().await.unwrap().is_none());

        // Bidi ping-pong.
        let (mut s, mut r) = c.open(Method::Bidi, &CallOptions::default()).await.unwrap();
        for i in 0..10u8 {
            s.send(EchoRequest::new(vec![i; 5])).await.unwrap();
            let m = r.recv().await.unwrap().unwrap();
            assert_eq!(&m.payload[..], &[i; 5]);
        }
        s.close_send().await.unwrap();
        assert!(r.recv().await.unwrap().is_none());
    })
    .await;
}

/// Every network transport names the hop a fault proxy goes on, and rewriting its endpoint to
/// go through another address keeps the rest (prefix, certificate pin) and moves the hop.
#[tokio::test]
async fn network_paths_and_rewritten_endpoints() {
    let elsewhere: std::net::SocketAddr = "127.0.0.1:9".parse().expect("an address");
    for name in names() {
        let t = AnyTransport::by_name(name).expect("registered transport");
        if let Some(b) = t.broker()
            && let Err(e) = b.check_available()
        {
            assert!(std::env::var_os("CI").is_none(), "CI is set: {name}: {e}");
            eprintln!("skipping {name}: {e}");
            continue;
        }
        let server = tokio::time::timeout(
            LIMIT,
            t.serve(&ServerConfig::loopback(), Arc::new(Echo::default())),
        )
        .await
        .expect("serve in time")
        .unwrap_or_else(|e| panic!("{name}: serve: {e}"));
        let e = server.endpoint();
        match t {
            AnyTransport::Inproc(_) => {
                assert!(t.network_path(&e).is_err(), "inproc has no network path");
            }
            _ => {
                let path = t
                    .network_path(&e)
                    .unwrap_or_else(|err| panic!("{name}: {err}"));
                assert!(path.addr.ip().is_loopback(), "{name}: {path:?}");
                let same = t.endpoint_via(&e, path.addr).expect("rewrite");
                assert_eq!(same, e, "{name}: rewriting to its own hop is the identity");
                let moved = t.endpoint_via(&e, elsewhere).expect("rewrite");
                let p = t.network_path(&moved).expect("a rewritten endpoint parses");
                assert_eq!((p.addr, p.protocol), (elsewhere, path.protocol), "{name}");
            }
        }
        server.shutdown().await;
    }
}
