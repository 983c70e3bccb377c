//! Unary cases: empty, large and many concurrent calls.

use std::time::Duration;

use futures::future::join_all;
use wirebench_core::{Capability, Connection, Directives, EchoRequest, pattern};

use super::{case, noise, opts};
use crate::conformance::{Case, CaseResult, Ctx};
use crate::ensure;
use wirebench_core::Transport;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            unary_empty,
            "unary",
            &[Capability::Unary],
            "an empty request gets an empty response"
        ),
        case!(
            unary_large,
            "unary",
            &[Capability::Unary],
            "271,828 B in, 314,159 B out, byte-exact both ways"
        ),
        case!(
            unary_concurrent,
            "unary",
            &[Capability::Unary],
            "1000 calls in flight on one connection, each reply matched to its request"
        ),
    ]
}

async fn unary_empty<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let r = c.unary(EchoRequest::new(Vec::new()), &opts()).await?;
    ensure!(
        r.message.payload.is_empty(),
        "response has {} bytes, expected 0",
        r.message.payload.len()
    );
    Ok(None)
}

async fn unary_large<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let request = noise(271_828, 7);
    let d = Directives {
        response_size: Some(314_159),
        ..Default::default()
    };
    let r = c
        .unary(
            EchoRequest::new(request.clone()).with_directives(d),
            &opts(),
        )
        .await?;
    ensure!(
        r.message.payload.len() == 314_159,
        "response has {} bytes, expected 314159",
        r.message.payload.len()
    );
    ensure!(
        r.message.payload == pattern(314_159),
        "response bytes differ from the requested pattern"
    );
    // The other direction byte-exact: the server echoes the 271,828 request bytes back.
    let r = c.unary(EchoRequest::new(request.clone()), &opts()).await?;
    ensure!(
        r.message.payload[..] == request[..],
        "echoed 271828-byte request differs (got {} bytes)",
        r.message.payload.len()
    );
    Ok(None)
}

async fn unary_concurrent<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const CALLS: usize = 1000;
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    // A short server delay keeps all 1000 calls in flight at the same time.
    let d = Directives {
        delay: Duration::from_millis(200),
        ..Default::default()
    };
    let calls = (0..CALLS).map(|i| {
        let mut payload = (i as u64).to_le_bytes().to_vec();
        payload.extend(noise(i % 64, i as u64));
        let request = EchoRequest::new(payload.clone()).with_directives(d.clone());
        let c = &c;
        async move { (payload, c.unary(request, &opts()).await) }
    });
    let results = join_all(calls).await;
    let mut failed = 0;
    let mut first_error = None;
    for (i, (sent, got)) in results.into_iter().enumerate() {
        match got {
            Ok(r) => ensure!(
                r.message.payload[..] == sent[..],
                "call {i}: reply does not match its request (crossed replies?)"
            ),
            Err(s) => {
                failed += 1;
                first_error.get_or_insert(s);
            }
        }
    }
    ensure!(
        failed == 0,
        "{failed} of {CALLS} calls failed; first: {}",
        first_error.map(|s| s.to_string()).unwrap_or_default()
    );
    Ok(None)
}
