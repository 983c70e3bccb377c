//! `Server::drain` on every transport, through the registry: calls in flight finish and are
//! counted, a call still running when the grace runs out is cut with `UNAVAILABLE`, a new
//! call on a drained connection fails fast with `UNAVAILABLE` (so its caller dials again), and
//! a broker service's other servers take the new calls while one of them drains.
//!
//! Broker transports need their broker program: without it their part is skipped with a
//! message (and fails when `CI` is set). Every wait is bounded.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wirebench_core::broker::{Broker, BrokerHandle, BrokerTarget};
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Code, Connection, Directives, Echo,
    EchoRequest, Method, Server, ServerConfig, Status, Transport,
};
use wirebench_transports::AnyConnection;
use wirebench_transports::{AnyBrokerHandle, AnyTransport, names};

/// The bound on each transport's part of a test.
const LIMIT: Duration = Duration::from_secs(30);
/// The grace of drains that are expected to finish cleanly.
const GRACE: Duration = Duration::from_secs(5);

fn installed(t: &AnyTransport) -> bool {
    match t.broker().map(|b| b.check_available()) {
        Some(Err(e)) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set: {}: {e}",
                t.name()
            );
            eprintln!("skipping {}: {e}", t.name());
            false
        }
        _ => true,
    }
}

/// Runs `f` for every transport whose broker (if any) is installed, each under [`LIMIT`].
async fn each_transport<F, Fut>(only: impl Fn(&str) -> bool, f: F)
where
    F: Fn(AnyTransport) -> Fut,
    Fut: Future<Output = ()>,
{
    for name in names().iter().filter(|n| only(n)) {
        let t = AnyTransport::by_name(name).expect("registered transport");
        if !installed(&t) {
            continue;
        }
        tokio::time::timeout(LIMIT, f(t))
            .await
            .unwrap_or_else(|_| panic!("{name}: timed out"));
    }
}

async fn serve(t: &AnyTransport, listen: &str, echo: Arc<Echo>) -> wirebench_transports::AnyServer {
    let config = ServerConfig {
        listen: listen.to_owned(),
        ..ServerConfig::loopback()
    };
    t.serve(&config, echo)
        .await
        .unwrap_or_else(|e| panic!("{}: serve: {e}", t.name()))
}

async fn connect(t: &AnyTransport, endpoint: &str) -> AnyConnection {
    t.connect(&ClientConfig::default(), endpoint)
        .await
        .unwrap_or_else(|e| panic!("{}: connect: {e}", t.name()))
}

