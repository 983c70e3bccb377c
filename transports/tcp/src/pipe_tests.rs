//! The tcp protocol — codec, client and server — run over in-memory pipes (`tokio::io::duplex`):
//! no port, no TLS, no kernel; a protocol bug shows up here in milliseconds. Small pipe buffers
//! cut every frame at arbitrary points, so both readers meet partial frames all the time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Code, Connection, Directives, Echo,
    EchoRequest, FailWith, Metadata, Method, Status,
};
use wirebench_wire::codec::{
    Decoded, Decoder, FLAG_END_STREAM, Frame, OpenHeader, OutHeader, PREFACE, RequestHeader,
    WriteBatch,
};

use crate::TcpConnection;
use crate::server::{ConnInfo, Signals, serve_connection};

/// Every test's bound: a hang is a failure, never a stuck test run.
const LIMIT: Duration = Duration::from_secs(10);

/// One server connection over an in-memory pipe.
struct ServerEnd {
    echo: Arc<Echo>,
    signals: Signals,
    task: JoinHandle<()>,
}

/// Serves one connection on one end of a pipe of `buffer` bytes; returns the other end.
fn serve(buffer: usize) -> (DuplexStream, ServerEnd) {
    let (client, server) = tokio::io::duplex(buffer);
    let echo = Arc::new(Echo::default());
    let signals = Signals::new();
    let info = ConnInfo {
        peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
        identity: None,
    };
    let (rd, wr) = tokio::io::split(server);
    let task = tokio::spawn(serve_connection(
        rd,
        wr,
        info,
        echo.clone(),
        signals.clone(),
        TaskTracker::new(),
    ));
    (
        client,
        ServerEnd {
            echo,
            signals,
            task,
        },
    )
}

/// A client connection to a server, both over one pipe of `buffer` bytes.
fn connected(buffer: usize) -> (TcpConnection, ServerEnd) {
    let (pipe, server) = serve(buffer);
    let (rd, wr) = tokio::io::split(pipe);
    (
        TcpConnection::over(rd, wr, &ClientConfig::default()),
        server,
    )
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("the test finished within its limit")
}

fn no_options() -> CallOptions {
    CallOptions::default()
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Every method, with metadata both ways, over pipes from 1 byte (every frame split at every
/// byte) to 64 KiB.
#[tokio::test]
async fn every_method_round_trips_over_any_pipe_size() {
    for buffer in [1, 7, 4096, 65536] {
        bounded(every_method(buffer)).await;
    }
}

async fn every_method(buffer: usize) {
    let (conn, _server) = connected(buffer);
    let ctx = format!("pipe of {buffer} bytes");

    // Unary, with request metadata echoed back as headers and trailers.
    let mut options = no_options();
    options.metadata.append_ascii("x-initial-a", "one").unwrap();
    options
        .metadata
        .append_binary("x-trailing-b-bin", Bytes::from_static(&[0, 255, 7]))
        .unwrap();
    let payload = pattern(3000, 1);
    let reply = conn
        .unary(EchoRequest::new(payload.clone()), &options)
        .await
        .unwrap_or_else(|s| panic!("{ctx}: unary failed: {s:?}"));
    assert_eq!(reply.message.payload, payload, "{ctx}");
    assert_eq!(reply.headers.get_ascii("x-initial-a"), Some("one"), "{ctx}");
    assert_eq!(
        reply
            .trailers
            .get("x-trailing-b-bin")
            .map(|v| v.as_bytes().to_vec()),
        Some(vec![0, 255, 7]),
        "{ctx}"
    );

    // Server stream: three responses of 100 bytes.
    let (mut tx, mut rx) = conn
        .open(Method::ServerStream, &no_options())
        .await
        .unwrap();
    let directives = Directives {
        response_count: Some(3),
        response_size: Some(100),
        ..Directives::default()
    };
    tx.send(EchoRequest::new(pattern(10, 2)).with_directives(directives))
        .await
        .unwrap();
    tx.close_send().await.unwrap();
    let mut sizes = Vec::new();
    while let Some(r) = rx.recv().await.unwrap() {
        sizes.push(r.payload.len());
    }
    assert_eq!(sizes, [100, 100, 100], "{ctx}: server stream");

    // Client stream: four requests, one response counting them.
    let (mut tx, mut rx) = conn
        .open(Method::ClientStream, &no_options())
        .await
        .unwrap();
    for i in 0..4u8 {
        tx.send(EchoRequest::new(pattern(50, i))).await.unwrap();
    }
    tx.close_send().await.unwrap();
    let r = rx.recv().await.unwrap().expect("a response");
    assert_eq!((r.received_messages, r.received_bytes), (4, 200), "{ctx}");
    assert_eq!(rx.recv().await.unwrap(), None, "{ctx}: one response only");

    // Bidi: each request answered in turn.
    let (mut tx, mut rx) = conn.open(Method::Bidi, &no_options()).await.unwrap();
    for i in 0..5u8 {
        let p = pattern(20 + usize::from(i), i);
        tx.send(EchoRequest::new(p.clone())).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().expect("an answer").payload, p);
    }
    tx.close_send().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), None, "{ctx}: bidi ends");

    // A method the server does not implement.
    let (mut tx, mut rx) = conn
        .open(Method::Unimplemented, &no_options())
        .await
        .unwrap();
    let _ = tx.send(EchoRequest::new(Bytes::new())).await;
    let _ = tx.close_send().await;
    let status = rx.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{ctx}: {status:?}");
}

