//! Status codes and messages, metadata, and the message size limit.

use bytes::Bytes;
use wirebench_core::echo::{ECHO_INITIAL_PREFIX, ECHO_TRAILING_PREFIX};
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, Capability, ClientConfig, Code, Connection, Directives,
    EchoConfig, EchoRequest, FailWith, Metadata, Method,
};

use super::{case, drain, entries_with_prefix, expect_code, opts};
use crate::conformance::{Case, CaseResult, Ctx, Failure};
use crate::ensure;
use wirebench_core::Transport;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            status_roundtrip,
            "status",
            &[Capability::Unary],
            "each of the 16 error codes arrives with its message"
        ),
        case!(
            special_status_message,
            "status",
            &[Capability::Unary],
            "a status message with whitespace, BMP and non-BMP characters arrives byte-exact"
        ),
        case!(
            error_after_responses,
            "status",
            &[Capability::ServerStream],
            "a stream failing after k responses delivers exactly k, then the status"
        ),
        case!(
            unimplemented_method,
            "status",
            &[Capability::Unary],
            "an unknown method fails with UNIMPLEMENTED and the connection stays usable"
        ),
        case!(
            custom_metadata,
            "metadata",
            &[Capability::AsciiMetadata, Capability::BinaryMetadata],
            "ASCII and binary metadata, duplicate keys, initial and trailing, echoed exactly"
        ),
        case!(
            message_size_limit,
            "limits",
            &[Capability::MaxMessageSize],
            "a message at the limit passes, one byte over fails with RESOURCE_EXHAUSTED, and the \
             connection stays usable (both directions)"
        ),
    ]
}

fn failing(code: Code, message: &str, after: u32) -> Directives {
    Directives {
        fail: Some(FailWith {
            code,
            message: message.to_owned(),
            after,
        }),
        ..Default::default()
    }
}

async fn status_roundtrip<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    for code in Code::ALL.into_iter().skip(1) {
        let message = format!("status {} ({})", code.as_str(), code.as_u32());
        let request = EchoRequest::new(Vec::new()).with_directives(failing(code, &message, 0));
        let s = expect_code(code.as_str(), c.unary(request, &opts()).await, code)?;
        ensure!(
            s.message() == message,
            "{code}: message {:?}, expected {message:?}",
            s.message()
        );
    }
    // The connection survives sixteen failed calls.
    c.unary(EchoRequest::new(vec![1u8]), &opts()).await?;
    Ok(None)
}

async fn special_status_message<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    // gRPC interop's special_status_message text.
    const TEXT: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let request = EchoRequest::new(Vec::new()).with_directives(failing(Code::Unknown, TEXT, 0));
    let s = expect_code("UNKNOWN", c.unary(request, &opts()).await, Code::Unknown)?;
    ensure!(
        s.message().as_bytes() == TEXT.as_bytes(),
        "message {:?}, expected {TEXT:?}",
        s.message()
    );
    Ok(None)
}

async fn error_after_responses<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::ServerStream, &opts()).await?;
    let d = Directives {
        response_count: Some(5),
        response_size: Some(100),
        ..failing(Code::Aborted, "aborted after 2", 2)
    };
    s.send(EchoRequest::new(Vec::new()).with_directives(d))
        .await?;
    s.close_send().await?;
    let (got, end) = drain(&mut r).await;
    let status = expect_code("server stream", end, Code::Aborted)?;
    ensure!(
        got.len() == 2,
        "{} responses before the error, expected 2",
        got.len()
    );
    ensure!(
        status.message() == "aborted after 2",
        "message {:?}",
        status.message()
    );
    if ctx.transport_caps().supports(Capability::Bidi) {
        let (mut s, mut r) = c.open(Method::Bidi, &opts()).await?;
        let d = failing(Code::DataLoss, "lost", 1);
        s.send(EchoRequest::new(vec![1u8; 10]).with_directives(d))
            .await?;
        let (got, end) = drain(&mut r).await;
        expect_code("bidi", end, Code::DataLoss)?;
        ensure!(
            got.len() == 1,
            "bidi: {} responses before the error, expected 1",
            got.len()
        );
    }
    Ok(None)
}

async fn unimplemented_method<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let (mut s, mut r) = c.open(Method::Unimplemented, &opts()).await?;
    // The send may already fail if the transport learnt the outcome; the status is what counts.
    let _ = s.send(EchoRequest::new(vec![1u8])).await;
    let _ = s.close_send().await;
    let (got, end) = drain(&mut r).await;
    expect_code("unimplemented method", end, Code::Unimplemented)?;
    ensure!(
        got.is_empty(),
        "{} responses from an unimplemented method",
        got.len()
    );
    c.unary(EchoRequest::new(vec![1u8]), &opts()).await?;
    Ok(None)
}

