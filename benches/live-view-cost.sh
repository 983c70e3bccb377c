#!/usr/bin/env bash
# What the live view costs the measurement: the same load point run with the live figures
# (`--plain`: the per-interval feed, merged and printed each second) and without them
# (`--quiet`: no feed, no progress), in alternated pairs. Prints each run's throughput and p99,
# then the medians and the with/without ratio. A closed loop at full speed is where a cost
# would show first (every call records; an open loop also keeps a per-interval lag histogram).
# Usage: benches/live-view-cost.sh [TRANSPORT] [PAIRS] [DURATION] [LOOP FLAGS...]
#        default: tcp, 5 pairs, 10s, --concurrency 32
set -euo pipefail
cd "$(dirname "$0")/.."
transport="${1:-tcp}"
pairs="${2:-5}"
duration="${3:-10s}"
shift $(( $# < 3 ? $# : 3 ))
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--concurrency 32)
cargo build --release -q -p wirebench
wb=target/release/wirebench
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
one() { # $1 = with|without, $2 = run number
  local mode=--quiet
  [ "$1" = with ] && mode=--plain
  "$wb" load --transport "$transport" --duration "$duration" "${flags[@]}" "$mode" \
    --json "$dir/$1-$2.json" >/dev/null 2>&1
  python3 - "$dir/$1-$2.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
s = r["summary"]
print(f"{sys.argv[2]:>8}: {s['throughput_per_s']:10.0f} calls/s  p99 {s['latency']['p99_ns'] / 1000:8.1f} µs")
PY
}
# ABBA order: neither side always runs first (after the other's teardown).
for i in $(seq 1 "$pairs"); do
  if (( i % 2 )); then
    one with "$i"
    one without "$i"
  else
    one without "$i"
    one with "$i"
  fi
done | tee "$dir/lines"
python3 - "$dir/lines" <<'PY'
import statistics, sys
rate = {"with": [], "without": []}
p99 = {"with": [], "without": []}
for line in open(sys.argv[1]):
    kind, rest = line.split(":", 1)
    words = rest.split()
    rate[kind.strip()].append(float(words[0]))
    p99[kind.strip()].append(float(words[3]))
m = {k: (statistics.median(rate[k]), statistics.median(p99[k])) for k in rate}
print(f"median calls/s: with the live view {m['with'][0]:.0f}, without {m['without'][0]:.0f}; "
      f"ratio {m['with'][0] / m['without'][0]:.3f}")
print(f"median p99: with {m['with'][1]:.1f} µs, without {m['without'][1]:.1f} µs; "
      f"ratio {m['with'][1] / m['without'][1]:.3f}")
PY
