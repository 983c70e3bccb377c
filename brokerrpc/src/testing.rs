//! What every broker adapter's tests check, written once (feature `testing`, for the adapters'
//! dev-dependencies): that its [`Headers`] layout round-trips everything the protocol writes
//! and never panics on garbage, and that its transport behaves as the protocol promises
//! against a real broker — servers of one service share its calls, a dropped unary call is
//! cancelled at the server, a broker restart fails the calls in flight at once and the
//! connection recovers by itself.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use wirebench_core::echo::Echo;
use wirebench_core::message::{Directives, EchoRequest, FailWith, Method};
use wirebench_core::metadata::{Metadata, MetadataValue};
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Connection, Server, ServerConfig,
    Transport,
};

use crate::headers::{self, Headers, MetadataKind, WireError, get_directives, get_status};

/// A metadata key (gRPC's rules, not reserved).
pub fn key() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,12}".prop_filter("reserved", |k| !k.starts_with("grpc-"))
}

/// Any metadata: ASCII and binary entries, repeated keys allowed.
pub fn metadata() -> impl Strategy<Value = Metadata> {
    let entry = prop_oneof![
        (
            key().prop_filter("ascii key", |k| !k.ends_with("-bin")),
            "[ -~]{0,24}"
        )
            .prop_map(|(k, v)| (k, MetadataValue::Ascii(v))),
        (key(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(k, v)| (format!("{k}-bin"), MetadataValue::Binary(Bytes::from(v)))),
    ];
    proptest::collection::vec(entry, 0..8).prop_map(|entries| {
        let mut md = Metadata::new();
        for (k, v) in entries {
            match v {
                MetadataValue::Ascii(s) => md.append_ascii(k, s).expect("valid ascii entry"),
                MetadataValue::Binary(b) => md.append_binary(k, b).expect("valid binary entry"),
            }
        }
        md
    })
}

/// Any directives.
pub fn directives() -> impl Strategy<Value = Directives> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u32>(), 0..5),
        0u64..10_000_000,
        0u64..10_000_000,
        proptest::option::of((1u32..17, any::<u32>(), "\\PC{0,30}")),
        any::<bool>(),
    )
        .prop_map(
            |(size, count, sizes, interval, delay, fail, report)| Directives {
                response_size: size,
                response_count: count,
                response_sizes: sizes,
                response_interval: Duration::from_micros(interval),
                delay: Duration::from_micros(delay),
                fail: fail.map(|(c, after, message)| FailWith {
                    code: Code::from_u32(c),
                    message,
                    after,
                }),
                report_deadline: report,
            },
        )
}

/// Checks, over many random cases, that headers of type `H` carry metadata (initial and
/// trailing, in order), statuses and directives through `wire` — which serializes and parses
/// them as the broker's client library does — unchanged.
pub fn check_round_trips<H: Headers + std::fmt::Debug>(wire: fn(&H) -> H) {
    let mut runner = TestRunner::new(Config::with_cases(256));
    let cases = (metadata(), metadata(), 0u32..17, "\\PC{0,40}", directives());
    let result = runner.run(&cases, |(md, tr, code, message, d)| {
        let mut h = H::default();
        h.put_metadata(MetadataKind::Initial, &md);
        let status = Status::new(Code::from_u32(code), message).with_metadata(tr);
        headers::put_status(&mut h, &status);
        headers::put_directives(&mut h, &d);
        let back = wire(&h);
        let fail = |e: WireError| TestCaseError::fail(e.to_string());
        prop_assert_eq!(back.get_metadata(MetadataKind::Initial).map_err(fail)?, md);
        prop_assert_eq!(get_status(&back).map_err(fail)?, status);
        prop_assert_eq!(get_directives(&back).map_err(fail)?, d);
        Ok(())
    });
    if let Err(e) = result {
        panic!("headers did not round-trip: {e}");
    }
}

/// Checks that reading headers of type `H` built by `build` from arbitrary name/value pairs
/// (what a peer could send) never panics: every reader returns a value or an error.
pub fn check_garbage_never_panics<H: Headers>(build: fn(Vec<(String, String)>) -> H) {
    let mut runner = TestRunner::new(Config::with_cases(512));
    let pairs = proptest::collection::vec(
        (
            "\\PC{0,12}|Wb-[A-Za-z:-]{1,14}|[a-z-]{1,8}",
            "\\PC{0,30}|[0-9]{1,3} [0-9]{1,3} .{0,9}",
        ),
        0..8,
    );
    let result = runner.run(&pairs, |pairs| {
        let h = build(pairs);
        let _ = get_directives(&h);
        let _ = get_status(&h);
        let _ = h.get_metadata(MetadataKind::Initial);
        let _ = h.get_metadata(MetadataKind::Trailing);
        let _ = headers::get_timeout(&h);
        let _ = headers::frame_of(Some(&h));
        let _ = headers::get_response(Some(&h), Bytes::new());
        let _ = headers::decode_head(Method::Bidi, Some(&h));
        Ok(())
    });
    if let Err(e) = result {
        panic!("reading garbage headers: {e}");
    }
}

