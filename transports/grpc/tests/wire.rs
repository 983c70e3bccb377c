//! The `grpc` server spoken to by a client that knows nothing of our types: the `h2` crate
//! with hand-built gRPC frames (5-byte prefix + hand-encoded protobuf), checking what a stock
//! gRPC client would see — `:status`, `content-type`, the message bytes, `grpc-status` and
//! `grpc-message` trailers, metadata as headers and trailers. Also, on raw h2 frames, that a
//! backlog of small DATA frames (h2's flood guard) costs neither side its connection.

// Test helpers: a failed unwrap is the test failing, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request};
use tokio::net::TcpStream;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Connection, Echo, EchoRequest, Method,
    Server, ServerConfig, Transport,
};
use wirebench_grpc::Grpc;

const LIMIT: Duration = Duration::from_secs(10);

/// A gRPC message frame: uncompressed flag, big-endian length, the protobuf bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// Protobuf length-delimited field (lengths here stay below 128: one-byte varints).
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 128);
    let mut v = vec![(number << 3) | 2, bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

/// Protobuf varint field (values below 128).
fn varint(number: u8, value: u8) -> Vec<u8> {
    assert!(value < 128);
    vec![number << 3, value]
}

struct Reply {
    headers: HeaderMap,
    messages: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

async fn call(
    client: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    extra: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut req = Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut send) = ready.send_request(req, false).unwrap();
    send.send_data(body, true).unwrap();
    let response = response.await.unwrap();
    let (parts, mut recv) = response.into_parts();
    assert_eq!(parts.status, 200, "gRPC always answers HTTP 200");
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.unwrap();
    // Split the body into gRPC messages.
    let mut messages = Vec::new();
    let mut data = data.freeze();
    while !data.is_empty() {
        assert!(data.len() >= 5, "truncated message prefix");
        assert_eq!(data[0], 0, "uncompressed");
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        messages.push(data.slice(5..5 + len));
        data = data.slice(5 + len..);
    }
    Reply {
        headers: parts.headers,
        messages,
        trailers,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `grpc-status` from the trailers, or from the headers of a trailers-only response.
fn status(r: &Reply) -> (String, String) {
    let from = r.trailers.as_ref().unwrap_or(&r.headers);
    let get = |k: &str| {
        from.get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn plain_h2_client_speaks_to_the_grpc_server() {
    let server = Grpc
        .serve(&ServerConfig::loopback(), Arc::new(Echo::default()))
        .await
        .unwrap();
    let tcp = TcpStream::connect(server.endpoint()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(LIMIT, async {
        // Unary echo: EchoRequest { payload: "hello" } comes back as EchoResponse { payload }.
        let r = call(
            &mut client,
            "/wirebench.echo.v1.Echo/Unary",
            &[("x-initial-who", "raw h2"), ("x-trailing-blob-bin", "AAEC")],
            frame(&field(1, b"hello")),
        )
        .await;
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/grpc",
            "content-type"
        );
        assert_eq!(r.headers.get("x-initial-who").unwrap(), "raw h2");
        assert_eq!(r.messages, vec![Bytes::from(field(1, b"hello"))]);
        assert_eq!(status(&r), ("0".into(), String::new()));
        let trailers = r.trailers.as_ref().unwrap();
        // Binary metadata is base64 on the wire, padded or not.
        let blob = trailers
            .get("x-trailing-blob-bin")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(blob == "AAEC" || blob == "AAEC==", "{blob}");

        // A directed failure: directives { fail { code: 5 (NOT_FOUND), message: "nope ✓" } }.
        let fail = [varint(1, 5), field(2, "nope ✓".as_bytes())].concat();
        let request = field(2, &field(6, &fail));
        let r = call(
            &mut client,
            "/wirebench.echo.v1.Echo/Unary",
            &[],
            frame(&request),
        )
        .await;
        assert!(r.messages.is_empty());
        let (code, message) = status(&r);
        assert_eq!(code, "5");
        // grpc-message is percent-encoded UTF-8.
        assert_eq!(percent_decode(&message), "nope ✓");

        // A method the service does not define.
        let r = call(
            &mut client,
            "/wirebench.echo.v1.Echo/Unimplemented",
            &[],
            frame(&field(1, b"x")),
        )
        .await;
        assert_eq!(status(&r).0, "12", "UNIMPLEMENTED");

        // The deadline travels as grpc-timeout: a 2 s sleep under a 100 ms deadline is ended by
        // the server with DEADLINE_EXCEEDED. directives { delay_us: 2_000_000 }.
        let delay = [0x28, 0x80, 0x89, 0x7a]; // field 5, varint 2_000_000
        let request = field(2, &delay);
        let r = call(
            &mut client,
            "/wirebench.echo.v1.Echo/Unary",
            &[("grpc-timeout", "100m")],
            frame(&request),
        )
        .await;
        assert_eq!(status(&r).0, "4", "DEADLINE_EXCEEDED");

        // Client stream: three messages, the server counts them.
        let mut body = BytesMut::new();
        for p in [&b"a"[..], b"bb", b"ccc"] {
            body.extend_from_slice(&frame(&field(1, p)));
        }
        let r = call(
            &mut client,
            "/wirebench.echo.v1.Echo/ClientStream",
            &[],
            body.freeze(),
        )
        .await;
        // EchoResponse { received_messages: 3, received_bytes: 6 }.
        assert_eq!(
            r.messages,
            vec![Bytes::from([varint(2, 3), varint(3, 6)].concat())]
        );
        assert_eq!(status(&r).0, "0");
    })
    .await
    .expect("timed out");
    server.shutdown().await;
}

/// Protobuf varint field of any value.
fn varint_field(number: u8, mut value: u64) -> Vec<u8> {
    let mut v = vec![number << 3];
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            v.push(low);
            return v;
        }
        v.push(low | 0x80);
    }
}

/// Small messages, one DATA frame each: what a gRPC client streaming small messages sends.
const SMALL_FRAMES: u64 = 20_000;

/// h2 (0.4.16 on) closes a connection whose unread small DATA frames cost more than a budget
/// (`GOAWAY(ENHANCE_YOUR_CALM, "too_many_data_frames")`), within flow control. A bidi handler
/// that stops reading for a moment must not cost its connection: 20,000 one-message frames
/// queue while the first request's 300 ms delay holds the handler, then all come back in order.
/// (At hyper's 1 MiB connection window the budget held ~2,100 such frames.)
#[tokio::test]
async fn a_backlog_of_small_request_frames_keeps_the_connection() {
    let server = Grpc
        .serve(&ServerConfig::loopback(), Arc::new(Echo::default()))
        .await
        .unwrap();
    let tcp = TcpStream::connect(server.endpoint()).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(16 << 20)
        .initial_connection_window_size(64 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(LIMIT, async {
        let req = Request::post("http://localhost/wirebench.echo.v1.Echo/Bidi")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut ready = client.ready().await.unwrap();
        let (response, mut send) = ready.send_request(req, false).unwrap();
        // directives { delay_us: 300_000 }: the handler sleeps before reading on.
        send.send_data(frame(&field(2, &varint_field(5, 300_000))), false)
            .unwrap();
        for seq in 0..SMALL_FRAMES {
            send.send_data(frame(&field(1, &seq.to_le_bytes())), false)
                .unwrap();
        }
        send.send_data(Bytes::new(), true).unwrap();
        let (parts, mut recv) = response.await.unwrap().into_parts();
        assert_eq!(parts.status, 200);
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("the response failed: {e}"));
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.unwrap().unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        // The delayed request's empty echo (an empty message), then every number in order.
        let mut expected: Vec<u8> = frame(&[]).to_vec();
        for seq in 0..SMALL_FRAMES {
            expected.extend_from_slice(&frame(&field(1, &seq.to_le_bytes())));
        }
        assert!(
            data[..] == expected[..],
            "responses differ from the requests"
        );
    })
    .await
    .expect("timed out");
    server.shutdown().await;
}

/// The client side of the same guard: a server streams 20,000 small messages, one DATA frame
/// each, to a caller that reads only after 300 ms; every message arrives. (At h2's default
/// budget for the client's 5 MiB window, about 10,800 such frames closed the connection.)
#[tokio::test]
async fn a_backlog_of_small_response_frames_keeps_the_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        tokio::spawn(async move {
            // Keep driving the connection (flow control, the client's reads).
            while let Some(Ok(_)) = conn.accept().await {}
        });
        assert_eq!(request.uri().path(), "/wirebench.echo.v1.Echo/ServerStream");
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut send = respond.send_response(head, false).unwrap();
        for seq in 0..SMALL_FRAMES {
            send.send_data(frame(&field(1, &seq.to_le_bytes())), false)
                .unwrap();
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        send.send_trailers(trailers).unwrap();
        // Hold the stream until the client has read it all.
        std::future::poll_fn(|cx| send.poll_reset(cx)).await.ok();
    });
    tokio::time::timeout(LIMIT, async {
        let c = Grpc
            .connect(&ClientConfig::default(), &endpoint)
            .await
            .unwrap();
        let (mut s, mut r) = c
            .open(Method::ServerStream, &CallOptions::default())
            .await
            .unwrap();
        s.send(EchoRequest::new(Vec::new())).await.unwrap();
        s.close_send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut expected = 0u64;
        while let Some(m) = r
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {expected} messages: {e}"))
        {
            assert_eq!(m.payload[..], expected.to_le_bytes(), "message {expected}");
            expected += 1;
        }
        assert_eq!(expected, SMALL_FRAMES);
    })
    .await
    .expect("timed out");
    server.abort();
}
