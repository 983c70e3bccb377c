#!/usr/bin/env bash
# Deterministic benches: instruction counts under valgrind (gungraun) for the hot paths that
# need no network (benches/benches/instructions.rs). Installs what they need when missing —
# valgrind (apt) and gungraun-runner, whose version must equal the `gungraun` crate's (pinned
# `=0.20.0` in Cargo.toml) — then runs them. Extra arguments go to the bench, e.g.
#   ci/instructions.sh --save-baseline=main     # remember these counts
#   ci/instructions.sh --baseline=main          # compare with them
# Counts do not depend on machine load, so they are comparable between runs on one toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

GUNGRAUN_VERSION=0.20.0

if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "valgrind is missing: apt-get install -y valgrind (as root)" >&2
    exit 3
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi

if [ "$(gungraun-runner --version 2>/dev/null || true)" != "gungraun-runner $GUNGRAUN_VERSION" ]; then
  cargo install --locked gungraun-runner --version "$GUNGRAUN_VERSION"
fi

cargo bench -p wirebench-benches --bench instructions -- "$@"
