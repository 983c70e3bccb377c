//! Cases that need faults: the harness's fault proxy on the client's network hop (reset, data
//! limit, blackhole, datagram loss) and server or broker restarts. Each bounds every wait, so a
//! hang is a failure that says what was awaited.
//!
//! The proxy goes where [`Transport::network_path`] says the client's bytes go (the server, or
//! a broker transport's broker) with the protocol used there; the cases never name a transport.

use std::time::Duration;

use tokio::time::Instant;
use wirebench_core::broker::RestartMode;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, Capability, Connection, Directives, Echo, EchoRequest,
    Method, ServerConfig, Status, Transport, pattern,
};

use super::{case, drain, noise, opts};
use crate::conformance::{Case, CaseResult, Ctx, Failure, TestServer};
use crate::ensure;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            peer_reset_midstream,
            "faults",
            &[
                Capability::ServerStream,
                Capability::NetworkFaults,
                Capability::StreamHop
            ],
            "a connection reset (RST) in the middle of a server stream fails the stream promptly, \
             never hangs or ends it as if complete",
            30,
            true
        ),
        case!(
            truncated_frame,
            "faults",
            &[
                Capability::Unary,
                Capability::NetworkFaults,
                Capability::StreamHop
            ],
            "a connection closed mid-frame while a large reply is in flight fails the call, never \
             delivers a partial message as a success",
            30,
            true
        ),
        case!(
            dead_peer_detection,
            "faults",
            &[
                Capability::Unary,
                Capability::NetworkFaults,
                Capability::DeadPeerDetection
            ],
            "with a 1 s keepalive asked, a call without a deadline fails within 12 s once the path \
             is blackholed",
            30,
            true
        ),
        case!(
            lossy_transfer,
            "faults",
            &[
                Capability::Unary,
                Capability::NetworkFaults,
                Capability::Datagrams
            ],
            "1 MiB unary and a 100-message server stream under 2% random datagram loss arrive \
             byte-exact",
            60,
            true
        ),
        case!(
            reconnect_after_restart,
            "faults",
            &[Capability::Unary],
            "after the server (or broker) restarts, the first call succeeds within 5 s: on the same \
             connection where the transport reconnects by itself, else on a re-dialled one",
            60,
            false
        ),
        case!(
            graceful_drain,
            "faults",
            &[Capability::Unary, Capability::GracefulDrain],
            "10 calls in flight when the server drains (5 s grace) all finish OK; a new \
             connection to the restarted server works",
            60,
            false
        ),
    ]
}

/// How promptly a reset must surface.
const RESET_BOUND: Duration = Duration::from_secs(2);
/// The keepalive `dead_peer_detection` asks for, and the bound it allows: two intervals for
/// HTTP/2 and QUIC, up to four for NATS's PING counting, and room for clients that round the
/// interval up (MQTT via rumqttc: at least 5 s, so two intervals are 10 s). The note reports
/// the time each transport actually took.
const KEEPALIVE: Duration = Duration::from_secs(1);
const DEAD_PEER_BOUND: Duration = Duration::from_secs(12);
/// From the restarted server accepting to the first successful call.
const RECONNECT_BOUND: Duration = Duration::from_secs(5);
/// The grace `graceful_drain` gives its server: ten times the calls' own delay.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Re-dial backoff: the first pause, doubled after each failure up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_millis(800);
/// Each attempt while reconnecting has its own deadline, so one stuck attempt cannot use the
/// whole bound.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long closing a connection or stopping a server may take before the case calls it a hang.
const CLEANUP_BOUND: Duration = Duration::from_secs(5);

/// Awaits `fut` for at most `within`; a timeout is a failure naming `what` was awaited, so a
/// hang in a multi-step case says which step hung instead of running into the case timeout.
async fn step<F: std::future::Future>(
    what: &str,
    within: Duration,
    fut: F,
) -> Result<F::Output, Failure> {
    tokio::time::timeout(within, fut)
        .await
        .map_err(|_| Failure(format!("{what}: no result within {within:?}")))
}

