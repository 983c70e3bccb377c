#!/usr/bin/env bash
# How much of the grpc server's CPU is hyper and tonic rather than HTTP/2 itself: our grpc
# server (`wirebench serve`, 2 workers) against the least h2 server that answers the echo's
# Unary method (transports/grpc/examples/h2_echo_min.rs, 2 workers, a task per call, no metadata,
# deadlines or limits), each driven by the same grpc client through `load --target`, in
# alternated pairs. Prints throughput, CPU per call on both sides and the latency line.
# Usage: benches/grpc-h2-min.sh [CONCURRENCY] [PAIRS]   (default 64 in flight, 3 pairs)
set -euo pipefail
cd "$(dirname "$0")/.."
c="${1:-64}"
n="${2:-3}"
cargo build --release -q -p wirebench
cargo build --release -q -p wirebench-grpc --example h2_echo_min
wb=target/release/wirebench
for _ in $(seq 1 "$n"); do
  for kind in grpc h2-min; do
    if [ "$kind" = grpc ]; then
      addr=127.0.0.1:7101
      "$wb" serve --transport grpc --listen "$addr" --threads 2 >/dev/null 2>&1 &
    else
      addr=127.0.0.1:7102
      target/release/examples/h2_echo_min "$addr" 2 >/dev/null &
    fi
    pid=$!
    sleep 0.5
    out="$("$wb" load --transport grpc --target "$addr" --target-pid "$pid" \
      --concurrency "$c" --connections 1 --duration 3s 2>&1)" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rate="$(grep -m1 'calls/s' <<<"$out" | sed 's/.*: //')"
    cpu="$(grep -m1 'CPU µs/call' <<<"$out" | sed 's/;.*//; s/^ *//')"
    lat="$(grep -m1 'p50' <<<"$out" | sed 's/^ *//')"
    echo "$kind c=$c: $rate | $cpu | $lat"
  done
done
