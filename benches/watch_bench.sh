#!/usr/bin/env bash
# Change streams: change-to-subscriber latency with WATCHES open watches, and apply throughput
# with and without them (benches/watch_bench.py), against one release node on the embedded log.
#
#   benches/watch_bench.sh        # WATCHES=1000 WRITES=200000
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
cargo build --release -q -p firescroll
work=$(mktemp -d)
ulimit -n 65536 2>/dev/null || true
DB_PATH="$work/data" API_PORT=18290 INTERNAL_PORT=18291 RESP_PORT=18379 LOG_LEVEL=warn \
    "$CARGO_TARGET_DIR/release/firescroll" >"$work/node.log" 2>&1 &
pid=$!
# The node saves state as it stops (SIGTERM): wait for it, or rm races its writes.
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' localhost:18290/ready)" = 200 ] && break
    sleep 0.05
done
python3 benches/watch_bench.py 18290 18291 "${WATCHES:-1000}" "${WRITES:-200000}"