/// Waits until the server has started `n` calls (a poll: the echo counts calls, it has no
/// watch for them), up to `within`.
async fn wait_calls(echo: &Echo, n: u64, within: Duration) -> Result<(), Failure> {
    let until = Instant::now() + within;
    while echo.calls() < n {
        ensure!(
            Instant::now() < until,
            "the server saw {} of {n} calls within {within:?}",
            echo.calls()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The next message of a stream, bounded.
async fn recv_within<R: CallReceiver>(
    r: &mut R,
    within: Duration,
    what: &str,
) -> Result<Option<wirebench_core::EchoResponse>, Failure> {
    match tokio::time::timeout(within, r.recv()).await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(s)) => Err(Failure(format!("{what}: {s}"))),
        Err(_) => Err(Failure(format!("{what}: nothing within {within:?}"))),
    }
}

async fn peer_reset_midstream<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let (path, via) = ctx.fault_path(&server.endpoint, &[]).await?;
    let c = ctx.connect(&via).await?;
    // 300 responses 20 ms apart: six seconds of stream, far longer than the reset bound, so
    // the stream cannot finish on its own while the case waits for the error.
    const COUNT: usize = 300;
    let d = Directives {
        response_count: Some(COUNT as u32),
        response_size: Some(1024),
        response_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let (mut s, mut r) = c.open(Method::ServerStream, &opts()).await?;
    s.send(EchoRequest::new(Vec::new()).with_directives(d))
        .await?;
    s.close_send().await?;
    let mut got = 0usize;
    for _ in 0..3 {
        recv_within(&mut r, Duration::from_secs(5), "before the reset")
            .await?
            .ok_or_else(|| Failure("the stream ended before the reset".into()))?;
        got += 1;
    }
    path.set_faults(&["reset"])?;
    let reset_at = Instant::now();
    let end = tokio::time::timeout(RESET_BOUND, async {
        loop {
            match r.recv().await {
                Ok(Some(m)) => {
                    got += 1;
                    if m.payload != pattern(m.payload.len()) {
                        return Err(Failure(format!("response {got} is corrupted")));
                    }
                }
                Ok(None) => return Ok(None),
                Err(s) => return Ok(Some(s)),
            }
        }
    })
    .await;
    let elapsed = reset_at.elapsed();
    let resets = path.counters().resets;
    ensure!(
        resets >= 1,
        "the proxy reset no connection (counters: {resets})"
    );
    match end {
        Err(_) => Err(Failure(format!(
            "no error within {RESET_BOUND:?} of the reset: the stream hangs ({got} of {COUNT} \
             responses received)"
        ))),
        Ok(Err(f)) => Err(f),
        Ok(Ok(None)) => Err(Failure(format!(
            "the stream ended OK after {got} of {COUNT} responses: a reset connection was \
             reported as a complete stream"
        ))),
        Ok(Ok(Some(s))) => Ok(Some(format!(
            "{} after {elapsed:.0?} ({got} of {COUNT} responses before it): {}",
            s.code(),
            s.message()
        ))),
    }
}

async fn truncated_frame<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    // Large enough to span many TCP segments and proxy reads, small enough for every broker's
    // default message limit (nats-server: 1 MB).
    const REPLY: usize = 300_000;
    const CUT_AFTER: u64 = 32 * 1024;
    let server = ctx.server().await?;
    let (path, via) = ctx.fault_path(&server.endpoint, &[]).await?;
    let c = ctx.connect(&via).await?;
    c.unary(EchoRequest::new(vec![1u8; 16]), &opts()).await?;
    // The limit counts every byte the connection has carried downstream; allow what it
    // carried so far plus a part of the reply, so the cut falls inside the reply's frame.
    let limit = path.counters().bytes_down + CUT_AFTER;
    path.set_faults(&[&format!("limit:{limit},dir=down")])?;
    let d = Directives {
        response_size: Some(REPLY as u32),
        ..Default::default()
    };
    let o = opts();
    let call = c.unary(EchoRequest::new(vec![2u8; 16]).with_directives(d), &o);
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| {
            Failure(format!(
                "the call neither failed nor finished within 10 s of the connection being cut \
                 {CUT_AFTER} B into a {REPLY} B reply"
            ))
        })?;
    let limited = path.counters().limited;
    match result {
        Ok(r) if r.message.payload.len() != REPLY => Err(Failure(format!(
            "a partial message was delivered as a success: {} of {REPLY} bytes",
            r.message.payload.len()
        ))),
        Ok(_) => Err(Failure(format!(
            "the whole {REPLY} B reply arrived although the proxy was to cut it after {CUT_AFTER} \
             B (connections cut: {limited})"
        ))),
        Err(s) => {
            ensure!(
                limited >= 1,
                "the call failed ({s}) but the proxy cut no connection"
            );
            Ok(Some(format!("{}: {}", s.code(), s.message())))
        }
    }
}

