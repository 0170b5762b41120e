#!/usr/bin/env bash
# S3 snapshots: how fast a node snapshots and restores its partitions, against a real
# S3-compatible server (s3s-fs) on the same machine. Loads RECORDS records (1,000 per put) into
# one node on the embedded log, takes a snapshot of every partition (POST /admin/snapshots),
# then deletes the node's store (keeping its log) and restarts it without S3: it replays the
# log; then deletes the whole data directory and restarts it with S3: it restores from S3.
# Prints records/s and MB/s both ways, the objects' size against the store's, and the restoring
# node's peak RSS.
#
#   benches/snapshot_bench.sh          # RECORDS=1000000
#   FIRESCROLL_BIN=/path/to/firescroll benches/snapshot_bench.sh   # another build (say, an older
#                                                                  # commit's), not built here
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
RECORDS="${RECORDS:-1000000}"
scripts/s3-server.sh install >&2
if [ -z "${FIRESCROLL_BIN:-}" ]; then
    cargo build --release -q -p firescroll
    FIRESCROLL_BIN="$CARGO_TARGET_DIR/release/firescroll"
fi
work=$(mktemp -d)
S3_PORT=18014
export S3_DATA_DIR="$work/s3"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    S3_DATA_DIR="$work/s3" scripts/s3-server.sh stop || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/s3/root/bench"
S3_PORT=$S3_PORT scripts/s3-server.sh start >&2
export S3_BUCKET=bench S3_ENDPOINT=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=testkey AWS_SECRET_ACCESS_KEY=testsecret
# One log segment for everything: the embedded log releases whole applied segments, and the
# replay below needs the log whole.
export LOG_SEGMENT_BYTES=4294967296
export SNAPSHOT_INTERVAL=24h DB_PATH="$work/data" API_PORT=18190 INTERNAL_PORT=18191 RESP_PORT=18379 LOG_LEVEL=warn
start_node() {
    local run=("$FIRESCROLL_BIN")
    [ -n "${NO_S3:-}" ] && run=(env -u S3_BUCKET "${run[@]}")
    "${run[@]}" >>"$work/node.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 3000); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' localhost:18190/ready)" = 200 ] && return 0
        sleep 0.05
    done
    cat "$work/node.log" >&2; exit 1
}
start_node
python3 - "$RECORDS" <<'PY'
import http.client, json, sys
n = int(sys.argv[1]); conn = http.client.HTTPConnection("127.0.0.1", 18190)
for start in range(0, n, 1000):
    records = [{"pk": f"user{i % 50000}", "sk": f"setting{i}", "data": {"enabled": i % 2 == 0, "rollout": i % 100, "owner": "team-edge"}} for i in range(start, min(n, start + 1000))]
    conn.request("POST", "/records/put", json.dumps({"Records": records, "wait": True}), {"Content-Type": "application/json"})
    r = conn.getresponse(); body = r.read()
    assert r.status == 200, body
PY
digests() { curl -s localhost:18191/debug/partitions | python3 -c 'import json,sys; print(sorted((p["partition"], p["applied_offset"], p["digest"]) for p in json.load(sys.stdin)["partitions"]))'; }
before=$(digests)
store_bytes=$(du -sb "$work/data/store" | cut -f1)
t0=$(date +%s.%N)
curl -sf -X POST localhost:18190/admin/snapshots >"$work/taken.json"
t1=$(date +%s.%N)
object_bytes=$(curl -s localhost:18190/admin/snapshots | python3 -c 'import json,sys; print(sum(m["object_bytes"] for m in json.load(sys.stdin)["Snapshots"]))')
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
# The alternative to a snapshot: the store is lost but the log is whole, so the node replays it.
rm -rf "$work/data/store"
# Ready comes before the replay has caught up: the time is until the digests match.
caught_up() {
    for _ in $(seq 1 6000); do
        [ "$before" = "$(digests)" ] && return 0
        sleep 0.05
    done
    echo "digests differ after $1" >&2; exit 1
}
tr0=$(date +%s.%N)
NO_S3=1 start_node
caught_up "the replay"
tr1=$(date +%s.%N)
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
# Disaster: store and log are gone; the node restores from S3.
rm -rf "$work/data"
t2=$(date +%s.%N)
start_node
caught_up "the restore"
t3=$(date +%s.%N)
# The restoring node's peak memory (the read index's budget, READ_INDEX_MAX_BYTES, included).
peak_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/${pids[-1]}/status")
python3 - "$RECORDS" "$t0" "$t1" "$t2" "$t3" "$store_bytes" "$object_bytes" "$tr0" "$tr1" "$peak_kb" <<'PY'
import sys
n, t0, t1, t2, t3, store, obj = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6]), int(sys.argv[7])
tr0, tr1, peak_kb = float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
snap, restore, replay = t1 - t0, t3 - t2, tr1 - tr0
print(f"records            {n:,}")
print(f"store on disk      {store/1e6:.1f} MB; snapshot objects {obj/1e6:.1f} MB ({obj/store:.2f}x)")
print(f"snapshot           {snap:.2f} s: {n/snap:,.0f} records/s, {obj/1e6/snap:.1f} MB/s of objects")
print(f"restore (to caught up) {restore:.2f} s: {n/restore:,.0f} records/s, {obj/1e6/restore:.1f} MB/s of objects")
print(f"replay of the log (to caught up) {replay:.2f} s: {n/replay:,.0f} records/s (restore is {replay/restore:.1f}x faster)")
print(f"restoring node's peak RSS {peak_kb/1024:.0f} MB")
PY
