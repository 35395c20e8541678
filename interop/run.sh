#!/usr/bin/env bash
# Interop tests: the official faye@1.4.3 Node client against `faye serve`.
# Usage: bash interop/run.sh   (from any directory)
# The server binary is $FAYE_BIN, default <repo>/target/debug/faye
# (build it with `cargo build -p faye-cli`).
set -euo pipefail
# A relative FAYE_BIN is relative to the caller's directory.
if [[ -n "${FAYE_BIN:-}" ]]; then export FAYE_BIN="$(realpath -m -- "$FAYE_BIN")"; fi
cd "$(dirname "${BASH_SOURCE[0]}")"

npm ci --no-audit --no-fund --loglevel=error >/dev/null
node --test --test-reporter=spec faye.test.mjs
