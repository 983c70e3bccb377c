//! Codec benchmarks: one unary call's request and response (metadata, directives, payload;
//! counters and status) encoded and decoded with the `tcp` transport's rkyv frames (headers read
//! in place, and fully deserialized), prost (the grpc transport's generated types), serde_json
//! and postcard, at payloads of 0 B, 1 KiB, 64 KiB and 1 MiB. What each codec carries and how
//! the comparison is kept fair: `benches/src/codecs.rs`.
//!
//! Throughput is that codec's bytes on the wire for the message (printed as a table first).
//! Encoders reuse their output buffer; decoders get their input prepared outside the timing
//! (a fresh read buffer for the rkyv decoder, which consumes it), and the decoded message is
//! dropped outside the timing too, for every codec alike.
//!
//! ```sh
//! cargo bench -p wirebench-benches --bench codecs -- --warm-up-time 1 --measurement-time 2
//! ```

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wirebench_benches::codecs::{
    CODECS, PbAnswer, PbCall, RkyvFrames, SIZES, Sample, SerdeAnswer, SerdeCall, encode_pair,
    json_encode, postcard_encode, prost_decode, prost_encode, wire_size_table,
};

/// Iterations per batch for decoders whose input is prepared per iteration: enough to make
/// the timer's cost negligible, few enough that a batch of 1 MiB inputs stays small.
fn batch(payload: usize) -> BatchSize {
    BatchSize::NumIterations(((32 << 20) / (payload + 1024)).clamp(16, 1024) as u64)
}

fn encode(c: &mut Criterion) {
    println!(
        "bytes on the wire (request + response of one unary call):\n{}",
        wire_size_table()
    );
    for (msg, is_request) in [("request", true), ("response", false)] {
        let mut g = c.benchmark_group(format!("codec/encode_{msg}"));
        for (payload, label) in SIZES {
            let sample = Sample::new(payload);
            for codec in CODECS {
                let (req, resp) = encode_pair(codec, &sample);
                let wire = if is_request { req.len() } else { resp.len() };
                g.throughput(Throughput::Bytes(wire as u64));
                let id = BenchmarkId::new(codec, label);
                let mut buf = Vec::new();
                match codec {
                    "rkyv_frames" => {
                        let mut frames = RkyvFrames::new(&sample);
                        g.bench_function(id, |b| {
                            b.iter(|| {
                                if is_request {
                                    frames.encode_request()
                                } else {
                                    frames.encode_response()
                                }
                            })
                        });
                    }
                    "prost" => {
                        let (call, answer) = (PbCall::of(&sample), PbAnswer::of(&sample));
                        g.bench_function(id, |b| {
                            b.iter(|| {
                                if is_request {
                                    prost_encode(black_box(&call), &mut buf)
                                } else {
                                    prost_encode(black_box(&answer), &mut buf)
                                }
                            })
                        });
                    }
                    "serde_json" | "postcard" => {
                        let (call, answer) = (SerdeCall::of(&sample), SerdeAnswer::of(&sample));
                        let json = codec == "serde_json";
                        g.bench_function(id, |b| {
                            b.iter(|| match (json, is_request) {
                                (true, true) => json_encode(black_box(&call), &mut buf),
                                (true, false) => json_encode(black_box(&answer), &mut buf),
                                (false, true) => postcard_encode(black_box(&call), &mut buf),
                                (false, false) => postcard_encode(black_box(&answer), &mut buf),
                            })
                        });
                    }
                    other => unreachable!("codec {other}"),
                }
            }
        }
        g.finish();
    }
}

// The rkyv deserialize bench returns `Ok(request)` or `Err(response)` only to give both arms
// one type; nothing is an error there, so the size of the "error" is irrelevant.
#[allow(clippy::result_large_err)]
fn decode(c: &mut Criterion) {
    for (msg, is_request) in [("request", true), ("response", false)] {
        let mut g = c.benchmark_group(format!("codec/decode_{msg}"));
        for (payload, label) in SIZES {
            let sample = Sample::new(payload);
            for codec in CODECS {
                let (req, resp) = encode_pair(codec, &sample);
                let wire = if is_request { req } else { resp };
                g.throughput(Throughput::Bytes(wire.len() as u64));
                match codec {
                    "rkyv_frames" => {
                        let mut decoder = RkyvFrames::decoder();
                        g.bench_function(BenchmarkId::new("rkyv_frames_access", label), |b| {
                            b.iter_batched_ref(
                                || BytesMut::from(&wire[..]),
                                |buf| {
                                    if is_request {
                                        RkyvFrames::access_request(&mut decoder, buf)
                                    } else {
                                        RkyvFrames::access_response(&mut decoder, buf)
                                    }
                                    .unwrap_or_else(|e| panic!("decode: {e}"))
                                },
                                batch(payload),
                            )
                        });
                        // (Ok/Err below only unify the request and response types.)
                        g.bench_function(BenchmarkId::new("rkyv_frames_deserialize", label), |b| {
                            b.iter_batched_ref(
                                || BytesMut::from(&wire[..]),
                                |buf| {
                                    if is_request {
                                        Ok(RkyvFrames::deserialize_request(&mut decoder, buf)
                                            .unwrap_or_else(|e| panic!("decode: {e}")))
                                    } else {
                                        Err(RkyvFrames::deserialize_response(&mut decoder, buf)
                                            .unwrap_or_else(|e| panic!("decode: {e}")))
                                    }
                                },
                                batch(payload),
                            )
                        });
                    }
                    "prost" => {
                        let wire = Bytes::from(wire);
                        g.bench_function(BenchmarkId::new(codec, label), |b| {
                            b.iter_batched_ref(
                                || wire.clone(),
                                |w| {
                                    let w = std::mem::take(w);
                                    if is_request {
                                        Ok(prost_decode::<PbCall>(w).expect("decodes"))
                                    } else {
                                        Err(prost_decode::<PbAnswer>(w).expect("decodes"))
                                    }
                                },
                                batch(payload),
                            )
                        });
                    }
                    "serde_json" | "postcard" => {
                        let json = codec == "serde_json";
                        let w: &[u8] = &wire;
                        g.bench_function(BenchmarkId::new(codec, label), |b| {
                            b.iter_batched_ref(
                                || (),
                                |_| {
                                    let w = black_box(w);
                                    match (json, is_request) {
                                        (true, true) => {
                                            Ok(serde_json::from_slice::<SerdeCall<'_>>(w)
                                                .expect("decodes"))
                                        }
                                        (true, false) => {
                                            Err(serde_json::from_slice::<SerdeAnswer<'_>>(w)
                                                .expect("decodes"))
                                        }
                                        (false, true) => {
                                            Ok(postcard::from_bytes::<SerdeCall<'_>>(w)
                                                .expect("decodes"))
                                        }
                                        (false, false) => {
                                            Err(postcard::from_bytes::<SerdeAnswer<'_>>(w)
                                                .expect("decodes"))
                                        }
                                    }
                                },
                                batch(payload),
                            )
                        });
                    }
                    other => unreachable!("codec {other}"),
                }
            }
        }
        g.finish();
    }
}

criterion_group!(codecs, encode, decode);
criterion_main!(codecs);
