//! Streaming cases: each streaming method, empty streams, a 100k-message integrity check and
//! backlogs of small messages on either side of a call.

use std::time::Duration;

use wirebench_core::{
    CallReceiver, CallSender, Capability, Connection, Directives, EchoRequest, Method, pattern,
};

use super::{INTEROP_REQUEST_SIZES, INTEROP_RESPONSE_SIZES, case, drain, noise, opts};
use crate::conformance::{Case, CaseResult, Ctx, Failure};
use crate::ensure;
use wirebench_core::Transport;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            server_stream,
            "streaming",
            &[Capability::ServerStream],
            "4 responses of 31415, 9, 2653 and 58979 B arrive in order"
        ),
        case!(
            client_stream,
            "streaming",
            &[Capability::ClientStream],
            "4 requests totalling 74,922 B are all counted by the server"
        ),
        case!(
            bidi_ping_pong,
            "streaming",
            &[Capability::Bidi],
            "4 request/response exchanges in lockstep, sizes as requested"
        ),
        case!(
            bidi_half_duplex,
            "streaming",
            &[Capability::Bidi],
            "all requests first, then all responses, in order"
        ),
        case!(
            empty_stream,
            "streaming",
            &[Capability::Bidi],
            "a bidi call with no requests ends OK with no responses"
        ),
        case!(
            stream_integrity,
            "streaming",
            &[Capability::Bidi],
            "100,000 sequence-numbered messages: no gap, duplicate or reorder",
            120,
            false
        ),
        case!(
            backlog_at_server,
            "streaming",
            &[Capability::Bidi],
            "20,000 8-byte messages queue while the handler sleeps 300 ms: all echoed in order, \
             the connection stays usable",
            60,
            false
        ),
        case!(
            backlog_at_client,
            "streaming",
            &[Capability::Bidi],
            "20,000 8-byte answers queue while the caller reads nothing for 300 ms: all arrive in \
             order, the connection stays usable",
            60,
            false
        ),
    ]
}

/// Messages in each backlog case: more small messages than limits that count messages or
/// frames rather than bytes let a peer hold unread (h2's small-DATA-frame guard: ~2,100
/// frames at hyper's 1 MiB connection window, ~10,800 at tonic's 5 MiB client window), while
/// few enough bytes (160 KB of payload) that byte-counting flow control never has to stop the
/// sender.
const BACKLOG: u64 = 20_000;
/// How long one side of a backlog case falls behind.
const BACKLOG_STALL: Duration = Duration::from_millis(300);

fn sized(request: usize, response: u32, seed: u64) -> EchoRequest {
    EchoRequest::new(noise(request, seed)).with_directives(Directives {
        response_size: Some(response),
        ..Default::default()
    })
}

async fn server_stream<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::ServerStream, &opts()).await?;
    let d = Directives {
        response_sizes: INTEROP_RESPONSE_SIZES.to_vec(),
        ..Default::default()
    };
    s.send(EchoRequest::new(Vec::new()).with_directives(d))
        .await?;
    s.close_send().await?;
    let (got, end) = drain(&mut r).await;
    end?;
    let sizes: Vec<usize> = got.iter().map(|m| m.payload.len()).collect();
    let want: Vec<usize> = INTEROP_RESPONSE_SIZES.iter().map(|s| *s as usize).collect();
    ensure!(sizes == want, "response sizes {sizes:?}, expected {want:?}");
    for (i, m) in got.iter().enumerate() {
        ensure!(
            m.payload == pattern(m.payload.len()),
            "response {i} bytes differ from the pattern"
        );
    }
    Ok(None)
}

async fn client_stream<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::ClientStream, &opts()).await?;
    for (i, n) in INTEROP_REQUEST_SIZES.iter().enumerate() {
        s.send(EchoRequest::new(noise(*n, i as u64))).await?;
    }
    s.close_send().await?;
    let (got, end) = drain(&mut r).await;
    end?;
    ensure!(got.len() == 1, "{} responses, expected 1", got.len());
    let m = &got[0];
    ensure!(
        m.received_bytes == 74_922 && m.received_messages == 4,
        "server counted {} messages / {} bytes, expected 4 / 74922",
        m.received_messages,
        m.received_bytes
    );
    Ok(None)
}

async fn bidi_ping_pong<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
    for (i, (req, resp)) in INTEROP_REQUEST_SIZES
        .iter()
        .zip(INTEROP_RESPONSE_SIZES)
        .enumerate()
    {
        s.send(sized(*req, resp, i as u64)).await?;
        let m = r
            .recv()
            .await?
            .ok_or_else(|| Failure(format!("stream ended before response {i}")))?;
        ensure!(
            m.payload.len() == resp as usize,
            "response {i}: {} bytes, expected {resp}",
            m.payload.len()
        );
    }
    s.close_send().await?;
    let (rest, end) = drain(&mut r).await;
    end?;
    ensure!(rest.is_empty(), "{} unexpected extra responses", rest.len());
    Ok(None)
}

