//! Deadlines and cancellation: errors on time, budgets propagated, cancels observed by the
//! server's handler.

use std::time::{Duration, Instant};

use wirebench_core::echo::DEADLINE_REPORT_KEY;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, Capability, Code, Connection, Directives, EchoRequest,
    Method, Status,
};

use super::{OBSERVE_WITHIN, case, drain, expect_code, opts};
use crate::conformance::{Case, CaseResult, Ctx, Failure};
use crate::ensure;
use wirebench_core::Transport;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            deadline_exceeded,
            "deadline",
            &[Capability::Unary],
            "a call outliving its deadline fails with DEADLINE_EXCEEDED on time, on every method, \
             and the server stops it"
        ),
        case!(
            deadline_met,
            "deadline",
            &[Capability::Unary],
            "a call finishing well within its deadline succeeds"
        ),
        case!(
            deadline_propagation,
            "deadline",
            &[Capability::DeadlinePropagation],
            "the server sees a budget no larger than the client's"
        ),
        case!(
            cancel_before_first_message,
            "cancel",
            &[Capability::ClientStream, Capability::ServerCancel],
            "a call cancelled before sending anything is observed cancelled by the server"
        ),
        case!(
            cancel_after_first_response,
            "cancel",
            &[Capability::Bidi, Capability::ServerCancel],
            "a call cancelled after its first response is observed cancelled by the server"
        ),
    ]
}

/// The deadline used by the timing checks.
const DEADLINE: Duration = Duration::from_millis(300);
/// How late the error may arrive: loaded CI machines and debug builds need some room.
const SLACK: Duration = Duration::from_millis(250);
/// How long the server is told to sleep: far past the deadline.
const SLEEP: Duration = Duration::from_secs(5);

fn sleepy() -> EchoRequest {
    EchoRequest::new(vec![1u8; 16]).with_directives(Directives {
        delay: SLEEP,
        ..Default::default()
    })
}

fn check_timing(what: &str, started: Instant, result: Result<(), Status>) -> Result<(), Failure> {
    let elapsed = started.elapsed();
    expect_code(what, result, Code::DeadlineExceeded)?;
    ensure!(
        elapsed + Duration::from_millis(5) >= DEADLINE,
        "{what}: DEADLINE_EXCEEDED after {elapsed:?}, before the {DEADLINE:?} deadline"
    );
    ensure!(
        elapsed <= DEADLINE + SLACK,
        "{what}: DEADLINE_EXCEEDED after {elapsed:?}, more than {SLACK:?} past the {DEADLINE:?} \
         deadline"
    );
    Ok(())
}

async fn deadline_exceeded<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let caps = ctx.transport_caps();
    let o = CallOptions::with_timeout(DEADLINE);
    let mut methods = vec!["Unary"];

    let t = Instant::now();
    let r = c.unary(sleepy(), &o).await.map(|_| ());
    check_timing("Unary", t, r)?;

    for method in [Method::ServerStream, Method::ClientStream, Method::Bidi] {
        let cap = match method {
            Method::ServerStream => Capability::ServerStream,
            Method::ClientStream => Capability::ClientStream,
            _ => Capability::Bidi,
        };
        if !caps.supports(cap) {
            continue;
        }
        methods.push(method.name());
        let t = Instant::now();
        let result = async {
            let (mut s, mut r) = c.open(method, &o).await?;
            // Client stream: one message, no half-close, so the server keeps waiting.
            s.send(sleepy()).await?;
            if method == Method::ServerStream {
                s.close_send().await?;
            }
            let (_, end) = drain(&mut r).await;
            drop(s);
            end
        }
        .await;
        check_timing(method.name(), t, result)?;
    }
    // The server must stop each call: by its own deadline or by the client's cancellation.
    let n = methods.len() as u64;
    let (seen, held) = server
        .echo
        .wait_observed(OBSERVE_WITHIN, |o| o.deadline_exceeded + o.cancelled >= n)
        .await;
    ensure!(
        held,
        "the server stopped {} of {n} expired calls (deadline {}, cancel {})",
        seen.deadline_exceeded + seen.cancelled,
        seen.deadline_exceeded,
        seen.cancelled
    );
    // The connection is still usable.
    c.unary(EchoRequest::new(vec![2u8; 4]), &opts()).await?;
    Ok(Some(format!("methods: {}", methods.join(", "))))
}

async fn deadline_met<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let request = EchoRequest::new(vec![3u8; 8]).with_directives(Directives {
        delay: Duration::from_millis(50),
        ..Default::default()
    });
    let r = c
        .unary(request, &CallOptions::with_timeout(Duration::from_secs(10)))
        .await?;
    ensure!(r.message.payload[..] == [3u8; 8], "wrong echo");
    Ok(None)
}

async fn deadline_propagation<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let budget = Duration::from_secs(5);
    let request = EchoRequest::new(Vec::new()).with_directives(Directives {
        report_deadline: true,
        ..Default::default()
    });
    let r = c.unary(request, &CallOptions::with_timeout(budget)).await?;
    let seen = r
        .trailers
        .get_ascii(DEADLINE_REPORT_KEY)
        .ok_or_else(|| Failure(format!("no {DEADLINE_REPORT_KEY} trailer")))?;
    let us: u64 = seen
        .parse()
        .map_err(|_| Failure(format!("server saw no deadline (reported {seen:?})")))?;
    let seen = Duration::from_micros(us);
    ensure!(
        seen <= budget,
        "server saw a budget of {seen:?}, larger than the client's {budget:?}"
    );
    ensure!(
        seen >= budget / 2,
        "server saw a budget of {seen:?}, far below the client's {budget:?}"
    );
    // Without a deadline the server must see none.
    let request = EchoRequest::new(Vec::new()).with_directives(Directives {
        report_deadline: true,
        ..Default::default()
    });
    let r = c.unary(request, &opts()).await?;
    let none = r.trailers.get_ascii(DEADLINE_REPORT_KEY);
    ensure!(
        none == Some("none"),
        "a call without deadline reported {none:?}"
    );
    Ok(Some(format!(
        "client budget {budget:?}, server saw {seen:?}"
    )))
}

async fn cancel_before_first_message<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (s, mut r) = c.open(Method::ClientStream, &opts()).await?;
    r.cancel();
    let end = r.recv().await.map(|_| ());
    expect_code("recv after cancel", end, Code::Cancelled)?;
    let (seen, held) = server
        .echo
        .wait_observed(OBSERVE_WITHIN, |o| o.cancelled >= 1)
        .await;
    drop(s);
    ensure!(
        held,
        "server handler did not observe the cancel within {OBSERVE_WITHIN:?} ({seen:?})"
    );
    Ok(None)
}

async fn cancel_after_first_response<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
    s.send(EchoRequest::new(vec![9u8; 27182])).await?;
    let first = r.recv().await?;
    ensure!(first.is_some(), "no first response");
    r.cancel();
    let end = r.recv().await.map(|_| ());
    expect_code("recv after cancel", end, Code::Cancelled)?;
    let (seen, held) = server
        .echo
        .wait_observed(OBSERVE_WITHIN, |o| o.cancelled >= 1)
        .await;
    drop(s);
    ensure!(
        held,
        "server handler did not observe the cancel within {OBSERVE_WITHIN:?} ({seen:?})"
    );
    Ok(None)
}
