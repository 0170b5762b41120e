#!/usr/bin/env bash
# A local FireScroll cluster on a real Kafka-protocol broker, in one command.
#
#   scripts/cluster.sh start [N]   # broker on 127.0.0.1:$KAFKA_PORT + N nodes (default 3)
#   scripts/cluster.sh status      # who owns which partitions
#   scripts/cluster.sh stop
#
# Node i (from 0) serves HTTP on 8190+10*i, metrics on 8191+10*i, gossip on 8192+10*i and Redis on
# 6379+i, with data in .cluster/node$i. The nodes gossip (node0 is the seed), so every node answers
# every read: partitions it does not own are read from an owner.
# By default every node is its own replica group, so each holds every partition. REPLICA_GROUPS=1
# puts all nodes in one replica group instead: the partitions are split between them.
# Env: KAFKA_PORT (9092), PARTITIONS (4), NAMESPACE (local), REPLICA_GROUPS (N), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.cluster
export KAFKA_PORT="${KAFKA_PORT:-9092}"
export KAFKA_DATA_DIR="$PWD/$DIR/broker"
PARTITIONS="${PARTITIONS:-4}"
NAMESPACE="${NAMESPACE:-local}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

start() {
    local n="${1:-3}" groups="${REPLICA_GROUPS:-${1:-3}}"
    mkdir -p "$DIR"
    scripts/kafka-broker.sh install
    cargo build --release -p firescroll
    scripts/kafka-broker.sh status >/dev/null 2>&1 || scripts/kafka-broker.sh start
    for i in $(seq 0 $((n - 1))); do
        local api=$((8190 + 10 * i)) internal=$((8191 + 10 * i)) gossip=$((8192 + 10 * i)) resp=$((6379 + i))
        DB_PATH="$DIR/node$i" API_PORT=$api INTERNAL_PORT=$internal RESP_PORT=$resp LISTEN_ADDR=127.0.0.1 \
            GOSSIP_PORT=$gossip ADVERTISE_ADDR=127.0.0.1 GOSSIP_PEERS=127.0.0.1:8192 \
            KAFKA_SEEDS="127.0.0.1:$KAFKA_PORT" NAMESPACE="$NAMESPACE" PARTITIONS="$PARTITIONS" \
            REGION=local REPLICA_GROUP="rg$((i % groups))" INSTANCE_ID="node$i" KAFKA_SESSION_MS=6000 \
            nohup "$TARGET/release/firescroll" >"$DIR/node$i.log" 2>&1 &
        echo $! >"$DIR/node$i.pid"
        echo "node$i: http://127.0.0.1:$api (metrics :$internal, redis :$resp), replica group rg$((i % groups)), log $DIR/node$i.log"
    done
    for i in $(seq 0 $((n - 1))); do
        local api=$((8190 + 10 * i)) ok=""
        for _ in $(seq 1 300); do
            if curl -sf "http://127.0.0.1:$api/ready" >/dev/null; then ok=1; break; fi
            sleep 0.1
        done
        [ -n "$ok" ] || { echo "node$i is not ready; see $DIR/node$i.log" >&2; exit 1; }
    done
    status
}

status() {
    for pid_file in "$DIR"/node*.pid; do
        [ -e "$pid_file" ] || { echo "no nodes"; return; }
        local i="${pid_file//[!0-9]/}" internal
        internal=$((8191 + 10 * i))
        if kill -0 "$(cat "$pid_file")" 2>/dev/null; then
            local owned
            owned=$(curl -sf "http://127.0.0.1:$internal/debug/partitions" |
                python3 -c 'import json,sys; print(" ".join(str(p["partition"]) for p in json.load(sys.stdin)["partitions"]))' 2>/dev/null || echo "?")
            echo "node$i running (pid $(cat "$pid_file")), owns partitions: ${owned:-none}"
        else
            echo "node$i stopped"
        fi
    done
}

stop() {
    for pid_file in "$DIR"/node*.pid; do
        [ -e "$pid_file" ] || continue
        kill "$(cat "$pid_file")" 2>/dev/null || true
        rm -f "$pid_file"
    done
    scripts/kafka-broker.sh stop || true
}

case "${1:-}" in
start) start "${2:-3}" ;;
status) status ;;
stop) stop ;;
*) echo "usage: $0 start [N] | status | stop" >&2; exit 2 ;;
esac
