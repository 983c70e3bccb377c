//! Deterministic benchmarks: instruction counts under valgrind (gungraun) for the hot paths
//! that need no network — frame encode and decode, the echo handler, histogram recording. The
//! counts do not depend on what else the machine is doing, so a CI gate on them is free of
//! noise. Needs valgrind and the matching runner:
//! `cargo install gungraun-runner --version 0.20.0`, then `cargo bench --bench instructions`.
//!
//! Each benchmark warms up in its setup (thread-local arenas, lazily built buffers), so the
//! counts are those of the steady state.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gungraun::prelude::*;
use wirebench::load::recorder::Recorder;
use wirebench_core::echo::CallHead;
use wirebench_core::{Code, Directives, Echo, EchoRequest, Metadata, Method};
use wirebench_wire::codec::{
    Decoded, Decoder, FLAG_END_STREAM, OpenHeader, OutHeader, PREFACE, RequestHeader, WriteBatch,
};

const PAYLOAD: usize = 64;

struct Encode {
    batch: WriteBatch,
    open: OpenHeader,
    request: RequestHeader,
    payload: Bytes,
}

fn setup_encode() -> Encode {
    let mut e = Encode {
        batch: WriteBatch::new(),
        open: OpenHeader::new(Method::Unary.as_u8(), None, &Metadata::new()),
        request: RequestHeader::from(&Directives::default()),
        payload: Bytes::from(vec![0x5a; PAYLOAD]),
    };
    encode_once(&mut e);
    e
}

fn encode_once(e: &mut Encode) -> usize {
    let none = Bytes::new();
    let _ = e.batch.push(1, 0, OutHeader::Open(&e.open), &none);
    let _ = e.batch.push(
        1,
        FLAG_END_STREAM,
        OutHeader::Message(&e.request),
        &e.payload,
    );
    let n = e.batch.len();
    e.batch.advance(n);
    n
}

// A unary request (OPEN + MESSAGE, 64 B payload) encoded into a reused batch.
#[library_benchmark]
#[bench::unary_64b(setup = setup_encode)]
fn frame_encode(mut e: Encode) -> usize {
    black_box(encode_once(&mut e))
}

fn setup_decode() -> (Decoder, BytesMut, Vec<u8>) {
    let mut e = setup_encode();
    let none = Bytes::new();
    e.batch.push_raw(&PREFACE);
    for id in [1u32, 3] {
        let _ = e.batch.push(id, 0, OutHeader::Open(&e.open), &none);
        let _ = e.batch.push(
            id,
            FLAG_END_STREAM,
            OutHeader::Message(&e.request),
            &e.payload,
        );
    }
    let wire = e.batch.to_vec();
    let mut decoder = Decoder::server(1 << 20);
    let mut buf = BytesMut::from(&wire[..wire.len() / 2 + 6]);
    // Warm-up: the preface and the first call go through once.
    while let Ok(Decoded::Frame(_)) = decoder.decode(&mut buf) {}
    let rest = wire[wire.len() / 2 + 6..].to_vec();
    (decoder, buf, rest)
}

// A unary request (OPEN + MESSAGE) decoded: headers validated in place, payload split off.
#[library_benchmark]
#[bench::unary_64b(setup = setup_decode)]
fn frame_decode(input: (Decoder, BytesMut, Vec<u8>)) -> usize {
    let (mut decoder, mut buf, rest) = input;
    buf.extend_from_slice(&rest);
    let mut frames = 0;
    while let Ok(Decoded::Frame(f)) = decoder.decode(&mut buf) {
        black_box(&f);
        frames += 1;
    }
    frames
}

fn setup_echo() -> (Echo, CallHead, EchoRequest) {
    let echo = Echo::default();
    let head = CallHead::new(Method::Unary);
    let request = EchoRequest::new(Bytes::from(vec![0x5a; PAYLOAD]));
    let _ = echo.unary_now(&head, request.clone());
    (echo, head, request)
}

// The shared echo handler answering a plain unary request (the servers' fast path).
#[library_benchmark]
#[bench::unary_64b(setup = setup_echo)]
fn echo_unary(input: (Echo, CallHead, EchoRequest)) -> bool {
    let (echo, head, request) = input;
    black_box(echo.unary_now(&head, request).is_ok())
}

fn setup_recorder() -> (Recorder, std::time::Instant) {
    let start = std::time::Instant::now();
    let mut r = Recorder::new(start, false, false);
    r.call(Duration::from_micros(50), None, Code::Ok, start);
    (r, start)
}

// 1000 calls recorded by the load engine (latency histogram, interval, status counts).
#[library_benchmark]
#[bench::calls_1000(setup = setup_recorder)]
fn record_calls(input: (Recorder, std::time::Instant)) -> u64 {
    let (mut r, start) = input;
    for i in 0..1000u64 {
        r.call(Duration::from_nanos(20_000 + i * 37), None, Code::Ok, start);
    }
    black_box(1000)
}

library_benchmark_group!(
    name = hot_paths;
    benchmarks = frame_encode, frame_decode, echo_unary, record_calls
);

main!(library_benchmark_groups = hot_paths);
