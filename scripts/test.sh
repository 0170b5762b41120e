#!/usr/bin/env bash
# The whole test suite. Installs the real services and clients the tests talk to (once; the first
# install of the Kafka-protocol broker takes 15-30 minutes on 2 cores; redis-cli and redis-server come
# from Debian's redis-tools and redis-server, HAProxy from Debian, redis-py from PyPI, ioredis and node-redis from npm, the s3s-fs S3 server
# from crates.io), builds the example WebAssembly plugins from source, then runs every test.
#
#   scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/kafka-broker.sh install >&2
# A real Redis client for the Redis-protocol tests, and redis-server to compare answers with.
if ! command -v redis-cli >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq redis-tools redis-server; } >&2
    fi
    command -v redis-cli >/dev/null 2>&1 || { echo "redis-cli is required: install redis-tools" >&2; exit 1; }
    command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required: install redis-server" >&2; exit 1; }
fi
# HAProxy, the load balancer people put before Redis masters, whose Redis health check a test runs.
if ! command -v haproxy >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq haproxy; } >&2
    fi
    command -v haproxy >/dev/null 2>&1 || { echo "haproxy is required: install haproxy" >&2; exit 1; }
fi
# curl, the HTTP client of the TLS tests (HTTPS, HTTP/2 by ALPN, client certificates).
if ! command -v curl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq curl; } >&2
    fi
    command -v curl >/dev/null 2>&1 || { echo "curl is required: install curl" >&2; exit 1; }
fi
# Python clients written by others: redis-py (RESP3) and confluent-kafka (a foreign producer);
# jsonschema validates the Fly.io templates against Fly's schema (scripts/check-fly.py).
if ! python3 -c 'import redis, confluent_kafka, jsonschema; redis.Redis.hsetex' >/dev/null 2>&1; then
    python3 -m pip install --quiet 'redis>=6.2' 'confluent-kafka>=2' 'jsonschema>=4' >&2 ||
        { echo "required: python3 -m pip install 'redis>=6.2' 'confluent-kafka>=2' 'jsonschema>=4'" >&2; exit 1; }
fi
# Feast, the ML feature store, with this node as its Redis online store: in a venv of its own
# (pandas and pyarrow come with it), pinned, under a stable folder.
FEAST_VENV="${FEAST_VENV_DIR:-$HOME/.cache/firescroll/feast-venv}"
if ! "$FEAST_VENV/bin/python" -c 'import feast, redis' >/dev/null 2>&1; then
    { python3 -m venv "$FEAST_VENV" && "$FEAST_VENV/bin/pip" install --quiet 'feast[redis]==0.67.0'; } >&2 ||
        { echo "required: python3 -m venv $FEAST_VENV && $FEAST_VENV/bin/pip install 'feast[redis]==0.67.0'" >&2; exit 1; }
fi
export FEAST_PYTHON="$FEAST_VENV/bin/python"
# Node.js clients written by others: ioredis and node-redis (4 and 5), from npm, under a stable folder.
NODE_CLIENTS="${NODE_CLIENTS_DIR:-$HOME/.cache/firescroll/node-clients}"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq nodejs npm; } >&2
    fi
    command -v npm >/dev/null 2>&1 || { echo "node and npm are required: install nodejs and npm" >&2; exit 1; }
fi
# node-redis 5 (for its client-side cache) sits beside 4 under the name redis5.
if [ ! -d "$NODE_CLIENTS/node_modules/ioredis" ] || [ ! -d "$NODE_CLIENTS/node_modules/redis" ] ||
    [ ! -d "$NODE_CLIENTS/node_modules/redis5" ]; then
    mkdir -p "$NODE_CLIENTS"
    (cd "$NODE_CLIENTS" && { [ -f package.json ] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund --silent ioredis@5 redis@4 redis5@npm:redis@5) >&2 ||
        { echo "required: npm install ioredis@5 redis@4 redis5@npm:redis@5 in $NODE_CLIENTS" >&2; exit 1; }
fi
export NODE_CLIENTS
# A real S3-compatible server (s3s-fs, from crates.io) for the snapshot tests; they start their own.
scripts/s3-server.sh install >&2
S3S_FS_BIN="${S3S_ROOT:-$HOME/.cache/s3s-fs-${S3S_VERSION:-0.14.1}}/bin/s3s-fs"
[ -x "$S3S_FS_BIN" ] || { echo "s3s-fs is required: scripts/s3-server.sh install" >&2; exit 1; }
export S3S_FS_BIN
# The example plugins (plugins/, with the SDK in sdk-wasm/), built to wasm32 for the plugin tests.
scripts/build-plugins.sh >&2
# The SDK's and the example plugins' own unit tests, natively (their logic is plain Rust).
plugin_tests_target="${PLUGIN_TESTS_TARGET_DIR:-$HOME/.cache/firescroll/plugins-test-target}"
(cd sdk-wasm && CARGO_TARGET_DIR="$plugin_tests_target" cargo test --locked)
(cd plugins && CARGO_TARGET_DIR="$plugin_tests_target" cargo test --locked)
# The vendored expr-lang (evaluation budgets added; vendor/expr-lang/FIRESCROLL.md): its own tests
# and the budget tests, with the features the node uses.
(cd vendor/expr-lang && CARGO_TARGET_DIR="$plugin_tests_target" cargo test --no-default-features)
# Integration tests start their own brokers from this binary, each on a free port.
NISSHI_BIN="$(scripts/kafka-broker.sh bin)"
export NISSHI_BIN
cargo test --workspace "$@"
# The many-region Fly.io simulation (root: network namespaces), alone so nothing starves it.
cargo test -p firescroll --test it "$@" -- --ignored --exact fly::a_many_region_fly_deployment_simulated_in_network_namespaces
