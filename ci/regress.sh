#!/usr/bin/env bash
# The regression gate: runs the `ci` suite, compares it with the committed baseline and
# writes a Markdown summary for the CI job. Exit status: 0 no regression, 1 a regression or a
# conformance failure, 2 unusable input (e.g. a baseline from another schema), 3 harness error.
#
# Environment:
#   WIREBENCH_BASELINE  baseline results (default ci/baseline.json)
#   WIREBENCH_OUT       output folder (default target/ci-gate; emptied first)
#   WIREBENCH_PIN       CPU placement for the run: same (default), split or none. Placement
#                       moves loopback latency by several times on small VMs, so the baseline
#                       and the gate must use the same one (compare refuses mismatched runs).
#   WIREBENCH_SAME_MACHINE=1
#                       refuse (exit 2) a baseline recorded on another machine class (CPU
#                       model, cores, kernel) instead of comparing it with a warning.
set -uo pipefail
cd "$(dirname "$0")/.."

baseline="${WIREBENCH_BASELINE:-ci/baseline.json}"
out="${WIREBENCH_OUT:-target/ci-gate}"
pin="${WIREBENCH_PIN:-same}"

cargo build --release --quiet || exit 3
rm -rf "$out"
./target/release/wirebench run --suite ci --plain --pin "$pin" --out "$out"
run_status=$?
if [ ! -f "$out/results.json" ]; then
  echo "error: the ci suite wrote no results (exit $run_status)" >&2
  exit 3
fi

same_machine=()
[ "${WIREBENCH_SAME_MACHINE:-0}" = 1 ] && same_machine=(--require-same-machine)
if [ -f "$baseline" ]; then
  ./target/release/wirebench compare "$baseline" "$out/results.json" "${same_machine[@]}" \
    --format markdown --out "$out/compare.md" > /dev/null 2> "$out/compare.err"
  gate_status=$?
  cat "$out/compare.err" >&2
  if grep -q "different machines" "$out/compare.err"; then
    cat >&2 <<MSG

The baseline ($baseline) was recorded on another machine class: numbers differ between
machine classes for that reason alone, so this verdict says little about the code. Record a
baseline on this class and commit it (ci/refresh-baseline.sh; see ci/README.md, "A baseline
from another machine class"), or point WIREBENCH_BASELINE at one from this class.
MSG
  fi
  if [ -f "$out/compare.md" ]; then
    ./target/release/wirebench compare "$baseline" "$out/results.json" --format text \
      2> /dev/null || true
  else
    printf '## Regression gate\n\nNot compared: %s\n' "$(cat "$out/compare.err")" \
      > "$out/compare.md"
  fi
else
  printf '## Regression gate\n\nNo baseline at `%s`: nothing to compare (see ci/README.md).\n' \
    "$baseline" > "$out/compare.md"
  gate_status=0
fi
{ echo; cat "$out/compare.md"; } >> "$out/summary.md"
echo "summary: $out/summary.md"
echo "report:  $out/report.html"

# A conformance failure or a harness error in the run outranks the comparison.
if [ "$run_status" -ne 0 ]; then exit "$run_status"; fi
exit "$gate_status"
