//! Unit tests of the composed layer against a scripted fake connection, on a paused tokio
//! clock so backoff, breaker spells and timeouts are exact and instant.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::*;
use wirebench_core::transport::CallSender;

/// What a fake connection saw and will answer.
#[derive(Debug, Default)]
struct Script {
    /// Outcomes to return, in order; `Ok` once empty.
    outcomes: Mutex<VecDeque<Code>>,
    /// Every attempt's `CallOptions::timeout`.
    timeouts: Mutex<Vec<Option<Duration>>>,
    calls: AtomicU32,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    /// How long each call takes.
    delay: Mutex<Duration>,
}

impl Script {
    fn failing(codes: &[Code]) -> Arc<Script> {
        let s = Script::default();
        s.outcomes.lock().unwrap().extend(codes.iter().copied());
        Arc::new(s)
    }

    fn always(code: Code) -> Arc<Script> {
        Script::failing(&[code; 1000])
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn run(&self, options: &CallOptions) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.timeouts.lock().unwrap().push(options.timeout);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match self.outcomes.lock().unwrap().pop_front() {
            None | Some(Code::Ok) => Ok(()),
            Some(code) => Err(Status::new(code, "scripted")),
        }
    }
}

#[derive(Debug)]
struct Fake(Arc<Script>);

#[derive(Debug)]
struct FakeSender;

#[derive(Debug)]
struct FakeReceiver;

impl CallSender for FakeSender {
    async fn send(&mut self, _: EchoRequest) -> Result<(), Status> {
        Ok(())
    }
    async fn close_send(&mut self) -> Result<(), Status> {
        Ok(())
    }
}

impl CallReceiver for FakeReceiver {
    async fn headers(&mut self) -> Result<Metadata, Status> {
        Ok(Metadata::new())
    }
    async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
        Ok(None)
    }
    fn trailers(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::new();
        &EMPTY
    }
    fn cancel(&mut self) {}
}

impl Connection for Fake {
    type Sender = FakeSender;
    type Receiver = FakeReceiver;

    async fn unary(&self, _: EchoRequest, options: &CallOptions) -> Result<UnaryReply, Status> {
        self.0.run(options).await.map(|()| UnaryReply::default())
    }

    async fn open(
        &self,
        _: Method,
        options: &CallOptions,
    ) -> Result<(FakeSender, FakeReceiver), Status> {
        self.0
            .run(options)
            .await
            .map(|()| (FakeSender, FakeReceiver))
    }

    async fn close(&self) {}
}

fn policy(text: &str) -> PolicyConfig {
    let c: PolicyConfig = toml::from_str(text).unwrap();
    c.validate().unwrap();
    c
}

fn safe() -> CallOptions {
    CallOptions {
        replay_safe: true,
        ..CallOptions::default()
    }
}

fn req() -> EchoRequest {
    EchoRequest::new(&b"x"[..])
}

const RETRY3: &str =
    r#"retry = { max_attempts = 3, initial_backoff = "10ms", max_backoff = "1s" }"#;