/// A failure's code, its message (byte-exact, not ASCII) and its trailers survive the wire.
#[tokio::test]
async fn a_failure_keeps_its_code_message_and_trailers() {
    bounded(async {
        let (conn, _server) = connected(64);
        let mut options = no_options();
        options
            .metadata
            .append_ascii("x-trailing-why", "because")
            .unwrap();
        let directives = Directives {
            fail: Some(FailWith {
                code: Code::FailedPrecondition,
                message: "état: ✗ \n not ready".into(),
                after: 0,
            }),
            ..Directives::default()
        };
        let status = conn
            .unary(
                EchoRequest::new(pattern(5, 0)).with_directives(directives),
                &options,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "état: ✗ \n not ready");
        assert_eq!(
            status.metadata().get_ascii("x-trailing-why"),
            Some("because")
        );
    })
    .await;
}

/// Hundreds of calls at once on one pipe each get their own answer back (stream ids never
/// cross), through a pipe small enough that the frames interleave in pieces.
#[tokio::test]
async fn concurrent_calls_multiplex_without_crossing() {
    bounded(async {
        let (conn, _server) = connected(512);
        let conn = Arc::new(conn);
        let calls = (0..300u32).map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let p = pattern(1 + (i as usize * 13) % 2000, i as u8);
                let reply = conn
                    .unary(EchoRequest::new(p.clone()), &no_options())
                    .await
                    .unwrap();
                assert_eq!(reply.message.payload, p, "call {i}");
            })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.unwrap();
        }
    })
    .await;
}

/// Dropping a stream's receiver sends CANCEL: the server's handler sees it.
#[tokio::test]
async fn a_dropped_call_is_cancelled_at_the_server() {
    bounded(async {
        let (conn, server) = connected(4096);
        let (mut tx, mut rx) = conn
            .open(Method::ServerStream, &no_options())
            .await
            .unwrap();
        let slow = Directives {
            response_count: Some(1000),
            response_interval: Duration::from_millis(20),
            ..Directives::default()
        };
        tx.send(EchoRequest::new(pattern(8, 0)).with_directives(slow))
            .await
            .unwrap();
        tx.close_send().await.unwrap();
        assert!(rx.recv().await.unwrap().is_some());
        drop(rx);
        let (seen, held) = server
            .echo
            .wait_observed(Duration::from_secs(5), |o| o.cancelled == 1)
            .await;
        assert!(held, "the server saw no cancel: {seen:?}");
        // The connection stays usable.
        let reply = conn
            .unary(EchoRequest::new(pattern(4, 9)), &no_options())
            .await
            .unwrap();
        assert_eq!(reply.message.payload, pattern(4, 9));
    })
    .await;
}