/// Waits until `echo` has started `n` calls (it counts them; it has no watch to wait on).
async fn started(echo: &Echo, n: u64) {
    while echo.calls() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn delayed(tag: u8, delay: Duration) -> EchoRequest {
    EchoRequest::new(vec![tag; 16]).with_directives(Directives {
        delay,
        ..Default::default()
    })
}

/// A server stream of `count` responses `interval` apart, read to its end.
async fn stream(c: &AnyConnection, count: u32, interval: Duration) -> Result<usize, Status> {
    let (mut s, mut r) = c
        .open(Method::ServerStream, &CallOptions::default())
        .await?;
    s.send(EchoRequest::new(Vec::new()).with_directives(Directives {
        response_count: Some(count),
        response_interval: interval,
        ..Default::default()
    }))
    .await?;
    s.close_send().await?;
    let mut got = 0;
    while r.recv().await?.is_some() {
        got += 1;
    }
    Ok(got)
}

/// Where a test's server listens: for a broker transport, a broker of the test's own that
/// outlives the server (a server's private broker stops with it, see the transports' docs).
async fn listen(t: &AnyTransport) -> (String, Option<AnyBrokerHandle>) {
    match t.broker() {
        None => ("127.0.0.1:0".to_owned(), None),
        Some(b) => {
            let h = b
                .start(&BrokerTarget::Private)
                .await
                .unwrap_or_else(|e| panic!("{}: broker: {e}", t.name()));
            (h.url(), Some(h))
        }
    }
}

#[tokio::test]
async fn calls_in_flight_finish_and_are_counted() {
    each_transport(
        |_| true,
        |t| async move {
            let name = t.name();
            let echo = Arc::new(Echo::default());
            let (listen, _broker) = listen(&t).await;
            let server = serve(&t, &listen, echo.clone()).await;
            let c = connect(&t, &server.endpoint()).await;
            let o = CallOptions::default();
            let calls = futures::future::join_all(
                (0..4u8).map(|i| c.unary(delayed(i, Duration::from_millis(300)), &o)),
            );
            let streamed = stream(&c, 3, Duration::from_millis(100));
            let drain = async {
                started(&echo, 5).await;
                server.drain(GRACE).await
            };
            let (results, streamed, report) = tokio::join!(calls, streamed, drain);
            for (i, r) in results.into_iter().enumerate() {
                let r = r.unwrap_or_else(|s| panic!("{name}: call {i} failed on drain: {s}"));
                assert_eq!(r.message.payload[..], [i as u8; 16][..], "{name}");
            }
            assert_eq!(streamed, Ok(3), "{name}: the stream in flight");
            assert_eq!(report.cut, 0, "{name}: {report}");
            assert!(report.in_flight >= 5, "{name}: {report}");
            assert!(report.took < GRACE, "{name}: {report}");
        },
    )
    .await;
}

#[tokio::test]
async fn the_grace_cuts_what_still_runs() {
    each_transport(
        |_| true,
        |t| async move {
            let name = t.name();
            let echo = Arc::new(Echo::default());
            let (listen, _broker) = listen(&t).await;
            let server = serve(&t, &listen, echo.clone()).await;
            let c = connect(&t, &server.endpoint()).await;
            let o = CallOptions::default();
            let call = c.unary(delayed(1, Duration::from_secs(60)), &o);
            let drain = async {
                started(&echo, 1).await;
                server.drain(Duration::from_millis(200)).await
            };
            let (result, report) = tokio::join!(call, drain);
            let status = result.expect_err("a call cut by the drain cannot succeed");
            assert_eq!(status.code(), Code::Unavailable, "{name}: {status}");
            assert_eq!((report.in_flight, report.cut), (1, 1), "{name}: {report}");
            assert!(
                report.took >= Duration::from_millis(200),
                "{name}: {report}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_new_call_on_a_drained_connection_fails_fast() {
    // Not mqtt: MQTT has no "no responders", a call nobody serves waits for its deadline.
    each_transport(
        |n| n != "mqtt",
        |t| async move {
            let name = t.name();
            let echo = Arc::new(Echo::default());
            let (listen, _broker) = listen(&t).await;
            let server = serve(&t, &listen, echo.clone()).await;
            let c = connect(&t, &server.endpoint()).await;
            let o = CallOptions::default();
            let in_flight = c.unary(delayed(1, Duration::from_secs(1)), &o);
            tokio::pin!(in_flight);
            tokio::select! {
                r = &mut in_flight => panic!("{name}: the call ended early: {r:?}"),
                _ = started(&echo, 1) => {}
            }
            let drain = tokio::spawn(server.drain(GRACE));
            // Until the drain reaches the client (or the broker), new calls are still served;
            // then they fail at once, long before their deadline.
            let quick = CallOptions::with_timeout(Duration::from_secs(5));
            let refused = async {
                loop {
                    let t0 = Instant::now();
                    match c.unary(EchoRequest::new(vec![2u8; 8]), &quick).await {
                        Ok(_) => tokio::task::yield_now().await,
                        Err(s) => return (s, t0.elapsed()),
                    }
                }
            };
            let ((status, took), done) = tokio::join!(refused, &mut in_flight);
            assert_eq!(status.code(), Code::Unavailable, "{name}: {status}");
            assert!(
                took < Duration::from_secs(2),
                "{name}: refused after {took:?}"
            );
            let done = done.unwrap_or_else(|s| panic!("{name}: the call in flight failed: {s}"));
            assert_eq!(done.message.payload[..], [1u8; 16][..], "{name}");
            let report = drain.await.expect("the drain task");
            assert_eq!(report.cut, 0, "{name}: {report}");
        },
    )
    .await;
}

#[tokio::test]
async fn tcp_client_refuses_new_calls_itself_after_goaway() {
    let t = AnyTransport::by_name("tcp").expect("tcp");
    tokio::time::timeout(LIMIT, async {
        let echo = Arc::new(Echo::default());
        let server = serve(&t, "127.0.0.1:0", echo.clone()).await;
        let endpoint = server.endpoint();
        let c = connect(&t, &endpoint).await;
        let o = CallOptions::default();
        let in_flight = c.unary(delayed(1, Duration::from_millis(500)), &o);
        tokio::pin!(in_flight);
        tokio::select! {
            r = &mut in_flight => panic!("the call ended early: {r:?}"),
            _ = started(&echo, 1) => {}
        }
        let drain = tokio::spawn(server.drain(GRACE));
        let refusal = async {
            // The first refusal may come from the server (an OPEN that crossed the GOAWAY);
            // it arrives after the GOAWAY, so every later call is refused by the client.
            loop {
                if c.unary(EchoRequest::new(vec![2u8]), &o).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let unary = c.unary(EchoRequest::new(vec![3u8]), &o).await.unwrap_err();
            let stream = c.open(Method::Bidi, &o).await.unwrap_err();
            // The listener is closed too: a new connection is refused.
            let dial = t.connect(&ClientConfig::default(), &endpoint).await;
            (unary, stream, dial.is_err())
        };
        let ((unary, stream, dial_refused), done) = tokio::join!(refusal, &mut in_flight);
        for s in [&unary, &stream] {
            assert_eq!(s.code(), Code::Unavailable, "{s}");
            assert!(s.message().contains("GOAWAY"), "{s}");
        }
        assert!(dial_refused, "a draining server accepted a new connection");
        assert_eq!(
            done.expect("the call in flight").message.payload[..],
            [1u8; 16][..]
        );
        assert!(drain.await.expect("the drain task").is_clean());
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn a_broker_service_peer_takes_the_new_calls() {
    each_transport(
        |n| AnyTransport::by_name(n).is_some_and(|t| t.broker().is_some()),
        |t| async move {
            let name = t.name();
            let (listen, broker) = listen(&t).await;
            let (a_echo, b_echo) = (Arc::new(Echo::default()), Arc::new(Echo::default()));
            let a = serve(&t, &listen, a_echo.clone()).await;
            let endpoint = a.endpoint();
            let c = connect(&t, &endpoint).await;
            let o = CallOptions::default();
            // Only `a` serves yet: these three are in flight on it.
            let in_flight = futures::future::join_all(
                (0..3u8).map(|i| c.unary(delayed(i, Duration::from_secs(1)), &o)),
            );
            tokio::pin!(in_flight);
            tokio::select! {
                r = &mut in_flight => panic!("{name}: the calls ended early: {r:?}"),
                _ = started(&a_echo, 3) => {}
            }
            // `b` joins the service, then `a` drains.
            let b = serve(&t, &endpoint, b_echo.clone()).await;
            let drain = tokio::spawn(a.drain(GRACE));
            let quick = CallOptions::with_timeout(Duration::from_secs(5));
            let during = async {
                for i in 0..20u8 {
                    c.unary(EchoRequest::new(vec![i]), &quick)
                        .await
                        .unwrap_or_else(|s| panic!("{name}: a call during the drain: {s}"));
                }
            };
            let ((), done) = tokio::join!(during, &mut in_flight);
            for (i, r) in done.into_iter().enumerate() {
                let r = r.unwrap_or_else(|s| panic!("{name}: call {i} failed on drain: {s}"));
                assert_eq!(r.message.payload[..], [i as u8; 16][..], "{name}");
            }
            let report = drain.await.expect("the drain task");
            assert_eq!((report.in_flight, report.cut), (3, 0), "{name}: {report}");
            // Drained: everything goes to `b` now.
            let a_calls = a_echo.calls();
            let b_calls = b_echo.calls();
            for i in 0..5u8 {
                c.unary(EchoRequest::new(vec![i]), &quick)
                    .await
                    .unwrap_or_else(|s| panic!("{name}: a call after the drain: {s}"));
            }
            assert_eq!(
                a_echo.calls(),
                a_calls,
                "{name}: the drained server took a call"
            );
            assert_eq!(b_echo.calls(), b_calls + 5, "{name}");
            b.shutdown().await;
            if let Some(broker) = broker {
                broker.stop().await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn quic_refuses_streams_and_connections_during_a_drain() {
    let t = AnyTransport::by_name("quic").expect("quic");
    tokio::time::timeout(LIMIT, async {
        let echo = Arc::new(Echo::default());
        let server = serve(&t, "127.0.0.1:0", echo.clone()).await;
        let endpoint = server.endpoint();
        let c = connect(&t, &endpoint).await;
        let o = CallOptions::default();
        let in_flight = c.unary(delayed(1, Duration::from_millis(500)), &o);
        tokio::pin!(in_flight);
        tokio::select! {
            r = &mut in_flight => panic!("the call ended early: {r:?}"),
            _ = started(&echo, 1) => {}
        }
        let drain = tokio::spawn(server.drain(GRACE));
        let refusal = async {
            // A stream opened once the drain began is reset with DRAINING (0x11).
            let refused = loop {
                match c.unary(EchoRequest::new(vec![2u8]), &o).await {
                    Ok(_) => tokio::task::yield_now().await,
                    Err(s) => break s,
                }
            };
            let dial = t.connect(&ClientConfig::default(), &endpoint).await;
            (refused, dial.is_err())
        };
        let ((refused, dial_refused), done) = tokio::join!(refusal, &mut in_flight);
        assert_eq!(refused.code(), Code::Unavailable, "{refused}");
        assert!(refused.message().contains("draining"), "{refused}");
        assert!(dial_refused, "a draining server accepted a new connection");
        assert_eq!(
            done.expect("the call in flight").message.payload[..],
            [1u8; 16][..]
        );
        assert!(drain.await.expect("the drain task").is_clean());
        // Closed at the end of the drain with SHUTDOWN, as the wire docs say.
        let after = c.unary(EchoRequest::new(vec![3u8]), &o).await.unwrap_err();
        assert!(after.message().contains("shutting down"), "{after}");
    })
    .await
    .expect("timed out");
}