#[tokio::test(start_paused = true)]
async fn retry_succeeds_after_transient_unavailable() {
    let script = Script::failing(&[Code::Unavailable, Code::Unavailable]);
    let conn = wrap(&policy(RETRY3), Fake(script.clone()), 1).unwrap();
    conn.unary(req(), &safe()).await.unwrap();
    assert_eq!(script.calls(), 3);
    let s = conn.stats();
    assert_eq!((s.calls, s.retries, s.retries_refused_by_budget), (1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts() {
    let script = Script::always(Code::Unavailable);
    let conn = wrap(&policy(RETRY3), Fake(script.clone()), 1).unwrap();
    let e = conn.unary(req(), &safe()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn application_errors_and_deadlines_are_not_retried() {
    for code in [
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::Internal,
    ] {
        let script = Script::failing(&[code]);
        let conn = wrap(&policy(RETRY3), Fake(script.clone()), 1).unwrap();
        assert_eq!(conn.unary(req(), &safe()).await.unwrap_err().code(), code);
        assert_eq!(script.calls(), 1, "{code} must not be retried");
    }
    // Unless listed.
    let script = Script::failing(&[Code::DeadlineExceeded]);
    let c = policy(r#"retry = { retryable_codes = ["UNAVAILABLE", "DEADLINE_EXCEEDED"] }"#);
    let conn = wrap(&c, Fake(script.clone()), 1).unwrap();
    conn.unary(req(), &safe()).await.unwrap();
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_calls_are_not_retried_unless_configured() {
    let script = Script::failing(&[Code::Unavailable]);
    let conn = wrap(&policy(RETRY3), Fake(script.clone()), 1).unwrap();
    let e = conn
        .unary(req(), &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(script.calls(), 1);

    let script = Script::failing(&[Code::Unavailable]);
    let c = policy(r#"retry = { max_attempts = 3, retry_non_idempotent = true }"#);
    let conn = wrap(&c, Fake(script.clone()), 1).unwrap();
    conn.unary(req(), &CallOptions::default()).await.unwrap();
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_pauses_grow_within_their_jittered_bounds() {
    // 10ms, 20ms, 40ms, 80ms ceilings: the whole call takes at most their sum.
    let c = policy(
        r#"retry = { max_attempts = 5, initial_backoff = "10ms", max_backoff = "1s", budget_min_per_sec = 100 }"#,
    );
    let mut total = Duration::ZERO;
    for seed in 0..50 {
        let script = Script::failing(&[Code::Unavailable; 4]);
        let conn = wrap(&c, Fake(script.clone()), seed).unwrap();
        let start = Instant::now();
        conn.unary(req(), &safe()).await.unwrap();
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(150), "{took:?}");
        total += took;
    }
    // Full jitter: the mean is about half the sum of the ceilings (75ms).
    let mean = total / 50;
    assert!(
        mean > Duration::from_millis(45) && mean < Duration::from_millis(105),
        "{mean:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_callers_deadline() {
    let c =
        policy(r#"retry = { max_attempts = 10, initial_backoff = "40ms", max_backoff = "40ms" }"#);
    let script = Script::always(Code::Unavailable);
    let conn = wrap(&c, Fake(script.clone()), 3).unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(100)),
        replay_safe: true,
        ..CallOptions::default()
    };
    let start = Instant::now();
    assert!(conn.unary(req(), &opts).await.is_err());
    assert!(start.elapsed() <= Duration::from_millis(100));
    // Later attempts get what is left of the caller's deadline, never more.
    let timeouts = script.timeouts.lock().unwrap().clone();
    assert_eq!(timeouts[0], Some(Duration::from_millis(100)));
    assert!(timeouts.windows(2).all(|w| w[1] <= w[0]), "{timeouts:?}");
}

#[tokio::test(start_paused = true)]
async fn budget_refuses_retries_beyond_its_share() {
    // 20 % and no floor: 50 failing calls earn exactly 10 retries.
    let c = policy(
        r#"retry = { max_attempts = 5, initial_backoff = "1ms", budget_percent = 20, budget_min_per_sec = 0 }"#,
    );
    let script = Script::always(Code::Unavailable);
    let conn = wrap(&c, Fake(script.clone()), 1).unwrap();
    for _ in 0..50 {
        assert!(conn.unary(req(), &safe()).await.is_err());
    }
    let s = conn.stats();
    assert_eq!(s.retries, 10);
    assert_eq!(script.calls(), 60);
    // Every call ends on a refusal: the budget runs dry before its attempts do.
    assert_eq!(s.retries_refused_by_budget, 50);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_fails_fast_half_opens_and_closes() {
    let c = policy(
        r#"circuit_breaker = { consecutive_failures = 3, open_for = "1s", half_open_probes = 1 }"#,
    );
    let script = Script::failing(&[Code::Unavailable; 3]);
    let conn = wrap(&c, Fake(script.clone()), 1).unwrap();
    for _ in 0..3 {
        assert_eq!(
            conn.unary(req(), &safe()).await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    // Open: no call reaches the connection.
    let e = conn.unary(req(), &safe()).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "circuit open"));
    let e = conn.open(Method::Bidi, &safe()).await.unwrap_err();
    assert_eq!(e.message(), "circuit open");
    assert_eq!(script.calls(), 3);
    let s = conn.stats();
    assert_eq!((s.breaker_opens, s.short_circuited), (1, 2));

    tokio::time::advance(Duration::from_secs(1)).await;
    conn.unary(req(), &safe()).await.unwrap(); // the probe
    for _ in 0..5 {
        conn.unary(req(), &safe()).await.unwrap();
    }
    assert_eq!(script.calls(), 9);
    assert_eq!(conn.stats().short_circuited, 2);
}

#[tokio::test(start_paused = true)]
async fn breaker_counts_a_call_once_after_its_retries() {
    let c = policy(&format!(
        "{RETRY3}\ncircuit_breaker = {{ consecutive_failures = 2, open_for = \"1s\" }}"
    ));
    // Two calls, each failing once then succeeding: the breaker sees two successes.
    let script = Script::failing(&[Code::Unavailable, Code::Ok, Code::Unavailable]);
    let conn = wrap(&c, Fake(script.clone()), 1).unwrap();
    conn.unary(req(), &safe()).await.unwrap();
    conn.unary(req(), &safe()).await.unwrap();
    assert_eq!(conn.stats().breaker_opens, 0);
}

#[tokio::test(start_paused = true)]
async fn limiter_caps_calls_in_flight_and_queues_the_rest() {
    let script = Arc::new(Script::default());
    *script.delay.lock().unwrap() = Duration::from_millis(100);
    let conn = wrap(
        &policy("concurrency_limit = { max_in_flight = 2 }"),
        Fake(script.clone()),
        1,
    )
    .unwrap();
    let opts = CallOptions::default();
    let start = Instant::now();
    let results = join_all((0..5).map(|_| conn.unary(req(), &opts))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(conn.stats().limiter_queued, 3);
    // Three waves of 100ms.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(conn.limiter.as_ref().unwrap().in_flight(2), 0);
}

#[tokio::test(start_paused = true)]
async fn limiter_rejects_beyond_a_bounded_queue() {
    let script = Arc::new(Script::default());
    *script.delay.lock().unwrap() = Duration::from_millis(100);
    let c = policy("concurrency_limit = { max_in_flight = 2, max_queued = 1 }");
    let conn = wrap(&c, Fake(script.clone()), 1).unwrap();
    let opts = CallOptions::default();
    let results = join_all((0..4).map(|_| conn.unary(req(), &opts))).await;
    let rejected: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].code(), Code::ResourceExhausted);
    let s = conn.stats();
    assert_eq!((s.limiter_queued, s.limiter_rejected), (1, 1));
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_its_slot_until_it_ends() {
    let script = Arc::new(Script::default());
    let conn = wrap(
        &policy("concurrency_limit = { max_in_flight = 1, max_queued = 0 }"),
        Fake(script.clone()),
        1,
    )
    .unwrap();
    let (_tx, mut rx) = conn.open(Method::Bidi, &safe()).await.unwrap();
    let e = conn.unary(req(), &safe()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(rx.recv().await.unwrap(), None); // the stream ends: its slot is freed
    conn.unary(req(), &safe()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn timeout_sets_or_shortens_the_deadline() {
    let script = Arc::new(Script::default());
    let conn = wrap(&policy(r#"timeout = "200ms""#), Fake(script.clone()), 1).unwrap();
    for caller in [None, Some(1000), Some(50)] {
        let opts = CallOptions {
            timeout: caller.map(Duration::from_millis),
            ..CallOptions::default()
        };
        conn.unary(req(), &opts).await.unwrap();
    }
    conn.open(Method::ServerStream, &CallOptions::default())
        .await
        .unwrap();
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(
        *script.timeouts.lock().unwrap(),
        vec![ms(200), ms(200), ms(50), ms(200)]
    );
    assert_eq!(conn.stats().deadlines_applied, 3);
}

#[tokio::test(start_paused = true)]
async fn no_policy_is_a_pass_through() {
    let script = Script::failing(&[Code::Unavailable]);
    let conn = wrap(&PolicyConfig::default(), Fake(script.clone()), 1).unwrap();
    let opts = CallOptions::with_timeout(Duration::from_millis(7));
    assert!(conn.unary(req(), &opts).await.is_err());
    conn.unary(req(), &opts).await.unwrap();
    assert_eq!(
        *script.timeouts.lock().unwrap(),
        vec![Some(Duration::from_millis(7)); 2]
    );
    assert_eq!(conn.stats(), PolicyStats::default());
}

#[tokio::test(start_paused = true)]
async fn stream_opens_are_retried_like_unary_calls() {
    let script = Script::failing(&[Code::Unavailable]);
    let conn = wrap(&policy(RETRY3), Fake(script.clone()), 1).unwrap();
    conn.open(Method::Bidi, &safe()).await.unwrap();
    assert_eq!(script.calls(), 2);
    let script = Script::failing(&[Code::Unavailable]);
    let conn = wrap(&policy(RETRY3), Fake(script.clone()), 1).unwrap();
    assert!(
        conn.open(Method::Bidi, &CallOptions::default())
            .await
            .is_err()
    );
    assert_eq!(script.calls(), 1);
}

/// A connector handing out fake connections: the first is dead (always `UNAVAILABLE`), the
/// next `refuse` dials fail, then healthy ones.
fn connector(
    dials: Arc<AtomicU32>,
    refuse: u32,
) -> impl Fn() -> std::future::Ready<Result<Fake, TransportError>> + Send + Sync + 'static {
    move || {
        let n = dials.fetch_add(1, Ordering::SeqCst);
        std::future::ready(match n {
            0 => Ok(Fake(Script::always(Code::Unavailable))),
            n if n <= refuse => Err(TransportError::Protocol("connection refused".into())),
            _ => Ok(Fake(Arc::new(Script::default()))),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn reconnect_replaces_a_broken_connection() {
    let dials = Arc::new(AtomicU32::new(0));
    let c = policy(&format!(
        "{RETRY3}\nreconnect = {{ initial_backoff = \"20ms\", max_backoff = \"100ms\" }}"
    ));
    let conn = layer(&c, connector(dials.clone(), 0), 1).await.unwrap();
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    conn.unary(req(), &safe()).await.unwrap();
    assert_eq!(dials.load(Ordering::SeqCst), 2);
    let s = conn.stats();
    assert_eq!((s.reconnects, s.retries), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn reconnects_are_coalesced_and_back_off() {
    let dials = Arc::new(AtomicU32::new(0));
    let c = policy(r#"reconnect = { initial_backoff = "20ms", max_backoff = "100ms" }"#);
    // Two refused dials before the server is back.
    let conn = layer(&c, connector(dials.clone(), 2), 1).await.unwrap();
    let opts = CallOptions::default();
    let results = join_all((0..10).map(|_| conn.unary(req(), &opts))).await;
    assert!(
        results.iter().all(Result::is_err),
        "the broken connection fails them"
    );
    // Ten failures, one dial loop: it takes three dials to get through.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dials.load(Ordering::SeqCst), 4);
    let s = conn.stats();
    assert_eq!((s.reconnects, s.reconnect_failures), (1, 2));
    conn.unary(req(), &opts).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_during_a_reconnect_waits_for_its_outcome() {
    let dials = Arc::new(AtomicU32::new(0));
    let c = policy(r#"reconnect = { initial_backoff = "20ms", max_backoff = "20ms" }"#);
    let conn = layer(&c, connector(dials.clone(), 2), 1).await.unwrap();
    let opts = CallOptions::default();
    assert!(conn.unary(req(), &opts).await.is_err()); // starts the dial loop
    tokio::task::yield_now().await; // first dial: refused
    // Waits for the second dial, which is refused too.
    let e = conn.unary(req(), &opts).await.unwrap_err();
    assert!(e.message().starts_with("reconnecting"), "{e}");
    conn.unary(req(), &opts).await.unwrap(); // waits for the third dial: through
    assert_eq!(dials.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn wrap_refuses_reconnect_without_a_connector() {
    let c = policy(r#"reconnect = { initial_backoff = "20ms" }"#);
    let e = wrap(&c, Fake(Arc::new(Script::default())), 1).unwrap_err();
    assert!(e.to_string().contains("connector"), "{e}");
}