/// A deadline travels in OPEN and the server ends the call when it passes.
#[tokio::test]
async fn a_deadline_is_enforced_by_the_server() {
    bounded(async {
        let (conn, server) = connected(4096);
        let sleepy = Directives {
            delay: Duration::from_secs(30),
            ..Directives::default()
        };
        let status = conn
            .unary(
                EchoRequest::new(pattern(4, 0)).with_directives(sleepy),
                &CallOptions::with_timeout(Duration::from_millis(50)),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        let (seen, held) = server
            .echo
            .wait_observed(Duration::from_secs(5), |o| o.deadline_exceeded == 1)
            .await;
        assert!(held, "{seen:?}");
    })
    .await;
}

/// Draining: the call in flight finishes, the next one is refused as UNAVAILABLE (the client
/// dials again elsewhere), and the connection then ends.
#[tokio::test]
async fn draining_finishes_the_call_in_flight_and_refuses_new_ones() {
    bounded(async {
        let (conn, server) = connected(4096);
        let conn = Arc::new(conn);
        let slow = Directives {
            delay: Duration::from_millis(200),
            ..Directives::default()
        };
        let in_flight = {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.unary(
                    EchoRequest::new(pattern(16, 3)).with_directives(slow),
                    &no_options(),
                )
                .await
            })
        };
        // Let the OPEN reach the server before the drain starts.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.signals.draining.cancel();
        let reply = in_flight
            .await
            .unwrap()
            .expect("the call in flight finishes");
        assert_eq!(reply.message.payload, pattern(16, 3));
        let refused = conn
            .unary(EchoRequest::new(pattern(1, 0)), &no_options())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        server.task.await.unwrap();
    })
    .await;
}