async fn dead_peer_detection<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let (path, via) = ctx.fault_path(&server.endpoint, &[]).await?;
    let mut config = ctx.env.client.clone();
    config.keepalive = Some(KEEPALIVE);
    let c = ctx.connect_with(&via, config).await?;
    c.unary(EchoRequest::new(vec![1u8; 16]), &opts()).await?;
    // A call with no deadline that the server answers only after a minute: only dead-peer
    // detection can end it within the bound.
    let d = Directives {
        delay: Duration::from_secs(60),
        ..Default::default()
    };
    let calls_before = server.echo.calls();
    let o = opts();
    let call = c.unary(EchoRequest::new(vec![2u8; 16]).with_directives(d), &o);
    tokio::pin!(call);
    // The call must be in flight at the server before the path goes silent.
    tokio::select! {
        r = &mut call => {
            return Err(Failure(format!("the sleeping call ended before the blackhole: {r:?}")));
        }
        w = wait_calls(&server.echo, calls_before + 1, Duration::from_secs(5)) => w?,
    }
    path.set_faults(&["blackhole"])?;
    let silent_at = Instant::now();
    let result = tokio::time::timeout(DEAD_PEER_BOUND, call).await;
    let elapsed = silent_at.elapsed();
    match result {
        Err(_) => Err(Failure(format!(
            "a call without deadline was still pending {DEAD_PEER_BOUND:?} after the path was \
             blackholed (keepalive {KEEPALIVE:?}): the dead peer went undetected"
        ))),
        Ok(Ok(_)) => Err(Failure(
            "the call succeeded through a blackholed path".into(),
        )),
        Ok(Err(s)) => {
            let swallowed = path.counters().blackholed;
            Ok(Some(format!(
                "{} after {elapsed:.1?} with keepalive {KEEPALIVE:?} ({swallowed} B blackholed): {}",
                s.code(),
                s.message()
            )))
        }
    }
}

async fn lossy_transfer<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const BIG: usize = 1 << 20;
    const MESSAGES: usize = 100;
    let server = ctx.server().await?;
    let (path, via) = ctx.fault_path(&server.endpoint, &[]).await?;
    // Connect on a clean path, then lose: the transfer is what is checked, not the handshake.
    let c = ctx.connect(&via).await?;
    path.set_faults(&["loss:2%"])?;
    let payload = noise(BIG, 2026);
    let started = Instant::now();
    let r = c
        .unary(EchoRequest::new(payload.clone()), &opts())
        .await
        .map_err(|s| Failure(format!("1 MiB unary under 2% loss: {s}")))?;
    ensure!(
        r.message.payload.len() == BIG,
        "1 MiB unary under loss returned {} bytes",
        r.message.payload.len()
    );
    ensure!(
        r.message.payload[..] == payload[..],
        "1 MiB unary under loss: the echo differs from what was sent"
    );
    let unary_took = started.elapsed();
    if ctx.transport_caps().supports(Capability::ServerStream) {
        let d = Directives {
            response_count: Some(MESSAGES as u32),
            response_size: Some(4096),
            ..Default::default()
        };
        let (mut s, mut r) = c.open(Method::ServerStream, &opts()).await?;
        s.send(EchoRequest::new(Vec::new()).with_directives(d))
            .await?;
        s.close_send().await?;
        let (got, end) = drain(&mut r).await;
        end.map_err(|s| Failure(format!("server stream under 2% loss: {s}")))?;
        ensure!(
            got.len() == MESSAGES,
            "server stream under loss delivered {} of {MESSAGES} messages",
            got.len()
        );
        ensure!(
            got.iter()
                .all(|m| m.payload.len() == 4096 && m.payload == pattern(4096)),
            "server stream under loss: a message differs"
        );
    }
    let dropped = path.counters().dropped;
    ensure!(
        dropped > 0,
        "the proxy dropped no datagram: the loss never applied"
    );
    Ok(Some(format!(
        "{dropped} datagrams dropped; 1 MiB unary took {unary_took:.0?}"
    )))
}

/// The outcome of [`first_success`]: attempts made and the time to the first success.
struct Recovery {
    attempts: u32,
    took: Duration,
}

