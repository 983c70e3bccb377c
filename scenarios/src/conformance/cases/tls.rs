//! Security and admission: TLS 1.3 failures that must be fast and clear, mutual TLS identity,
//! bearer tokens, and the per-connection stream limit.
//!
//! Every failure case also runs its positive control on the same server (the right CA, the
//! right name, the client certificate, the token), so a case cannot pass because nothing works.

use std::time::{Duration, Instant};

use futures::future::join_all;
use wirebench_core::echo::{AUTHORIZATION_KEY, PEER_IDENTITY_KEY};
use wirebench_core::tls::TlsMode;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, Capability, ClientConfig, Code, Connection, Directives,
    EchoConfig, EchoRequest, Metadata, Method, Transport,
};
use wirebench_tls::TlsMaterial;

use super::{OBSERVE_WITHIN, case, drain, expect_code, opts};
use crate::conformance::{Case, CaseResult, Ctx, Failure, TestServer};
use crate::ensure;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            tls_plaintext_to_tls,
            "tls",
            &[Capability::Tls, Capability::Plaintext, Capability::Unary],
            "a plaintext client meeting a TLS server fails fast with a clear error, no hang"
        ),
        case!(
            tls_wrong_ca,
            "tls",
            &[Capability::Tls, Capability::Unary],
            "a server certificate from an untrusted CA is refused"
        ),
        case!(
            tls_hostname_mismatch,
            "tls",
            &[Capability::Tls, Capability::Unary],
            "a server certificate not valid for the expected name is refused"
        ),
        case!(
            mtls_identity,
            "tls",
            &[Capability::MutualTls, Capability::Unary],
            "under mutual TLS the server's handler sees the client certificate's identity"
        ),
        case!(
            mtls_missing_client_cert,
            "tls",
            &[Capability::MutualTls, Capability::Unary],
            "a client without a certificate is refused by a mutual-TLS server"
        ),
        case!(
            token_missing,
            "auth",
            &[Capability::TokenAuth, Capability::Unary],
            "a call without a bearer token fails UNAUTHENTICATED, the connection stays usable"
        ),
        case!(
            token_wrong,
            "auth",
            &[Capability::TokenAuth, Capability::Unary],
            "a call with a wrong bearer token fails UNAUTHENTICATED, the connection stays usable"
        ),
        case!(
            max_concurrent_streams,
            "limits",
            &[Capability::MaxConcurrentStreams, Capability::Unary],
            "with a limit of 1 stream per connection, 10 concurrent calls all succeed, one at a time"
        ),
    ]
}

/// How long a refused connection may take to fail: a hang is a failure.
const FAIL_FAST: Duration = Duration::from_secs(5);

fn small() -> EchoRequest {
    EchoRequest::new(vec![0x42u8; 16])
}

/// A server over TLS (`mode`) from `material`, built on the environment's server template.
async fn tls_server<T: Transport + Clone>(
    ctx: &Ctx<T>,
    material: &TlsMaterial,
    mode: TlsMode,
) -> Result<TestServer<T::Server>, Failure> {
    let mut config = ctx.server_config();
    config.tls = material.server(mode);
    ctx.serve(config, ctx.env.echo.clone()).await
}

fn client_with<T: Transport + Clone>(
    ctx: &Ctx<T>,
    tls: Option<wirebench_core::tls::ClientTls>,
) -> ClientConfig {
    ClientConfig {
        tls,
        ..ctx.env.client.clone()
    }
}

/// Connects and makes one call; `Ok(note)` when the attempt was refused (at connect or on the
/// call) within [`FAIL_FAST`], a failure when it succeeded or hung.
async fn expect_refused<T: Transport + Clone>(
    ctx: &Ctx<T>,
    what: &str,
    endpoint: &str,
    config: ClientConfig,
) -> Result<String, Failure> {
    let started = Instant::now();
    let attempt = tokio::time::timeout(FAIL_FAST, async {
        match Transport::connect(&ctx.transport, &config, endpoint).await {
            Err(e) => Ok(format!("refused at connect: {e}")),
            Ok(c) => match c.unary(small(), &opts()).await {
                Ok(_) => Err(Failure(format!("{what}: the call succeeded"))),
                Err(s) => Ok(format!("refused on the first call: {s}")),
            },
        }
    })
    .await
    .map_err(|_| {
        Failure(format!(
            "{what}: neither refused nor answered within {FAIL_FAST:?}"
        ))
    })??;
    Ok(format!("{attempt} ({:?})", started.elapsed()))
}

