#!/usr/bin/env bash
# One-record HTTP puts (`wait` false: answered once the entry is durable in the embedded log)
# against redis-server's SET with `appendonly yes, appendfsync always` (the same promise: an
# acknowledged write is on disk), side by side on this machine, as a ratio. Issue 17's row
# "HTTP put vs durable redis SET".
#
#   benches/http_put.sh        # needs wrk, redis-server, redis-benchmark (apt-get install wrk redis-server redis-tools)
# Runs ROUNDS pairs, alternating which server goes first, and prints every pair and the median
# ratio with the range (this machine is shared: one pair can be off by a third).
# Env: DURATION (10s), CONNECTIONS (50), REQUESTS (200000, redis-benchmark's -n), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
export DURATION="${DURATION:-10s}"
export CONNECTIONS="${CONNECTIONS:-50}"
REQUESTS="${REQUESTS:-200000}"
ROUNDS="${ROUNDS:-3}"
for tool in wrk redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install wrk redis-server redis-tools" >&2; exit 1; }
done
cargo build --release -q -p firescroll
BIN="$CARGO_TARGET_DIR/release/firescroll"
. benches/ports.sh
ports_free 18290 18291 18292 18293
work=$(mktemp -d)
pids=()
# The nodes save state as they stop (SIGTERM): wait for them, or rm races their writes.
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

DB_PATH="$work/data" API_PORT=18290 INTERNAL_PORT=18291 RESP_PORT=18292 LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn \
    "$BIN" >"$work/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:18290/ready >/dev/null && break; sleep 0.1; done
kill -0 "${pids[-1]}" 2>/dev/null || { echo "firescroll did not start:" >&2; cat "$work/node.log" >&2; exit 1; }
mkdir -p "$work/redis"
redis-server --port 18293 --save '' --appendonly yes --appendfsync always --dir "$work/redis" \
    --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p 18293 ping >/dev/null 2>&1 && break; sleep 0.1; done

puts() {  # -> "req/s p99" of one wrk run of one-record puts
    local out non2xx
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/wrk/put.lua http://127.0.0.1:18290/records/put)
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [ -z "$non2xx" ] || { echo "wrk saw $non2xx failed puts:" >&2; echo "$out" >&2; exit 1; }
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
sets() {  # -> ops/s of one redis-benchmark run of SETs
    redis-benchmark -p 18293 -t set -c "$CONNECTIONS" -n "$REQUESTS" -r 1000000 -d 40 -q |
        awk '/SET/ {for (i = 1; i <= NF; i++) if ($i ~ /requests/) print $(i-1)}' | tr -d ','
}
rounds=()
for round in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first, so neither always meets the machine warmer.
    # Plain assignments, so that a failed run (puts exits 1 on failed requests) stops the script.
    if ((round % 2)); then
        put=$(puts)
        set_ops=$(sets)
    else
        set_ops=$(sets)
        put=$(puts)
    fi
    rounds+=("$put $set_ops")
done

python3 - "$CONNECTIONS" "${rounds[@]}" <<'PY'
import sys
connections, rounds = sys.argv[1], [r.split() for r in sys.argv[2:]]
ratios = []
for i, (puts, p99, sets) in enumerate(rounds, 1):
    ratios.append(float(puts) / float(sets))
    print(f"round {i}: HTTP put, one record, wait false (wrk -c{connections}): {float(puts):,.0f} req/s (p99 {p99}); "
          f"redis-server SET, appendfsync always (redis-benchmark): {float(sets):,.0f} ops/s; {ratios[-1]:.2f}x")
ordered = sorted(ratios)
print(f"ratio: {ordered[(len(ordered) - 1) // 2]:.2f}x (median of {len(ordered)} pairs, {ordered[0]:.2f}-{ordered[-1]:.2f})")
PY
