#!/usr/bin/env bash
# The load engine's own performance, as issue 3 asks to quote it (a benchmark, not a test):
#   1. inproc closed loop, one call in flight: median vs the loopback floor (harness cost);
#   2. tcp open loop at half its closed-loop maximum: generator lag p99;
#   3. generator peak RSS for 1M and 10M calls (must not grow with run length).
# Run on a quiet machine: on a shared one the scheduler, not the engine, sets the tails.
# Usage: benches/engine.sh [DURATION]   (default 5s per point)
set -euo pipefail
cd "$(dirname "$0")/.."
d="${1:-5s}"
cargo build --release -q -p wirebench
wb=target/release/wirebench
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

json() { python3 -c "import json,sys; d=json.load(open('$1')); r=d['runs'][0]['summary']; print(eval(sys.argv[1]))" "$2"; }

echo "== 1. inproc, 1 in flight, vs the floor"
# The floor pinned to one CPU: unpinned, it swings between 21 and 140 µs on small VMs (a halted
# vCPU takes tens of µs to wake), which says nothing about the harness.
$wb floor --duration "$d" --pin same | sed -n '3p'
$wb load --transport inproc --concurrency 1 --duration "$d" --json "$tmp/inproc.json" >/dev/null 2>&1
floor_p50=$($wb floor --duration "$d" --pin same | awk 'NR==3 {print $4}')
inproc_p50=$(json "$tmp/inproc.json" "r['latency']['p50_ns']/1000")
python3 -c "print(f'inproc p50 {float($inproc_p50):.2f} us, floor p50 {float($floor_p50):.1f} us: {float($inproc_p50)/float($floor_p50):.3f}x the floor')"

echo "== 2. tcp open loop at half the closed-loop maximum"
# One worker on vCPU 0, the server on vCPU 1, for the maximum and the open loop alike: on a
# 2-vCPU machine a second worker, or the server, sharing the generator's vCPU turns the
# generator's lag into a measure of their CPU use (lag p99 of milliseconds, 2026-12-03).
place=(--workers 1 --pin split)
$wb load --transport tcp --concurrency 64 --connections 4 "${place[@]}" --duration "$d" --json "$tmp/max.json" >/dev/null 2>&1
max=$(json "$tmp/max.json" "int(r['throughput_per_s'])")
half=$((max / 2))
echo "closed-loop max ${max}/s; open loop at ${half}/s"
$wb load --transport tcp --rate "$half" --connections 4 "${place[@]}" --duration "$d" --json "$tmp/half.json" >/dev/null 2>&1
json "$tmp/half.json" "'generator lag p50 %.1f us, p99 %.1f us, p99.9 %.1f us; valid: %s' % (r['generator_lag']['p50_ns']/1e3, r['generator_lag']['p99_ns']/1e3, r['generator_lag']['p999_ns']/1e3, d['runs'][0]['validity']['valid'])"

# The same schedule with no I/O at all (inproc): the engine's own lag at this rate.
$wb load --transport inproc --rate "$half" --workers 1 --pin same --duration "$d" --json "$tmp/half-inproc.json" >/dev/null 2>&1
json "$tmp/half-inproc.json" "'inproc at the same rate: generator lag p50 %.1f us, p99 %.1f us, p99.9 %.1f us' % (r['generator_lag']['p50_ns']/1e3, r['generator_lag']['p99_ns']/1e3, r['generator_lag']['p999_ns']/1e3)"
# The host's own gaps on the generator's vCPU bound what any pacing can reach here.
$wb floor --duration 200ms --warmup 50ms --pin same | grep '^host:'
echo "== 3. generator peak RSS by run length"
for n in 1000000 10000000; do
  for t in inproc tcp; do
    $wb load --transport "$t" --concurrency 64 --connections 4 --requests "$n" --warmup 0s --json "$tmp/rss.json" >/dev/null 2>&1
    json "$tmp/rss.json" "'$t $n calls in %.1f s: client peak RSS %.1f MiB, %d intervals' % (r['elapsed_s'], r['client']['peak_rss_bytes']/1048576, len(d['runs'][0]['intervals']))"
  done
done