/// Stopping the server at once fails the client's calls in flight with UNAVAILABLE.
#[tokio::test]
async fn a_server_stop_fails_calls_in_flight_unavailable() {
    bounded(async {
        let (conn, server) = connected(4096);
        let conn = Arc::new(conn);
        let sleepy = Directives {
            delay: Duration::from_secs(30),
            ..Directives::default()
        };
        let in_flight = {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.unary(
                    EchoRequest::new(pattern(4, 0)).with_directives(sleepy),
                    &no_options(),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.signals.now.cancel();
        let status = in_flight.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        server.task.await.unwrap();
    })
    .await;
}

/// What a raw client gets back from the server after sending `bytes` (then closing its
/// writing half): the decoded frames, until the server closes.
async fn server_answers(bytes: &[u8]) -> Vec<String> {
    let (pipe, server) = serve(1024);
    let (mut rd, mut wr) = tokio::io::split(pipe);
    wr.write_all(bytes).await.unwrap();
    wr.shutdown().await.unwrap();
    let mut got = Vec::new();
    rd.read_to_end(&mut got).await.unwrap();
    server.task.await.unwrap();
    let mut buf = BytesMut::from(&got[..]);
    let mut decoder = Decoder::frames_only(1 << 20);
    let mut frames = Vec::new();
    while let Ok(Decoded::Frame(f)) = decoder.decode(&mut buf) {
        frames.push(match f {
            Frame::GoAway(h) => format!("GOAWAY {:?}", h.status()),
            Frame::Status(id, h) => format!("STATUS {id} {:?}", h.status().code()),
            Frame::Headers(id, _) => format!("HEADERS {id}"),
            Frame::Response { stream_id, .. } => format!("RESPONSE {stream_id}"),
            other => format!("client-only frame {other:?}"),
        });
    }
    assert!(buf.is_empty(), "the server's bytes end on a frame boundary");
    frames
}

fn frames(list: &[(u32, u8, OutHeader<'_>, Bytes)]) -> Vec<u8> {
    let mut batch = WriteBatch::new();
    batch.push_raw(&PREFACE);
    for (id, flags, header, payload) in list {
        batch.push(*id, *flags, *header, payload).unwrap();
    }
    batch.to_vec()
}

fn goaway_naming(frames: &[String], what: &str) {
    let last = frames.last().expect("the server answered");
    assert!(
        last.starts_with("GOAWAY") && last.contains("Internal") && last.contains(what),
        "expected a GOAWAY naming {what:?}, got {frames:?}"
    );
}

#[tokio::test]
async fn a_wrong_preface_is_refused_with_goaway() {
    let answers = bounded(server_answers(b"GET / HTTP/1.1\r\n\r\n")).await;
    goaway_naming(&answers, "preface");
}

#[tokio::test]
async fn garbage_after_the_preface_is_refused_with_goaway() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    let answers = bounded(server_answers(&bytes)).await;
    goaway_naming(&answers, "protocol error");
}

#[tokio::test]
async fn a_frame_cut_short_is_named_truncated() {
    let open = OpenHeader::new(Method::Unary.as_u8(), None, &Metadata::new());
    let whole = frames(&[(1, 0, OutHeader::Open(&open), Bytes::new())]);
    let cut = &whole[..whole.len() - 3];
    let answers = bounded(server_answers(cut)).await;
    goaway_naming(&answers, "in the middle of a frame");
}

#[tokio::test]
async fn a_stream_opened_twice_is_a_violation() {
    let open = OpenHeader::new(Method::Bidi.as_u8(), None, &Metadata::new());
    let bytes = frames(&[
        (1, 0, OutHeader::Open(&open), Bytes::new()),
        (1, 0, OutHeader::Open(&open), Bytes::new()),
    ]);
    let answers = bounded(server_answers(&bytes)).await;
    goaway_naming(&answers, "opened twice");
}

#[tokio::test]
async fn a_whole_unary_call_from_raw_frames_is_answered() {
    let open = OpenHeader::new(Method::Unary.as_u8(), None, &Metadata::new());
    let request = RequestHeader::from(&Directives::default());
    let bytes = frames(&[
        (3, 0, OutHeader::Open(&open), Bytes::new()),
        (
            3,
            FLAG_END_STREAM,
            OutHeader::Message(&request),
            Bytes::from_static(b"hello"),
        ),
    ]);
    let answers = bounded(server_answers(&bytes)).await;
    assert_eq!(answers, ["RESPONSE 3", "STATUS 3 Ok"], "{answers:?}");
}

/// The client side of garbage: a "server" that answers with bytes that are not frames fails
/// the call with INTERNAL naming the protocol error, and later calls fail at once.
#[tokio::test]
async fn garbage_from_the_server_fails_calls_with_a_protocol_error() {
    bounded(async {
        let (pipe, mut fake) = tokio::io::duplex(1024);
        let (rd, wr) = tokio::io::split(pipe);
        let conn = TcpConnection::over(rd, wr, &ClientConfig::default());
        let options = no_options();
        let call = conn.unary(EchoRequest::new(pattern(4, 0)), &options);
        let answer = async {
            let mut preface = [0u8; PREFACE.len()];
            fake.read_exact(&mut preface).await.unwrap();
            assert_eq!(preface, PREFACE);
            fake.write_all(&[0x5a; 40]).await.unwrap();
        };
        let (status, ()) = tokio::join!(call, answer);
        let status: Status = status.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("protocol error"), "{status:?}");
        let again = conn
            .unary(EchoRequest::new(pattern(4, 0)), &no_options())
            .await
            .unwrap_err();
        assert_ne!(again.code(), Code::Ok);
    })
    .await;
}