async fn bidi_half_duplex<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
    for (i, (req, resp)) in INTEROP_REQUEST_SIZES
        .iter()
        .zip(INTEROP_RESPONSE_SIZES)
        .enumerate()
    {
        s.send(sized(*req, resp, i as u64)).await?;
    }
    s.close_send().await?;
    let (got, end) = drain(&mut r).await;
    end?;
    let sizes: Vec<u32> = got.iter().map(|m| m.payload.len() as u32).collect();
    ensure!(
        sizes == INTEROP_RESPONSE_SIZES,
        "response sizes {sizes:?}, expected {INTEROP_RESPONSE_SIZES:?}"
    );
    Ok(None)
}

async fn empty_stream<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
    s.close_send().await?;
    let (got, end) = drain(&mut r).await;
    end?;
    ensure!(got.is_empty(), "{} responses to an empty stream", got.len());
    Ok(None)
}

async fn stream_integrity<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const N: u64 = 100_000;
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    sequenced(&c, N, Stall::None).await?;
    Ok(Some(format!("{N} messages in order")))
}

/// The handler falls behind: the first request asks the server to sleep before it reads on,
/// so the rest queue in the transport (the case that cost grpc connections to h2's
/// small-DATA-frame guard, `docs/measurements.md`).
async fn backlog_at_server<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    backlog(ctx, Stall::Handler(BACKLOG_STALL)).await?;
    Ok(Some(format!(
        "{BACKLOG} messages in order after a {} ms stall",
        BACKLOG_STALL.as_millis()
    )))
}

/// The caller falls behind: it sends everything but reads nothing at first, so the answers
/// queue on its side.
async fn backlog_at_client<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    backlog(ctx, Stall::Reader(BACKLOG_STALL)).await?;
    Ok(Some(format!(
        "{BACKLOG} answers in order, read after {} ms",
        BACKLOG_STALL.as_millis()
    )))
}

/// `BACKLOG` messages behind `stall`, then a unary call on the same connection: a transport
/// that survived the backlog by dropping its connection fails there.
async fn backlog<T: Transport + Clone>(ctx: Ctx<T>, stall: Stall) -> Result<(), Failure> {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    sequenced(&c, BACKLOG, stall).await?;
    let payload = noise(64, 7);
    let r = c
        .unary(EchoRequest::new(payload.clone()), &opts())
        .await
        .map_err(|s| Failure(format!("a unary call after the stream failed: {s}")))?;
    ensure!(
        r.message.payload == payload,
        "a unary call after the stream echoed other bytes"
    );
    Ok(())
}

/// Which side of a [`sequenced`] call falls behind, and for how long.
#[derive(Clone, Copy)]
enum Stall {
    /// Neither: the sender writes as fast as the transport takes messages.
    None,
    /// The first request carries a `delay` directive: the handler sleeps before reading on.
    Handler(Duration),
    /// The caller starts reading answers this late.
    Reader(Duration),
}

/// One bidi call of `n` sequence-numbered 8-byte messages, sent while the answers are read
/// and checked: no gap, duplicate or reorder, and all `n` back. Behind a [`Stall`] the sender
/// also yields after every message, as a caller that produces messages one at a time does,
/// so transports that coalesce what is queued (tonic's encoder, write batching) put each
/// message in a write of its own: the small writes that per-frame or per-message limits count.
async fn sequenced<C: Connection>(c: &C, n: u64, stall: Stall) -> Result<(), Failure> {
    let trickle = !matches!(stall, Stall::None);
    let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
    let send = async move {
        for seq in 0..n {
            let mut req = EchoRequest::new(seq.to_le_bytes().to_vec());
            if let (0, Stall::Handler(delay)) = (seq, stall) {
                req = req.with_directives(Directives {
                    delay,
                    ..Default::default()
                });
            }
            s.send(req).await?;
            if trickle {
                tokio::task::yield_now().await;
            }
        }
        s.close_send().await
    };
    let check = async move {
        if let Stall::Reader(late) = stall {
            tokio::time::sleep(late).await;
        }
        let mut expected = 0u64;
        while let Some(m) = r.recv().await? {
            let Ok(bytes) = <[u8; 8]>::try_from(&m.payload[..]) else {
                return Ok(Err(format!(
                    "message {expected}: {} bytes, expected 8",
                    m.payload.len()
                )));
            };
            let seq = u64::from_le_bytes(bytes);
            if seq != expected {
                let what = if seq < expected {
                    "duplicate or reorder"
                } else {
                    "gap"
                };
                return Ok(Err(format!("{what}: got #{seq} where #{expected} was due")));
            }
            expected += 1;
        }
        Ok::<_, wirebench_core::Status>(Ok(expected))
    };
    let (sent, checked) = tokio::join!(send, check);
    // The receiving half first: when a call ends early, the sender only learns that it ended
    // (FAILED_PRECONDITION), while the receiver holds the status that says why.
    let checked = checked?;
    sent?;
    match checked {
        Ok(got) => {
            ensure!(got == n, "stream ended after {got} of {n} messages");
            Ok(())
        }
        Err(reason) => Err(Failure(reason)),
    }
}
