#!/usr/bin/env bash
# Refreshes ci/baseline.json from a run of the `ci` suite on this machine. Run it on the same
# kind of machine as CI, with nothing else running, from a commit whose performance is the new
# reference; then review the diff of ci/baseline.json's headline numbers and commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
pin="${WIREBENCH_PIN:-same}"
out="target/ci-baseline"
cargo build --release --quiet
rm -rf "$out"
./target/release/wirebench run --suite ci --plain --pin "$pin" --out "$out"
cp "$out/results.json" ci/baseline.json
echo "ci/baseline.json refreshed from $out (pin $pin); summary:"
cat "$out/summary.md"
