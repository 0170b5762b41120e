#!/usr/bin/env bash
# HTTP get throughput: FireScroll vs an axum hello-world baseline, same machine, same wrk run shape.
#
#   benches/http_get.sh            # needs wrk (apt-get install wrk) and python3
#
# Starts a release `firescroll` on a fresh data dir, loads RECORDS records, drives
# POST /records/get (one random key per request) with wrk, then does the same against the
# baseline (benches/src/bin/hello.rs), and prints both and their ratio.
# Runs ROUNDS pairs, alternating which server goes first, and prints every pair and the median
# ratio (this machine is shared: one pair can be off by a quarter).
# Env: RECORDS (100000), DURATION (10s), CONNECTIONS (50), THREADS (1), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
export RECORDS="${RECORDS:-100000}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-3}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build --release -q -p firescroll -p firescroll-benches --bins
BIN="$CARGO_TARGET_DIR/release"
. benches/ports.sh
ports_free 18190 18191 18192 18193
work=$(mktemp -d)
pids=()
# The nodes save state as they stop (SIGTERM): wait for them, or rm races their writes.
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_up() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" -X POST -d '{"Records":[{"pk":"x"}]}' && return 0; sleep 0.05; done; echo "server at $1 did not start" >&2; exit 1; }

DB_PATH="$work/data" API_PORT=18190 INTERNAL_PORT=18191 RESP_PORT=18192 LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn \
    "$BIN/firescroll" >"$work/node.log" 2>&1 &
pids+=($!)
wait_up http://127.0.0.1:18190/records/get
# Something else on the port would answer instead of this node: refuse to measure it.
kill -0 "${pids[0]}" 2>/dev/null || { echo "firescroll did not start:" >&2; cat "$work/node.log" >&2; exit 1; }
python3 benches/load.py http://127.0.0.1:18190

"$BIN/hello" 18193 &
pids+=($!)
wait_up http://127.0.0.1:18193/records/get

run() {  # name url
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/wrk/get.lua "$2")
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "$1 $rps $p50 $p99"
}
# Warm both up, then measure.
wrk -t1 -c10 -d2s -s benches/wrk/get.lua http://127.0.0.1:18190/records/get >/dev/null
wrk -t1 -c10 -d2s -s benches/wrk/get.lua http://127.0.0.1:18193/records/get >/dev/null
echo
printf '%-6s %-12s %12s %10s %10s\n' round server req/s p50 p99
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first, so neither always meets the machine warmer.
    if ((round % 2)); then
        fs=$(run firescroll http://127.0.0.1:18190/records/get)
        hello=$(run hello-world http://127.0.0.1:18193/records/get)
    else
        hello=$(run hello-world http://127.0.0.1:18193/records/get)
        fs=$(run firescroll http://127.0.0.1:18190/records/get)
    fi
    printf '%-6s %-12s %12s %10s %10s\n' "$round" $fs
    printf '%-6s %-12s %12s %10s %10s\n' "$round" $hello
    ratios+=("$(awk -v a="$(cut -d' ' -f2 <<<"$fs")" -v b="$(cut -d' ' -f2 <<<"$hello")" 'BEGIN { printf "%.2f", a / b }')")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 }
    END { printf "firescroll / hello-world throughput: %s (median of %d pairs, %s-%s)\n", r[int((NR + 1) / 2)], NR, r[1], r[NR] }'
