#!/usr/bin/env bash
# Install (once) and run a local S3-compatible server: s3s-fs from crates.io (the snapshot tests
# start their own from this install; `start` is for trying snapshots by hand, see the README).
# Real SigV4 checking, data on disk, starts in milliseconds, loopback only.
#
#   s3-server.sh install | start | stop | status
#
# Env: S3S_VERSION (0.14.1: 0.15+ need rustc 1.96), S3S_ROOT (install root), S3_DATA_DIR,
#      S3_PORT (8014), S3_ACCESS_KEY (testkey), S3_SECRET_KEY (testsecret)
set -euo pipefail
S3S_VERSION=${S3S_VERSION:-0.14.1}
S3S_ROOT=${S3S_ROOT:-$HOME/.cache/s3s-fs-$S3S_VERSION}
DATA_DIR=${S3_DATA_DIR:-/tmp/s3s-data}
PORT=${S3_PORT:-8014}
AK=${S3_ACCESS_KEY:-testkey}
SK=${S3_SECRET_KEY:-testsecret}
BIN=$S3S_ROOT/bin/s3s-fs
case "${1:-}" in
install)
    [ -x "$BIN" ] && { echo "s3s-fs already installed"; exit 0; }
    cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked --root "$S3S_ROOT"
    ;;
start)
    mkdir -p "$DATA_DIR/root"   # the root folder must exist
    setsid nohup "$BIN" --host 127.0.0.1 --port "$PORT" --access-key "$AK" --secret-key "$SK" \
        "$DATA_DIR/root" >>"$DATA_DIR/s3s.log" 2>&1 &
    echo $! >"$DATA_DIR/s3s.pid"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "s3s-fs up on http://127.0.0.1:$PORT (pid $(cat "$DATA_DIR/s3s.pid"))"; exit 0
        fi
        sleep 0.1
    done
    cat "$DATA_DIR/s3s.log" >&2; exit 1
    ;;
stop)
    [ -f "$DATA_DIR/s3s.pid" ] && { kill "$(cat "$DATA_DIR/s3s.pid")" 2>/dev/null || true; rm -f "$DATA_DIR/s3s.pid"; }
    ;;
status)
    [ -f "$DATA_DIR/s3s.pid" ] && kill -0 "$(cat "$DATA_DIR/s3s.pid")" 2>/dev/null && echo running || { echo "not running"; exit 1; }
    ;;
*) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