/// Runs `f` within `limit`, failing the test with `what` when it does not finish.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Serves `echo` with `transport` as `listen` says.
async fn serve<T: Transport>(transport: &T, listen: &str, echo: Arc<Echo>) -> T::Server {
    let config = ServerConfig {
        listen: listen.to_owned(),
        ..ServerConfig::loopback()
    };
    match transport.serve(&config, echo).await {
        Ok(s) => s,
        Err(e) => panic!("serving on {listen}: {e}"),
    }
}

async fn connect<T: Transport>(transport: &T, endpoint: &str) -> T::Connection {
    match Transport::connect(transport, &ClientConfig::default(), endpoint).await {
        Ok(c) => c,
        Err(e) => panic!("connecting to {endpoint}: {e}"),
    }
}

/// Two servers of one service: the second attaches to the first's broker and joins its
/// service (its endpoint as `listen`); 200 calls reach both, each exactly once.
pub async fn servers_share_the_load<T: Transport>(transport: T) {
    let first_echo = Arc::new(Echo::default());
    let first = serve(&transport, "127.0.0.1:0", first_echo.clone()).await;
    let second_echo = Arc::new(Echo::default());
    let second = serve(&transport, &first.endpoint(), second_echo.clone()).await;
    assert_eq!(first.endpoint(), second.endpoint());
    let c = connect(&transport, &first.endpoint()).await;
    for i in 0..200u32 {
        let r = c
            .unary(
                EchoRequest::new(i.to_le_bytes().to_vec()),
                &CallOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(&r.message.payload[..], &i.to_le_bytes());
    }
    let (a, b) = (first_echo.calls(), second_echo.calls());
    assert_eq!(a + b, 200);
    assert!(a > 0 && b > 0, "one server took every call: {a} / {b}");
    second.shutdown().await;
    first.shutdown().await;
}

/// A unary call dropped once the server has it is cancelled there: its handler observes it.
pub async fn a_dropped_unary_call_is_cancelled_at_the_server<T: Transport>(transport: T) {
    let echo = Arc::new(Echo::default());
    let s = serve(&transport, "127.0.0.1:0", echo.clone()).await;
    let c = connect(&transport, &s.endpoint()).await;
    let sleepy = EchoRequest::new(vec![1u8]).with_directives(Directives {
        delay: Duration::from_secs(60),
        ..Default::default()
    });
    let o = CallOptions::default();
    // The call is dropped once the server has it (its call counter moved).
    tokio::select! {
        r = c.unary(sleepy, &o) => panic!("a 60 s call ended: {r:?}"),
        () = async {
            while echo.calls() == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        } => {}
    }
    let (seen, held) = echo
        .wait_observed(Duration::from_secs(10), |o| o.cancelled >= 1)
        .await;
    assert!(held, "the server never saw the cancel: {seen:?}");
    s.shutdown().await;
}

/// A broker restarted under a client and its server (`restart` restarts it): the calls in
/// flight fail at once with `UNAVAILABLE` (not by their deadline), and once both have
/// reconnected by themselves, calls work again. `server_listen` attaches the server to the
/// broker being restarted.
pub async fn a_broker_restart_fails_calls_in_flight_then_recovers<T, R>(
    transport: T,
    server_listen: &str,
    restart: R,
) where
    T: Transport,
    R: Future<Output = ()>,
{
    let s = serve(&transport, server_listen, Arc::new(Echo::default())).await;
    let c = connect(&transport, &s.endpoint()).await;
    let o = CallOptions::with_timeout(Duration::from_secs(20));
    c.unary(EchoRequest::new(vec![1u8]), &o)
        .await
        .expect("a first call");
    let sleepy = EchoRequest::new(vec![1u8]).with_directives(Directives {
        delay: Duration::from_secs(10),
        ..Default::default()
    });
    let (mut tx, mut rx) = c.open(Method::Bidi, &o).await.expect("a stream");
    tx.send(EchoRequest::new(vec![2u8]))
        .await
        .expect("a message");
    assert!(rx.recv().await.expect("an answer").is_some());
    let t = Instant::now();
    let (in_flight, ()) = tokio::join!(c.unary(sleepy, &o), restart);
    let e = in_flight.expect_err("the call in flight fails");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "failed by deadline, not at once"
    );
    let e = rx.recv().await.expect_err("the stream in flight fails");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    // Client and server reconnect by themselves; calls work again.
    let back = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match c.unary(EchoRequest::new(vec![3u8]), &o).await {
                Ok(r) => return r,
                Err(e) => {
                    assert_eq!(e.code(), Code::Unavailable, "{e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await
    .expect("calls did not recover after the broker restart");
    assert_eq!(&back.message.payload[..], &[3u8]);
    s.shutdown().await;
}
