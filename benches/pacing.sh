#!/usr/bin/env bash
# How precisely the open loop keeps its schedule, and what the precision costs: generator lag
# (actual minus intended send) p50/p99 and client CPU per call at a fixed rate, on every
# transport, for two builds alternated (A B A B ..., the transports in turn within each round),
# so drift of the host falls on both. Prints every run, then per transport and build the
# medians, and the host's other load (runs on a busy host say nothing about pacing).
# Usage: [A_FLAGS=...] [B_FLAGS=...] benches/pacing.sh BIN_A BIN_B [ROUNDS] [RATE] [DURATION] [TRANSPORTS]
#        e.g. benches/pacing.sh /tmp/wb-before target/release/wirebench 5 2k 3s
#        B_FLAGS="--pacing spin" benches/pacing.sh target/release/wirebench target/release/wirebench
# Build the binaries first (git worktree, or copy target/release/wirebench between builds);
# A_FLAGS and B_FLAGS are added to each side's `load` command.
set -euo pipefail
a="${1:?binary A}"
b="${2:?binary B}"
rounds="${3:-5}"
rate="${4:-2k}"
duration="${5:-3s}"
transports="${6:-tcp grpc quic nats mqtt inproc}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 "$rounds"); do
  # Alternate which build goes first, so neither always follows the other's teardown.
  order="A B"
  (( i % 2 )) || order="B A"
  for t in $transports; do
    for side in $order; do
      bin="$a"
      flags="${A_FLAGS:-}"
      if [ "$side" = B ]; then
        bin="$b"
        flags="${B_FLAGS:-}"
      fi
      # shellcheck disable=SC2086 # the flags are words
      "$bin" load --transport "$t" --rate "$rate" --duration "$duration" --warmup 1s $flags \
        --quiet --json "$dir/$side-$t-$i.json" >/dev/null 2>&1 || echo "run $side $t $i failed" >&2
    done
  done
done
python3 - "$dir" "$rounds" "$transports" <<'PY'
import json, os, statistics, sys
d, rounds, transports = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
print(f"{'transport':<9} {'side':<4} {'lag p50':>8} {'lag p99':>8}  {'the runs lag p99 (µs)':<30} {'latency p50':>11} {'p99':>8} {'CPU µs/call client':>18} {'server':>7} {'others':>6}")
for t in transports:
    for side in "AB":
        p50, p99, cpu, others, l50, l99, srv = [], [], [], [], [], [], []
        for i in range(1, rounds + 1):
            f = os.path.join(d, f"{side}-{t}-{i}.json")
            if not os.path.exists(f):
                continue
            s = json.load(open(f))["runs"][0]["summary"]
            lag = s.get("generator_lag") or {}
            p50.append(lag.get("p50_ns", 0) / 1e3)
            p99.append(lag.get("p99_ns", 0) / 1e3)
            cpu.append(s["client"]["cpu_us_per_call"])
            srv.append((s.get("server") or {}).get("cpu_us_per_call", float("nan")))
            l50.append(s["latency"]["p50_ns"] / 1e3)
            l99.append(s["latency"]["p99_ns"] / 1e3)
            others.append((s.get("host") or {}).get("other_cpus", float("nan")))
        if not p99:
            continue
        runs = ", ".join(f"{v:.0f}" for v in p99)
        m = statistics.median
        print(f"{t:<9} {side:<4} {m(p50):8.1f} {m(p99):8.1f}  {runs:<30} {m(l50):11.1f} {m(l99):8.1f} {m(cpu):18.1f} {m(srv):7.1f} {max(others):6.2f}")
print("medians of the runs; lag and latency in µs; others: the most CPUs other processes used in a run")
PY
