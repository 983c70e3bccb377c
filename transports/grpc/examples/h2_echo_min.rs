//! A measuring aid, not a transport: the least h2 server that answers the echo service's
//! Unary method (the request's payload back as the response's), with a task per call and none
//! of the grpc server's metadata, deadlines, limits, cancellation or drain. Driven by our grpc
//! client (`wirebench load --transport grpc --target ADDR`), it shows how much of the grpc
//! server's CPU per call is hyper and tonic rather than HTTP/2 itself: see
//! `benches/grpc-h2-min.sh` and docs/measurements.md. Usage: `h2_echo_min [ADDR] [THREADS]`.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpListener;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7100".into());
    let threads: usize = match args.next() {
        None => 2,
        Some(t) => t.parse().map_err(|e| format!("THREADS {t:?}: {e}"))?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let served: Result<(), Box<dyn std::error::Error>> = rt.block_on(async move {
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        println!("{{\"pid\":{}}}", std::process::id());
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::Builder::new()
                    .initial_window_size(1 << 20)
                    .initial_connection_window_size(16 << 20)
                    .handshake::<_, Bytes>(tcp)
                    .await
                else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut data = BytesMut::new();
                        while let Some(chunk) = body.data().await {
                            let Ok(chunk) = chunk else { return };
                            let _ = body.flow_control().release_capacity(chunk.len());
                            data.extend_from_slice(&chunk);
                        }
                        // The request message (5-byte prefix + EchoRequest); EchoResponse's
                        // payload is field 1 as EchoRequest's is: keep only field 1.
                        let msg = data.split_off(5.min(data.len()));
                        let payload = first_field(&msg);
                        let mut head = http::Response::new(());
                        head.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        let Ok(mut send) = respond.send_response(head, false) else {
                            return;
                        };
                        let mut out = BytesMut::with_capacity(payload.len() + 16);
                        let mut m = Vec::with_capacity(payload.len() + 6);
                        m.push(0x0a);
                        let mut n = payload.len();
                        while n >= 0x80 {
                            m.push((n as u8) | 0x80);
                            n >>= 7;
                        }
                        m.push(n as u8);
                        m.extend_from_slice(payload);
                        out.put_u8(0);
                        out.put_u32(m.len() as u32);
                        out.put_slice(&m);
                        let _ = send.send_data(out.freeze(), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
    served
}

/// Field 1 (length-delimited) of a protobuf message, or empty.
fn first_field(msg: &[u8]) -> &[u8] {
    if msg.first() != Some(&0x0a) {
        return &[];
    }
    let (mut len, mut shift, mut i) = (0usize, 0, 1);
    while i < msg.len() {
        let b = msg[i];
        len |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    &msg[i..(i + len).min(msg.len())]
}
