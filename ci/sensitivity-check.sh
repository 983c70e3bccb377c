#!/usr/bin/env bash
# Does the gate see a real regression? The other half of ci/noise-check.sh: runs the `ci`
# suite's load points on tcp against one `wirebench serve`, once directly (BASE) and once
# through `wirebench proxy --fault latency:DELAY` (NEW, DELAY added each way), then compares
# them as ci/regress.sh would. Issue 8 asks for exit 1 naming the regressed metrics.
#
# Usage: ci/sensitivity-check.sh [DELAY]   (default 1ms)
# Environment: WIREBENCH_PIN (default same, as ci/regress.sh; the server and proxy are not
# pinned), WIREBENCH_OUT (default target/sensitivity-check).
# Exit status: compare's (1 expected), 3 on a harness error.
set -uo pipefail
cd "$(dirname "$0")/.."

delay="${1:-1ms}"
pin="${WIREBENCH_PIN:-same}"
out="${WIREBENCH_OUT:-target/sensitivity-check}"
bin=./target/release/wirebench

cargo build --release --quiet || exit 3
rm -rf "$out"
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; }
trap cleanup EXIT

# Waits for a ready file and prints the address in it (the "endpoint" of serve's ready line,
# the "listen" address of proxy's).
ready() {
  for _ in $(seq 100); do
    if [ -s "$1" ]; then
      grep -oE '127\.0\.0\.1:[0-9]+' "$1" | head -1
      return 0
    fi
    sleep 0.1
  done
  echo "error: $1 never became ready" >&2
  return 1
}

"$bin" serve --transport tcp --listen 127.0.0.1:0 --ready-file "$out/serve.ready" \
  > "$out/serve.log" 2>&1 &
pids+=($!)
server_pid=$!
server=$(ready "$out/serve.ready") || exit 3

"$bin" proxy --upstream "$server" --fault "latency:$delay" > "$out/proxy.log" 2>&1 &
pids+=($!)
proxy=""
for _ in $(seq 100); do
  proxy=$(grep -oE '127\.0\.0\.1:[0-9]+' "$out/proxy.log" | head -1)
  [ -n "$proxy" ] && break
  sleep 0.1
done
[ -n "$proxy" ] || { echo "error: the proxy printed no address; see $out/proxy.log" >&2; exit 3; }

for side in base new; do
  target="$server"
  [ "$side" = new ] && target="$proxy"
  "$bin" run --suite ci --transport tcp --pin "$pin" --target "$target" --target-pid "$server_pid" \
    --no-conformance --no-faults --no-floor --plain --out "$out/$side" > "$out/$side.log" 2>&1
  if [ ! -f "$out/$side/results.json" ]; then
    echo "error: the $side run wrote no results; see $out/$side.log" >&2
    exit 3
  fi
done

"$bin" compare "$out/base/results.json" "$out/new/results.json" --format text
