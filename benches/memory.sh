#!/usr/bin/env bash
# Memory: one release node on the embedded log loads RECORDS small records (1,000 per
# /records/put, 4 writers), then reports its RSS, the read index's size, and the data directory's
# size on disk; then it restarts on the same data and reports its RSS again.
#
#   benches/memory.sh        # RECORDS=1000000
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
RECORDS="${RECORDS:-1000000}"
# FIRESCROLL_BIN measures another build (A/B) instead of building this tree.
if [ -z "${FIRESCROLL_BIN:-}" ]; then cargo build --release -q -p firescroll; fi
bin="${FIRESCROLL_BIN:-$CARGO_TARGET_DIR/release/firescroll}"
. benches/ports.sh
ports_free 18390 18391 18479
work=$(mktemp -d)
pid=
# The node saves state as it stops (SIGTERM): wait for it, or rm races its writes.
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
start() {
    DB_PATH="$work/data" API_PORT=18390 INTERNAL_PORT=18391 RESP_PORT=18479 LOG_LEVEL=warn \
        "$bin" >>"$work/node.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' localhost:18390/ready)" = 200 ] && return
        sleep 0.05
    done
    echo "the node did not start:" >&2; cat "$work/node.log" >&2; exit 1
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status"; }
report() {
    local index
    index=$(curl -s localhost:18391/metrics |
        awk '/^firescroll_read_index_bytes\{/ {s += $2} END {printf "%.0f", s / 1048576}')
    echo "$1: RSS ${2} MB, read index ${index:-?} MB, disk $(du -sm "$work/data" | cut -f1) MB"
}
start
python3 - "$RECORDS" <<'PY'
import json, sys, threading, urllib.request
n = int(sys.argv[1])
def writer(w):
    for b in range(w, n // 1000, 4):
        records = [{"pk": f"user:{b * 1000 + i:08d}", "sk": "", "data": {"plan": "pro", "n": b * 1000 + i}}
                   for i in range(1000)]
        body = json.dumps({"Records": records, "wait": b % 50 == 0}).encode()
        urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18390/records/put", data=body)).read()
threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
PY
# Every record applied: the last one is readable.
last=$(printf 'user:%08d' $((RECORDS - 1)))
for _ in $(seq 1 600); do
    curl -s -X POST localhost:18390/records/get -d "{\"Records\":[{\"pk\":\"$last\",\"sk\":\"\"}]}" | grep -q '"Pk"' && break
    sleep 0.1
done
sleep 2
report "loaded $RECORDS records" "$(rss_mb)"
kill "$pid"; wait "$pid" 2>/dev/null || true
start
sleep 2
report "after a restart" "$(rss_mb)"