/// Calls `attempt` until one succeeds, pausing between failures with exponential backoff
/// (50 ms doubling to 800 ms), for at most `bound` from now.
async fn first_success<F, Fut>(bound: Duration, mut attempt: F) -> Result<Recovery, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let started = Instant::now();
    let mut pause = BACKOFF_FIRST;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt()).await {
            Ok(Ok(())) => {
                return Ok(Recovery {
                    attempts,
                    took: started.elapsed(),
                });
            }
            Ok(Err(e)) => e,
            Err(_) => Failure(format!("attempt timed out after {ATTEMPT_TIMEOUT:?}")),
        };
        if started.elapsed() + pause > bound {
            return Err(Failure(format!(
                "no successful call within {bound:?} of the restart ({attempts} attempts, last: \
                 {last})"
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF_CAP);
    }
}

/// Serves on `config.listen` again. The old server's socket may linger briefly after its
/// shutdown returned (a QUIC endpoint keeps its UDP socket until its closed connections have
/// drained), so binding is retried with the same backoff for up to 5 s.
async fn serve_again<T: Transport + Clone>(
    ctx: &Ctx<T>,
    config: ServerConfig,
) -> Result<TestServer<T::Server>, Failure> {
    let until = Instant::now() + RECONNECT_BOUND;
    let mut pause = BACKOFF_FIRST;
    loop {
        let attempt = step(
            "serving again on the old address",
            ATTEMPT_TIMEOUT * 5,
            ctx.serve(config.clone(), ctx.env.echo.clone()),
        )
        .await?;
        match attempt {
            Ok(s) => return Ok(s),
            Err(Failure(e)) if Instant::now() + pause > until => {
                return Err(Failure(format!(
                    "could not serve again on {} within {RECONNECT_BOUND:?}: {e}",
                    config.listen
                )));
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF_CAP);
    }
}

/// The server config that serves again where a stopped server was (endpoint `old`): a broker
/// transport's endpoint names the broker and the service's subject prefix, which serving on it
/// joins; a point-to-point server binds its old socket address again (its endpoint may carry
/// more, such as a QUIC certificate pin).
fn same_address<T: Transport + Clone>(ctx: &Ctx<T>, old: &str) -> ServerConfig {
    let listen = if ctx.transport.broker().is_some() {
        old.to_owned()
    } else {
        match ctx.transport.network_path(old) {
            Ok(hop) => hop.addr.to_string(),
            Err(_) => ctx.server_config().listen,
        }
    };
    ServerConfig {
        listen,
        ..ctx.server_config()
    }
}

/// One small call with its own deadline.
async fn ping<C: Connection>(c: &C) -> Result<(), Failure> {
    c.unary(
        EchoRequest::new(vec![7u8; 16]),
        &CallOptions::with_timeout(ATTEMPT_TIMEOUT),
    )
    .await
    .map(|_| ())
    .map_err(|s: Status| Failure(s.to_string()))
}

async fn reconnect_after_restart<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let reconnects = ctx.transport_caps().supports(Capability::Reconnect);
    // A broker transport's client talks to the broker: restart that when the harness owns it
    // (a private broker), which both the client and the echo server must survive. Otherwise
    // (point-to-point, or an external broker) restart the server on the same address.
    if ctx.transport.broker().is_some() && ctx.env.broker_url.is_none() {
        let mut broker = ctx.broker().await?;
        if broker.can_restart() {
            let config = ServerConfig {
                listen: broker.url(),
                ..ctx.server_config()
            };
            let server = ctx.serve(config, ctx.env.echo.clone()).await?;
            let c = ctx.connect(&server.endpoint).await?;
            ping(&c).await?;
            broker.restart(RestartMode::Kill).await?;
            ensure!(
                reconnects,
                "a broker transport that does not reconnect by itself cannot survive a broker \
                 restart"
            );
            let r = first_success(RECONNECT_BOUND, || ping(&c)).await?;
            server.stop().await;
            broker.stop().await;
            return Ok(Some(format!(
                "broker killed and restarted: the same connection recovered after {:.0?} \
                 ({} attempts)",
                r.took, r.attempts
            )));
        }
    }
    let server = ctx.server().await?;
    let old = server.endpoint.clone();
    let c = ctx.connect(&old).await?;
    ping(&c).await?;
    server.stop().await;
    let config = same_address(&ctx, &old);
    let server = serve_again(&ctx, config).await?;
    let note = if reconnects {
        ensure!(
            server.endpoint == old,
            "the restarted server's endpoint {:?} differs from the old {old:?}: a \
             self-reconnecting connection cannot follow",
            server.endpoint
        );
        let r = first_success(RECONNECT_BOUND, || ping(&c)).await?;
        format!(
            "server restarted: the same connection recovered after {:.0?} ({} attempts)",
            r.took, r.attempts
        )
    } else {
        // The transport's connection does not come back by itself: re-dial, as a reconnect
        // policy would, with the backoff above, through the same `connect` every case uses.
        let endpoint = server.endpoint.clone();
        let ctx2 = ctx.clone();
        let r = first_success(RECONNECT_BOUND, || {
            let ctx = ctx2.clone();
            let endpoint = endpoint.clone();
            async move {
                let c = ctx
                    .connect(&endpoint)
                    .await
                    .map_err(|Failure(f)| Failure(format!("connect: {f}")))?;
                ping(&c).await
            }
        })
        .await?;
        // The old connection must fail, not hang or pretend: it talked to a server that is gone.
        let old_conn = tokio::time::timeout(ATTEMPT_TIMEOUT * 2, ping(&c)).await;
        let old_note = match old_conn {
            Ok(Ok(())) => "the old connection works again too".to_owned(),
            Ok(Err(e)) => format!("the old connection fails: {e}"),
            Err(_) => {
                return Err(Failure(
                    "a call on the old connection hung past its own deadline".into(),
                ));
            }
        };
        format!(
            "server restarted: a re-dialled connection succeeded after {:.0?} ({} attempts); \
             {old_note}",
            r.took, r.attempts
        )
    };
    server.stop().await;
    Ok(Some(note))
}

async fn graceful_drain<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const IN_FLIGHT: u64 = 10;
    // A broker transport's server drains off a broker that stays up (the environment's, else
    // one started for this case), so the restarted server can join the same service on it.
    let broker = if ctx.transport.broker().is_some() && ctx.env.broker_url.is_none() {
        Some(step("starting a broker", CLEANUP_BOUND * 2, ctx.broker()).await??)
    } else {
        None
    };
    let config = match &broker {
        Some(b) => ServerConfig {
            listen: b.url(),
            ..ctx.server_config()
        },
        None => ctx.server_config(),
    };
    let server = step(
        "starting the server",
        CLEANUP_BOUND,
        ctx.serve(config, ctx.env.echo.clone()),
    )
    .await??;
    let old = server.endpoint.clone();
    let c = step("connecting", ATTEMPT_TIMEOUT * 5, ctx.connect(&old)).await??;
    let d = Directives {
        delay: Duration::from_millis(500),
        ..Default::default()
    };
    let o = opts();
    let calls = futures::future::join_all((0..IN_FLIGHT).map(|i| {
        let req = EchoRequest::new(vec![i as u8; 32]).with_directives(d.clone());
        c.unary(req, &o)
    }));
    let echo = server.echo.clone();
    let before = echo.calls();
    let drain = async {
        wait_calls(&echo, before + IN_FLIGHT, Duration::from_secs(5)).await?;
        step(
            &format!("the server's drain (grace {DRAIN_GRACE:?})"),
            DRAIN_GRACE * 2,
            server.drain(DRAIN_GRACE),
        )
        .await
    };
    let calls = step("the in-flight calls", DRAIN_GRACE * 3, calls);
    let (results, drained) = tokio::join!(calls, drain);
    let results = results?;
    let report = drained?;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.map_err(|s| Failure(format!("in-flight call {i} failed on drain: {s}")))?;
        ensure!(
            r.message.payload[..] == [i as u8; 32][..],
            "in-flight call {i} returned a different payload"
        );
    }
    ensure!(
        report.is_clean(),
        "every call finished, yet the server reports it cut some: {report}"
    );
    let restarted = serve_again(&ctx, same_address(&ctx, &old)).await?;
    let fresh = step(
        "connecting to the restarted server",
        ATTEMPT_TIMEOUT * 5,
        ctx.connect(&restarted.endpoint),
    )
    .await??;
    step(
        "a call to the restarted server",
        ATTEMPT_TIMEOUT * 2,
        ping(&fresh),
    )
    .await?
    .map_err(|e| Failure(format!("a call to the restarted server: {e}")))?;
    // A call on the drained connection must not hang: it fails fast (the server said it takes
    // no more) or, where the connection follows the service (a broker), works.
    let old_note = match step(
        "a call on the drained connection",
        ATTEMPT_TIMEOUT * 2,
        ping(&c),
    )
    .await?
    {
        Ok(()) => "a call on the old connection works".to_owned(),
        Err(e) => format!("a call on the old connection fails: {e}"),
    };
    // Closed before their broker stops, so they do not try to reconnect to it.
    step("closing the new connection", CLEANUP_BOUND, fresh.close()).await?;
    step("closing the drained connection", CLEANUP_BOUND, c.close()).await?;
    step(
        "stopping the restarted server",
        CLEANUP_BOUND,
        restarted.stop(),
    )
    .await?;
    if let Some(b) = broker {
        step("stopping the broker", CLEANUP_BOUND, b.stop()).await?;
    }
    Ok(Some(format!(
        "{IN_FLIGHT} in-flight calls finished OK ({report}); {old_note}"
    )))
}
