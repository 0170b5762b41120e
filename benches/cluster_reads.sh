#!/usr/bin/env bash
# Proxied vs local reads in one region, in the same run: two gossiping nodes in one replica group
# on a real Kafka-protocol broker split the partitions; node A is read (HTTP with wrk, Redis with
# redis-benchmark) for a key it serves itself and for a key only node B serves. Then B is killed
# with kill -9 and the script measures how long until A answers every key again.
#
#   benches/cluster_reads.sh      # needs wrk, redis-tools, python3; installs the broker if missing
# Env: DURATION (10s), CONNECTIONS (50), REQUESTS (100000); FIRESCROLL_BIN measures another build
# (A/B) instead of building this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-50}"
REQUESTS="${REQUESTS:-100000}"
for tool in wrk redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install wrk redis-tools)" >&2; exit 1; }
done
scripts/kafka-broker.sh install >/dev/null
if [ -z "${FIRESCROLL_BIN:-}" ]; then cargo build --release -q -p firescroll; fi
BIN="${FIRESCROLL_BIN:-$CARGO_TARGET_DIR/release/firescroll}"
. benches/ports.sh
ports_free 19192 18190 18191 18192 18193 18290 18291 18292 18293
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/broker"
(cd "$work/broker" && exec "$(cd - >/dev/null && scripts/kafka-broker.sh bin)" broker \
    --listener-url tcp://127.0.0.1:19192 --advertised-listener-url tcp://127.0.0.1:19192 \
    --storage-engine sqlite://nisshi.db --group-initial-rebalance-delay 0s) >"$work/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/19192) 2>/dev/null && break; sleep 0.1; done

start_node() {  # name api-port
    local name=$1 port=$2
    env DB_PATH="$work/$name" API_PORT="$port" INTERNAL_PORT=$((port + 1)) GOSSIP_PORT=$((port + 2)) \
        RESP_PORT=$((port + 3)) LISTEN_ADDR=127.0.0.1 ADVERTISE_ADDR=127.0.0.1 GOSSIP_PEERS=127.0.0.1:18192 \
        KAFKA_SEEDS=127.0.0.1:19192 NAMESPACE=bench REPLICA_GROUP=rg INSTANCE_ID="$name" PARTITIONS=4 \
        KAFKA_SESSION_MS=2000 KAFKA_HEARTBEAT_MS=300 LOG_LEVEL=warn "$BIN" >"$work/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$work/$name.pid"
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/ready" >/dev/null && kill -0 "${pids[-1]}" 2>/dev/null && return
        sleep 0.1
    done
    echo "$name did not become ready:" >&2; cat "$work/$name.log" >&2; exit 1
}
start_node a 18190
start_node b 18290

# Wait until both serve partitions and each knows the other's, then pick the keys.
python3 - "$work" <<'PY'
import json, sys, time, urllib.request
work = sys.argv[1]
def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
        return json.load(r)
deadline = time.time() + 60
while True:
    views = [call(f"http://127.0.0.1:{p}/debug/cluster") for p in (18191, 18291)]
    maps = [v["partition_owners"] for v in views]
    if len(maps[0]) == 4 and maps[0] == maps[1] and all(len(o) == 1 for o in maps[0].values()):
        owned_a = {int(p) for p, o in maps[0].items() if o == ["a"]}
        if owned_a and len(owned_a) < 4:
            break
    if time.time() > deadline:
        sys.exit(f"the partition map did not settle: {maps}")
    time.sleep(0.2)
local = remote = None
keys = []
for i in range(400):
    pk = f"key-{i}"
    reply = call("http://127.0.0.1:18190/records/put",
                 {"Records": [{"pk": pk, "sk": "s", "data": {"v": i, "enabled": True}}], "wait": True})
    partition = reply["Positions"][0]["Partition"]
    keys.append({"pk": pk, "sk": "s"})
    if partition in owned_a and local is None:
        local = pk
    if partition not in owned_a and remote is None:
        remote = pk
open(f"{work}/keys.json", "w").write(json.dumps(keys))
open(f"{work}/local", "w").write(local)
open(f"{work}/remote", "w").write(remote)
PY
LOCAL=$(cat "$work/local"); REMOTE=$(cat "$work/remote")

http() {  # key -> "rps p50 p99"
    local out
    out=$(KEY=$1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/wrk/get_key.lua "http://127.0.0.1:18190/records/get")
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
resp() {  # key -> "rps p50 p99"
    redis-benchmark -p 18193 -c "$CONNECTIONS" -n "$REQUESTS" --csv HGET "$1" s 2>/dev/null |
        awk -F'"' 'NR==2 {print $4, $10"ms", $14"ms"}'
}
printf '%-28s %12s %10s %10s\n' "read on node a" "req/s" p50 p99
read -r r1 a1 b1 <<<"$(http "$LOCAL")";  printf '%-28s %12s %10s %10s\n' "HTTP get, local key" "$r1" "$a1" "$b1"
read -r r2 a2 b2 <<<"$(http "$REMOTE")"; printf '%-28s %12s %10s %10s\n' "HTTP get, proxied key" "$r2" "$a2" "$b2"
read -r r3 a3 b3 <<<"$(resp "$LOCAL")";  printf '%-28s %12s %10s %10s\n' "Redis HGET, local key" "$r3" "$a3" "$b3"
read -r r4 a4 b4 <<<"$(resp "$REMOTE")"; printf '%-28s %12s %10s %10s\n' "Redis HGET, proxied key" "$r4" "$a4" "$b4"
awk -v a="$r2" -v b="$r1" -v c="$r4" -v d="$r3" 'BEGIN{printf "proxied/local throughput: HTTP %.2f, Redis %.2f\n", a/b, c/d}'

# Unloaded latency: one client, one request at a time, keep-alive.
python3 - "$LOCAL" "$REMOTE" <<'PY'
import http.client, json, sys, time
for label, key in (("local", sys.argv[1]), ("proxied", sys.argv[2])):
    conn = http.client.HTTPConnection("127.0.0.1", 18190)
    body = json.dumps({"Records": [{"pk": key, "sk": "s"}]})
    lat = []
    for _ in range(3000):
        t = time.perf_counter()
        conn.request("POST", "/records/get", body=body, headers={"content-type": "application/json"})
        conn.getresponse().read()
        lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"one client, HTTP get, {label:8} key: p50 {lat[len(lat) // 2] * 1e6:.0f} us, p99 {lat[int(len(lat) * 0.99)] * 1e6:.0f} us")
PY

# Death of b: how long until a answers every key again (b's partitions move to a).
python3 - "$work" "$(cat "$work/b.pid")" <<'PY'
import json, os, signal, sys, time, urllib.request, urllib.error
work, pid = sys.argv[1], int(sys.argv[2])
keys = json.load(open(f"{work}/keys.json"))
def get():
    req = urllib.request.Request("http://127.0.0.1:18190/records/get", data=json.dumps({"Records": keys}).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, len(json.load(r)["Records"])
    except urllib.error.HTTPError as e:
        return e.code, 0
assert get() == (200, len(keys))
os.kill(pid, signal.SIGKILL)
t0 = time.time()
errors = 0
while True:
    status, n = get()
    if status == 200:
        assert n == len(keys), f"partial answer: {n} of {len(keys)}"
        break
    errors += 1
    time.sleep(0.02)
print(f"kill -9 of b -> every key readable on a again: {time.time() - t0:.2f} s ({errors} 503s meanwhile; KAFKA_SESSION_MS=2000)")
PY
