//! The `quic` server spoken to by a bare quinn client following the module docs: the pinned
//! self-signed certificate from the endpoint, ALPN `wirebench-quic/1`, one stream per call
//! carrying the `tcp` frames; garbage on one stream resets only that stream.

// Test helpers: a failed unwrap is the test failing, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use wirebench_core::{
    Directives, Echo, EchoRequest, Metadata, Method, Server, ServerConfig, Transport,
};
use wirebench_quic::{ALPN, Quic, codes};
use wirebench_tls::{ClientTls, sha256_from_hex};
use wirebench_wire::codec::{
    Decoded, Decoder, FLAG_END_STREAM, Frame, OpenHeader, OutHeader, Payload, RequestHeader,
    WriteBatch,
};

const LIMIT: Duration = Duration::from_secs(10);

async fn client(endpoint: &str) -> quinn::Connection {
    let (addr, hex) = endpoint.split_once("#cert-sha256=").unwrap();
    let pin = sha256_from_hex(hex).unwrap();
    let rustls = wirebench_tls::client_config(&ClientTls::pinned(pin), &[ALPN], false).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep.connect(addr.parse().unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// Reads every frame of a stream until FIN, summarised as (kind, payload) pairs.
async fn read_all(recv: &mut quinn::RecvStream) -> Result<Vec<(String, Bytes)>, quinn::ReadError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        buf.extend_from_slice(&chunk.bytes);
    }
    let mut decoder = Decoder::frames_only(1 << 20);
    let mut frames = Vec::new();
    while let Decoded::Frame(f) = decoder.decode(&mut buf).unwrap() {
        frames.push(match f {
            Frame::Headers(..) => ("HEADERS".to_owned(), Bytes::new()),
            Frame::Response {
                payload: Payload::Bytes(p),
                ..
            } => ("RESPONSE".to_owned(), p),
            Frame::Status(_, h) => (format!("STATUS {}", h.status().code()), Bytes::new()),
            other => (format!("{other:?}"), Bytes::new()),
        });
    }
    assert!(buf.is_empty(), "bytes after the last frame");
    Ok(frames)
}

#[tokio::test]
async fn bare_quinn_client_follows_the_documented_wire() {
    let server = Quic
        .serve(&ServerConfig::loopback(), Arc::new(Echo::default()))
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, async {
        let conn = client(&server.endpoint()).await;

        // Garbage on a stream: that stream is reset with PROTOCOL_ERROR.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"\xffthis is not a frame at all")
            .await
            .unwrap();
        send.finish().unwrap();
        match read_all(&mut recv).await {
            Err(quinn::ReadError::Reset(code)) => {
                assert_eq!(code.into_inner(), u64::from(codes::PROTOCOL_ERROR));
            }
            other => panic!("expected a reset with PROTOCOL_ERROR, got {other:?}"),
        }

        // A unary call on the same connection, frames built by hand: OPEN, MESSAGE(END), FIN.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut batch = WriteBatch::new();
        let open = OpenHeader::new(Method::Unary.as_u8(), None, &Metadata::new());
        batch
            .push(1, 0, OutHeader::Open(&open), &Bytes::new())
            .unwrap();
        let request = EchoRequest::new(&b"over quic"[..]);
        let header = RequestHeader::from(&request.directives);
        batch
            .push(
                1,
                FLAG_END_STREAM,
                OutHeader::Message(&header),
                &request.payload,
            )
            .unwrap();
        send.write_all(&batch.to_vec()).await.unwrap();
        send.finish().unwrap();
        let frames = read_all(&mut recv).await.unwrap();
        assert_eq!(
            frames,
            vec![
                ("RESPONSE".to_owned(), Bytes::from_static(b"over quic")),
                ("STATUS OK".to_owned(), Bytes::new()),
            ]
        );

        // A failing call: STATUS alone.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut batch = WriteBatch::new();
        batch
            .push(1, 0, OutHeader::Open(&open), &Bytes::new())
            .unwrap();
        let failing = RequestHeader::from(&Directives {
            fail: Some(wirebench_core::FailWith {
                code: wirebench_core::Code::NotFound,
                message: "nope".into(),
                after: 0,
            }),
            ..Default::default()
        });
        batch
            .push(
                1,
                FLAG_END_STREAM,
                OutHeader::Message(&failing),
                &Bytes::new(),
            )
            .unwrap();
        send.write_all(&batch.to_vec()).await.unwrap();
        send.finish().unwrap();
        let frames = read_all(&mut recv).await.unwrap();
        assert_eq!(frames, vec![("STATUS NOT_FOUND".to_owned(), Bytes::new())]);
        conn.close(quinn::VarInt::from_u32(codes::NO_ERROR), b"done");
    })
    .await
    .expect("timed out");
    server.shutdown().await;
}
