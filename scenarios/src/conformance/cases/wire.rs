//! Byte-level robustness: a byte stream fragmented to single bytes still decodes, and garbage
//! closes only the connection that sent it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirebench_core::{
    CallReceiver, CallSender, Capability, Connection, Directives, EchoRequest, Method, pattern,
};

use super::{case, drain, noise, opts};
use crate::conformance::{Case, CaseResult, Ctx, Failure};
use crate::ensure;
use wirebench_core::Transport;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            fragmented_io,
            "wire",
            &[Capability::ByteStreamWire],
            "calls through a path that writes one byte at a time decode correctly",
            60,
            true
        ),
        case!(
            malformed_frame,
            "wire",
            &[Capability::ByteStreamWire],
            "garbage and truncated bytes close only their own connection; others keep working"
        ),
    ]
}

fn socket_addr(endpoint: &str) -> Result<SocketAddr, Failure> {
    endpoint
        .parse()
        .map_err(|_| Failure(format!("endpoint {endpoint:?} is not a socket address")))
}

async fn fragmented_io<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let upstream = socket_addr(&server.endpoint)?;
    let path = ctx
        .faults()?
        .sliced(upstream, 1, Duration::ZERO)
        .await
        .map_err(|e| Failure(format!("starting the slicing proxy: {e}")))?;
    let c = ctx.connect(&path.endpoint).await?;
    let payload = noise(3000, 11);
    let r = c.unary(EchoRequest::new(payload.clone()), &opts()).await?;
    ensure!(
        r.message.payload[..] == payload[..],
        "unary echo differs after fragmentation"
    );
    if ctx.transport_caps().supports(Capability::ServerStream) {
        let (mut s, mut r) = c.open(Method::ServerStream, &opts()).await?;
        let d = Directives {
            response_sizes: vec![100, 1, 0, 700],
            ..Default::default()
        };
        s.send(EchoRequest::new(Vec::new()).with_directives(d))
            .await?;
        s.close_send().await?;
        let (got, end) = drain(&mut r).await;
        end?;
        let sizes: Vec<usize> = got.iter().map(|m| m.payload.len()).collect();
        ensure!(sizes == [100, 1, 0, 700], "server stream sizes {sizes:?}");
        ensure!(
            got.iter().all(|m| m.payload == pattern(m.payload.len())),
            "server stream bytes differ after fragmentation"
        );
    }
    if ctx.transport_caps().supports(Capability::Bidi) {
        let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
        for i in 0..3u8 {
            let p = noise(50 + usize::from(i), u64::from(i));
            s.send(EchoRequest::new(p.clone())).await?;
            let m = r
                .recv()
                .await?
                .ok_or_else(|| Failure("bidi ended early".into()))?;
            ensure!(
                m.payload[..] == p[..],
                "bidi echo {i} differs after fragmentation"
            );
        }
        s.close_send().await?;
        drain(&mut r).await.1?;
    }
    drop(path);
    Ok(None)
}

/// Writes `bytes` on a fresh raw connection (then half-closes when `truncate`), and waits for
/// the server to close it. Returns how many bytes the server sent before closing.
async fn feed(addr: SocketAddr, bytes: &[u8], truncate: bool) -> Result<usize, Failure> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure(format!("raw connect: {e}")))?;
    // The server may close before reading everything: a failed write is a close, not an error.
    let _ = s.write_all(bytes).await;
    if truncate {
        let _ = s.shutdown().await;
    }
    let mut got = 0usize;
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    ensure!(
        closed.is_ok(),
        "server kept a connection open for 5 s after {} bytes of {}",
        bytes.len(),
        if truncate {
            "a truncated stream"
        } else {
            "garbage"
        }
    );
    Ok(got)
}

async fn malformed_frame<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let addr = socket_addr(&server.endpoint)?;
    let good = ctx.connect(&server.endpoint).await?;
    good.unary(EchoRequest::new(vec![1u8; 10]), &opts()).await?;

    let mut garbage = noise(512, 99);
    garbage[0] = 0xff;
    let zeros = [0u8; 64];
    let mut notes = Vec::new();
    for (what, bytes, truncate) in [
        ("random bytes", &garbage[..], false),
        ("random bytes, then EOF", &garbage[..64], true),
        ("zero bytes", &zeros[..], false),
        ("a single byte, then EOF", &garbage[..1], true),
    ] {
        let sent_back = feed(addr, bytes, truncate)
            .await
            .map_err(|Failure(r)| Failure(format!("{what}: {r}")))?;
        notes.push(format!("{what}: closed after {sent_back} B back"));
        // The connection that behaved is undisturbed.
        good.unary(EchoRequest::new(vec![2u8; 10]), &opts())
            .await
            .map_err(|s| Failure(format!("after {what}, the good connection failed: {s}")))?;
    }
    let fresh = ctx.connect(&server.endpoint).await?;
    fresh
        .unary(EchoRequest::new(vec![3u8; 10]), &opts())
        .await?;
    Ok(Some(notes.join("; ")))
}