fn request_metadata() -> Result<Metadata, Failure> {
    let mut md = Metadata::new();
    let bad = |e: wirebench_core::metadata::MetadataError| Failure(e.to_string());
    md.append_ascii(format!("{ECHO_INITIAL_PREFIX}ascii"), "value 1")
        .map_err(bad)?;
    md.append_ascii(format!("{ECHO_INITIAL_PREFIX}ascii"), "value 2")
        .map_err(bad)?;
    md.append_binary(
        format!("{ECHO_INITIAL_PREFIX}blob-bin"),
        Bytes::from_static(&[0x00, 0x0a, 0x0b, 0xff, 0xfe, 0x80]),
    )
    .map_err(bad)?;
    md.append_ascii(format!("{ECHO_TRAILING_PREFIX}ascii"), "trailing ~!@#")
        .map_err(bad)?;
    md.append_binary(
        format!("{ECHO_TRAILING_PREFIX}blob-bin"),
        Bytes::from_static(&[0xab, 0xab, 0x00, 0xab]),
    )
    .map_err(bad)?;
    md.append_binary(
        format!("{ECHO_TRAILING_PREFIX}blob-bin"),
        Bytes::from_static(&[0x01]),
    )
    .map_err(bad)?;
    Ok(md)
}

fn check_echo(
    what: &str,
    sent: &Metadata,
    headers: &Metadata,
    trailers: &Metadata,
) -> Result<(), Failure> {
    let want_initial = entries_with_prefix(sent, ECHO_INITIAL_PREFIX);
    let want_trailing = entries_with_prefix(sent, ECHO_TRAILING_PREFIX);
    let got_initial = entries_with_prefix(headers, ECHO_INITIAL_PREFIX);
    let got_trailing = entries_with_prefix(trailers, ECHO_TRAILING_PREFIX);
    ensure!(
        got_initial == want_initial,
        "{what}: initial metadata {got_initial:?}, expected {want_initial:?}"
    );
    ensure!(
        got_trailing == want_trailing,
        "{what}: trailing metadata {got_trailing:?}, expected {want_trailing:?}"
    );
    ensure!(
        entries_with_prefix(headers, ECHO_TRAILING_PREFIX).is_empty(),
        "{what}: trailing metadata arrived in the headers"
    );
    ensure!(
        entries_with_prefix(trailers, ECHO_INITIAL_PREFIX).is_empty(),
        "{what}: initial metadata arrived in the trailers"
    );
    Ok(())
}

async fn custom_metadata<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let server = ctx.server().await?;
    let c = ctx.connect(&server.endpoint).await?;
    let md = request_metadata()?;
    let o = CallOptions {
        metadata: md.clone(),
        ..CallOptions::default()
    };
    let r = c.unary(EchoRequest::new(vec![1u8; 10]), &o).await?;
    check_echo("unary", &md, &r.headers, &r.trailers)?;
    if ctx.transport_caps().supports(Capability::Bidi) {
        let (mut s, mut r) = c.open(Method::Bidi, &o).await?;
        s.send(EchoRequest::new(vec![2u8; 10])).await?;
        let headers = r.headers().await?;
        let _ = r.recv().await?;
        s.close_send().await?;
        let (_, end) = drain(&mut r).await;
        end?;
        check_echo("bidi", &md, &headers, r.trailers())?;
    }
    Ok(None)
}

async fn message_size_limit<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const LIMIT: usize = 64 * 1024;
    let server = ctx
        .server_with(EchoConfig {
            max_message_size: LIMIT,
            ..ctx.env.echo.clone()
        })
        .await?;
    let c = ctx
        .connect_with(
            &server.endpoint,
            ClientConfig {
                max_message_size: LIMIT,
                ..ctx.env.client.clone()
            },
        )
        .await?;
    // Requests: at the limit, then one over, then the connection again.
    let r = c.unary(EchoRequest::new(vec![7u8; LIMIT]), &opts()).await?;
    ensure!(
        r.message.payload.len() == LIMIT,
        "echo of the limit-sized request lost bytes"
    );
    expect_code(
        "request of limit+1",
        c.unary(EchoRequest::new(vec![7u8; LIMIT + 1]), &opts())
            .await,
        Code::ResourceExhausted,
    )?;
    c.unary(EchoRequest::new(vec![1u8; 100]), &opts()).await?;
    // Responses: the client's limit, enforced the same way.
    let sized = |n: usize| {
        EchoRequest::new(Vec::new()).with_directives(Directives {
            response_size: Some(n as u32),
            ..Default::default()
        })
    };
    let r = c.unary(sized(LIMIT), &opts()).await?;
    ensure!(
        r.message.payload.len() == LIMIT,
        "limit-sized response lost bytes"
    );
    expect_code(
        "response of limit+1",
        c.unary(sized(LIMIT + 1), &opts()).await,
        Code::ResourceExhausted,
    )?;
    c.unary(EchoRequest::new(vec![1u8; 100]), &opts()).await?;
    Ok(Some(format!("limit {LIMIT} B")))
}