/// The positive control: the same server answers a correctly configured client.
async fn expect_served<T: Transport + Clone>(
    ctx: &Ctx<T>,
    what: &str,
    endpoint: &str,
    config: ClientConfig,
) -> Result<T::Connection, Failure> {
    let c = ctx
        .transport
        .connect(&config, endpoint)
        .await
        .map_err(|e| Failure(format!("control ({what}): connect failed: {e}")))?;
    c.unary(small(), &opts())
        .await
        .map_err(|s| Failure(format!("control ({what}): call failed: {s}")))?;
    Ok(c)
}

async fn tls_plaintext_to_tls<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let m = ctx.tls_material()?;
    let server = tls_server(&ctx, &m, TlsMode::Tls).await?;
    let plain = client_with(&ctx, None);
    let started = Instant::now();
    let outcome = tokio::time::timeout(FAIL_FAST, async {
        match ctx.transport.connect(&plain, &server.endpoint).await {
            Err(e) => Ok(format!("refused at connect: {e}")),
            Ok(c) => match c.unary(small(), &opts()).await {
                Ok(_) => Err(Failure("a plaintext call to a TLS server succeeded".into())),
                // The server drops the connection at its first non-TLS byte: the call's
                // connection is gone, which is UNAVAILABLE.
                Err(s) if s.code() == Code::Unavailable => Ok(format!("first call failed: {s}")),
                Err(s) => Err(Failure(format!(
                    "first call failed with {s}, expected UNAVAILABLE"
                ))),
            },
        }
    })
    .await
    .map_err(|_| Failure(format!("the plaintext attempt hung for {FAIL_FAST:?}")))??;
    let elapsed = started.elapsed();
    expect_served(
        &ctx,
        "TLS client",
        &server.endpoint,
        client_with(&ctx, m.client(TlsMode::Tls)),
    )
    .await?;
    Ok(Some(format!("{outcome} after {elapsed:?}")))
}

async fn tls_wrong_ca<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let m = ctx.tls_material()?;
    let other = TlsMaterial::generate().map_err(|e| Failure(e.to_string()))?;
    let server = tls_server(&ctx, &m, TlsMode::Tls).await?;
    let note = expect_refused(
        &ctx,
        "a client trusting another CA",
        &server.endpoint,
        client_with(&ctx, other.client(TlsMode::Tls)),
    )
    .await?;
    expect_served(
        &ctx,
        "the right CA",
        &server.endpoint,
        client_with(&ctx, m.client(TlsMode::Tls)),
    )
    .await?;
    Ok(Some(note))
}

async fn tls_hostname_mismatch<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let m = ctx.tls_material()?;
    let server = tls_server(&ctx, &m, TlsMode::Tls).await?;
    let wrong = m
        .client(TlsMode::Tls)
        .map(|t| t.with_server_name("not-this-server.invalid"));
    let note = expect_refused(
        &ctx,
        "a client expecting another name",
        &server.endpoint,
        client_with(&ctx, wrong),
    )
    .await?;
    expect_served(
        &ctx,
        "the right name",
        &server.endpoint,
        client_with(&ctx, m.client(TlsMode::Tls)),
    )
    .await?;
    Ok(Some(note))
}

async fn mtls_identity<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let m = ctx.tls_material()?;
    let expected = m
        .client_identity()
        .ok_or_else(|| Failure("the TLS material has no client certificate".into()))?;
    let server = tls_server(&ctx, &m, TlsMode::Mutual).await?;
    let c = ctx
        .connect_with(
            &server.endpoint,
            client_with(&ctx, m.client(TlsMode::Mutual)),
        )
        .await?;
    let r = c.unary(small(), &opts()).await?;
    let seen = r.headers.get_ascii(PEER_IDENTITY_KEY);
    ensure!(
        seen == Some(expected.as_str()),
        "unary: the server saw identity {seen:?}, expected {expected:?}"
    );
    if ctx.transport_caps().supports(Capability::Bidi) {
        let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
        s.send(small()).await?;
        let headers = r.headers().await?;
        s.close_send().await?;
        drain(&mut r).await.1?;
        let seen = headers.get_ascii(PEER_IDENTITY_KEY);
        ensure!(
            seen == Some(expected.as_str()),
            "bidi: the server saw identity {seen:?}, expected {expected:?}"
        );
    }
    Ok(Some(format!("identity {expected:?}")))
}

