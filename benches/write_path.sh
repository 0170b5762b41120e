#!/usr/bin/env bash
# Write path: throughput of single-record puts (wrk), the rate at which the node applies them, and
# write-to-visible latency, on the embedded log and on a real Kafka-protocol broker, in one run.
#
#   benches/write_path.sh          # needs wrk, python3; installs the broker if missing
# Env: DURATION (10s), CONNECTIONS (32), SAMPLES (500).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
SAMPLES="${SAMPLES:-500}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
scripts/kafka-broker.sh install >/dev/null
cargo build --release -q -p firescroll
BIN="$CARGO_TARGET_DIR/release/firescroll"
work=$(mktemp -d)
pids=()
# The nodes save state as they stop (SIGTERM): wait for them, or rm races their writes.
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_broker() {
    mkdir -p "$work/broker"
    (cd "$work/broker" && exec "$(cd - >/dev/null && scripts/kafka-broker.sh bin)" broker \
        --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
        --storage-engine sqlite://nisshi.db --group-initial-rebalance-delay 0s) >"$work/broker.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && return; sleep 0.1; done
    echo "broker did not start" >&2; exit 1
}

start_node() {  # name port extra-env...
    local name=$1 port=$2; shift 2
    env DB_PATH="$work/$name" API_PORT="$port" INTERNAL_PORT=$((port + 1)) RESP_PORT=$((port + 2)) LISTEN_ADDR=127.0.0.1 \
        LOG_LEVEL=warn PARTITIONS=4 "$@" "$BIN" >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$port/ready" >/dev/null; then
            # Something else on the port would answer instead: refuse to measure it.
            kill -0 "${pids[-1]}" 2>/dev/null && return
            break
        fi
        sleep 0.1
    done
    echo "$name did not become ready:" >&2; cat "$work/$name.log" >&2; exit 1
}

lag() {  # internal-port -> total entries not yet applied
    curl -sf "http://127.0.0.1:$1/debug/partitions" |
        python3 -c 'import json,sys; print(sum(p["lag"] or 0 for p in json.load(sys.stdin)["partitions"]))'
}

measure() {  # name port
    local name=$1 port=$2 out rps p50 p99 t0 t1
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/wrk/put.lua "http://127.0.0.1:$port/records/put")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    t0=$(date +%s.%N)
    while [ "$(lag $((port + 1)))" != "0" ]; do sleep 0.05; done
    t1=$(date +%s.%N)
    echo "$name: $rps acknowledged puts/s (p50 $p50, p99 $p99); applied all $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s after the load stopped"
    echo "$name: $(python3 benches/visible.py "http://127.0.0.1:$port" "$SAMPLES")"
}

start_node embedded 18290
measure embedded 18290
start_broker
start_node kafka 18390 KAFKA_SEEDS=127.0.0.1:19092 NAMESPACE=bench INSTANCE_ID=bench-1 KAFKA_SESSION_MS=6000
measure kafka 18390
