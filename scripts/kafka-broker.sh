#!/usr/bin/env bash
# Install (once) and run a local Kafka-protocol broker: nisshi (née tansu) from crates.io,
# SQLite storage (persistent), loopback only. Used by the tests (which start their own brokers
# from the installed binary) and by scripts/cluster.sh.
#
#   scripts/kafka-broker.sh install   # cargo install, skipped if the binary is already there
#   scripts/kafka-broker.sh bin       # print the binary's path
#   scripts/kafka-broker.sh start     # start on 127.0.0.1:$KAFKA_PORT, wait until it accepts TCP
#   scripts/kafka-broker.sh stop      # SIGTERM by PID (clean shutdown, SQLite WAL checkpointed)
#   scripts/kafka-broker.sh status
#
# Env: NISSHI_VERSION (0.8.1), NISSHI_ROOT (install root), KAFKA_DATA_DIR, KAFKA_PORT (9092),
#      GROUP_INITIAL_REBALANCE_DELAY (0s; broker default is 3s)
set -euo pipefail

NISSHI_VERSION=${NISSHI_VERSION:-0.8.1}
NISSHI_ROOT=${NISSHI_ROOT:-$HOME/.cache/nisshi-$NISSHI_VERSION}
DATA_DIR=${KAFKA_DATA_DIR:-/tmp/nisshi-data}
PORT=${KAFKA_PORT:-9092}
DELAY=${GROUP_INITIAL_REBALANCE_DELAY:-0s}
BIN=$NISSHI_ROOT/bin/nisshi

case "${1:-}" in
install)
    if [ -x "$BIN" ]; then
        echo "nisshi already installed: $("$BIN" --version)"
    else
        # --ignore-rust-version: nisshi 0.8.1's lockfile pins rama 0.4.0, which declares
        # rust-version 1.96 but builds fine with rustc 1.95 (verified).
        cargo install "nisshi@$NISSHI_VERSION" --locked --ignore-rust-version \
            --no-default-features --features libsql --root "$NISSHI_ROOT"
    fi
    ;;
bin)
    echo "$BIN"
    ;;
start)
    [ -x "$BIN" ] || { echo "nisshi is not installed: run $0 install" >&2; exit 1; }
    mkdir -p "$DATA_DIR"
    cd "$DATA_DIR"   # sqlite://nisshi.db is resolved relative to the working directory
    setsid nohup "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine sqlite://nisshi.db \
        --group-initial-rebalance-delay "$DELAY" \
        >>broker.log 2>&1 &
    echo $! >broker.pid
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "nisshi up on 127.0.0.1:$PORT (pid $(cat broker.pid), data $DATA_DIR)"
            exit 0
        fi
        sleep 0.1
    done
    echo "nisshi did not start:" >&2
    cat broker.log >&2
    exit 1
    ;;
stop)
    if [ -f "$DATA_DIR/broker.pid" ]; then
        pid=$(cat "$DATA_DIR/broker.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$DATA_DIR/broker.pid"
        echo "nisshi stopped (pid $pid)"
    fi
    ;;
status)
    if [ -f "$DATA_DIR/broker.pid" ] && kill -0 "$(cat "$DATA_DIR/broker.pid")" 2>/dev/null; then
        echo "running (pid $(cat "$DATA_DIR/broker.pid"))"
    else
        echo "not running"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 install|bin|start|stop|status" >&2
    exit 2
    ;;
esac