async fn mtls_missing_client_cert<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let m = ctx.tls_material()?;
    let server = tls_server(&ctx, &m, TlsMode::Mutual).await?;
    let note = expect_refused(
        &ctx,
        "a client without a certificate",
        &server.endpoint,
        client_with(&ctx, m.client(TlsMode::Tls)),
    )
    .await?;
    expect_served(
        &ctx,
        "a client with its certificate",
        &server.endpoint,
        client_with(&ctx, m.client(TlsMode::Mutual)),
    )
    .await?;
    Ok(Some(note))
}

const TOKEN: &str = "wirebench-conformance-token";

fn with_authorization(value: Option<&str>) -> Result<CallOptions, Failure> {
    let mut metadata = Metadata::new();
    if let Some(v) = value {
        metadata
            .append_ascii(AUTHORIZATION_KEY, v)
            .map_err(|e| Failure(e.to_string()))?;
    }
    Ok(CallOptions {
        metadata,
        ..CallOptions::default()
    })
}

/// Calls with `bad` credentials must fail UNAUTHENTICATED (unary and, where supported, a
/// stream), the right token must pass on the same connection, and the server must have counted
/// each refusal.
async fn token_case<T: Transport + Clone>(ctx: &Ctx<T>, bad: &[Option<&str>]) -> CaseResult {
    let server = ctx
        .server_with(EchoConfig {
            auth_token: Some(TOKEN.into()),
            ..ctx.env.echo.clone()
        })
        .await?;
    let c = ctx.connect(&server.endpoint).await?;
    let mut refused = 0u64;
    let good = with_authorization(Some(&format!("Bearer {TOKEN}")))?;
    for credentials in bad {
        let o = with_authorization(*credentials)?;
        let what = format!("unary with authorization {credentials:?}");
        expect_code(&what, c.unary(small(), &o).await, Code::Unauthenticated)?;
        refused += 1;
        // The connection stays usable: the right token passes at once.
        c.unary(small(), &good)
            .await
            .map_err(|s| Failure(format!("after {what}, the right token failed: {s}")))?;
        if ctx.transport_caps().supports(Capability::Bidi) {
            let what = format!("bidi with authorization {credentials:?}");
            let (mut s, mut r) = c.open(Method::Bidi, &o).await?;
            // The send may already fail if the transport learnt the outcome.
            let _ = s.send(small()).await;
            let _ = s.close_send().await;
            let (got, end) = drain(&mut r).await;
            expect_code(&what, end, Code::Unauthenticated)?;
            ensure!(got.is_empty(), "{what}: {} responses", got.len());
            refused += 1;
        }
    }
    let (seen, held) = server
        .echo
        .wait_observed(OBSERVE_WITHIN, |o| o.unauthenticated >= refused)
        .await;
    ensure!(
        held,
        "the server counted {} refusals, expected {refused}",
        seen.unauthenticated
    );
    Ok(Some(format!("{refused} calls refused")))
}

async fn token_missing<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    token_case(&ctx, &[None]).await
}

async fn token_wrong<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let wrong = format!("Bearer {TOKEN}-not");
    let basic = format!("Basic {TOKEN}");
    token_case(
        &ctx,
        &[Some(wrong.as_str()), Some(basic.as_str()), Some("Bearer ")],
    )
    .await
}

async fn max_concurrent_streams<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const CALLS: usize = 10;
    const DELAY: Duration = Duration::from_millis(100);
    let mut config = ctx.server_config();
    config.options.set("max_concurrent_streams", "1");
    let server = ctx.serve(config, ctx.env.echo.clone()).await?;
    let c = ctx.connect(&server.endpoint).await?;
    let d = Directives {
        delay: DELAY,
        ..Default::default()
    };
    let started = Instant::now();
    let calls = (0..CALLS).map(|i| {
        let request = EchoRequest::new(vec![i as u8; 8]).with_directives(d.clone());
        let c = &c;
        async move { (i, c.unary(request, &opts()).await) }
    });
    let results = join_all(calls).await;
    let elapsed = started.elapsed();
    for (i, r) in results {
        let r = r.map_err(|s| Failure(format!("call {i} failed: {s} (not queued?)")))?;
        ensure!(
            r.message.payload[..] == [i as u8; 8],
            "call {i}: wrong echo"
        );
    }
    // One at a time, each sleeping DELAY: the batch cannot finish sooner than this unless the
    // server ran calls side by side (a lower bound on behaviour, not a speed check).
    let floor = DELAY * (CALLS as u32 - 1);
    ensure!(
        elapsed >= floor,
        "{CALLS} calls of {DELAY:?} finished in {elapsed:?}: they ran concurrently despite the \
         limit of 1"
    );
    Ok(Some(format!("{CALLS} calls in {elapsed:?}")))
}
