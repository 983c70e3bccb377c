//! Fuzzes the `tcp` frame decoder (also used by `quic`) with arbitrary bytes from the network,
//! delivered in arbitrary chunk sizes, on both the server side (preface first) and the client
//! side. Any panic, hang or unbounded allocation is a bug.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wirebench_wire::codec::{Decoded, Decoder, Frame};

fn run(mut decoder: Decoder, data: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    let mut pos = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Frame(frame)) => {
                // Touch what a server or client would read from the archived header.
                match frame {
                    Frame::Open(_, h) => {
                        let _ = h.timeout();
                        let _ = wirebench_wire::codec::metadata_from_wire(&h.metadata);
                    }
                    Frame::Message { header, payload, .. } => {
                        let _ = header.directives();
                        let _ = payload;
                    }
                    Frame::Status(_, h) | Frame::GoAway(h) => {
                        let _ = h.status();
                    }
                    Frame::Headers(_, h) => {
                        let _ = wirebench_wire::codec::metadata_from_wire(&h.entries);
                    }
                    Frame::Response { header, payload, .. } => {
                        let _ = header.response(match payload {
                            wirebench_wire::codec::Payload::Bytes(b) => b,
                            wirebench_wire::codec::Payload::TooLarge(_) => {
                                bytes::Bytes::new()
                            }
                        });
                    }
                    Frame::HalfClose(_) | Frame::Cancel(_) => {}
                }
            }
            Ok(Decoded::NeedMore(_)) => {
                if pos == data.len() {
                    return;
                }
                let n = chunk.min(data.len() - pos);
                buf.extend_from_slice(&data[pos..pos + n]);
                pos += n;
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first).max(1);
    run(Decoder::server(1 << 16), rest, chunk);
    run(Decoder::client(1 << 16), rest, chunk);
});
