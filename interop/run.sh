#!/usr/bin/env bash
# Interop tests: the official faye@1.4.3 clients against faye-rs.
#   faye.test.mjs     the Node client against `faye serve`
#   order.test.mjs    bursts of publishes from several Node clients arrive in
#                     each publisher's order, over long-polling and WebSocket
#   deflate.test.mjs  the Node client with permessage-deflate against
#                     `faye serve --websocket-deflate`
#   browser.test.mjs  the browser client in headless Chromium (playwright-core
#                     driving /usr/bin/chromium) against the axum example app
#   cluster.test.mjs  three `faye serve --engine redis` nodes on a throwaway
#                     redis-server: delivery across nodes, and a long-polling
#                     client moved between nodes on every poll loses nothing
#   migration.test.mjs  Node Faye 1.4.3 servers on faye-redis 0.2.0 and
#                     `faye serve --redis-layout faye-redis` nodes on one Redis:
#                     delivery and wildcards across the kinds, sessions moving
#                     between them, a rolling migration behind a load balancer,
#                     and expired clients collected by the other kind
#   client.test.mjs   faye-rs's own browser client (clients/js) in headless
#                     Chromium against `faye serve` and Node Faye 1.4.3: every
#                     transport, fallback, a server restart, a Faye app's page
#                     unchanged, a 500-publish burst, the status page
#   tls.test.mjs      the Node client over TLS (`--tls-cert`, `--tls-key`) with
#                     the test's own CA, WebSocket and long-polling, and a
#                     certificate replaced on disk served to new connections
# Usage: bash interop/run.sh   (from any directory)
# $FAYE_BIN, default <repo>/target/debug/faye (`cargo build -p faye-cli`).
# $FAYE_EXAMPLE_BIN, default <repo>/target/debug/examples/axum_app
# (`cargo build -p faye-http --examples`).
# Needs Debian's Chromium (`apt-get install chromium`); no browser is downloaded.
# Needs redis-server (`apt-get install redis-server`); it is started on a free
# port, never 6379's.
# Needs the openssl command (`apt-get install openssl`) to make test certificates.
set -euo pipefail
# Relative paths are relative to the caller's directory.
if [[ -n "${FAYE_BIN:-}" ]]; then export FAYE_BIN="$(realpath -m -- "$FAYE_BIN")"; fi
if [[ -n "${FAYE_EXAMPLE_BIN:-}" ]]; then export FAYE_EXAMPLE_BIN="$(realpath -m -- "$FAYE_EXAMPLE_BIN")"; fi
cd "$(dirname "${BASH_SOURCE[0]}")"

npm ci --no-audit --no-fund --loglevel=error >/dev/null
node --test --test-reporter=spec faye.test.mjs order.test.mjs deflate.test.mjs browser.test.mjs \
    cluster.test.mjs migration.test.mjs tls.test.mjs client.test.mjs
