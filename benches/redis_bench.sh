#!/usr/bin/env bash
# Redis protocol throughput: redis-benchmark against FireScroll and against redis-server on the same
# machine, same parameters, keys preloaded in both (redis-cli --pipe). Prints ops/s, p50, p99, ratios.
# Reads are compared with a plain redis-server; writes with one running `appendonly yes,
# appendfsync always` — the same promise FireScroll makes: an acknowledged write is on disk.
#
#   benches/redis_bench.sh       # needs redis-tools and redis-server (apt-get install redis-tools redis-server)
# The last row reads while another redis-benchmark writes pipelined SETs (-c20 -P16) to the same
# server: what a reader sees of a write burst (against the durable redis-server, whose writes
# make the same promise).
# Each row runs ROUNDS times, alternating which server goes first, and prints the round with the
# median ratio, and the lowest and highest ratio (this machine is shared: one pair can be off by
# a third).
# Env: KEYS (100000), REQUESTS (300000), CLIENTS (50), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
KEYS="${KEYS:-100000}"
REQUESTS="${REQUESTS:-300000}"
CLIENTS="${CLIENTS:-50}"
ROUNDS="${ROUNDS:-3}"
for tool in redis-benchmark redis-cli redis-server; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install redis-tools redis-server" >&2; exit 1; }
done
cargo build --release -q -p firescroll
work=$(mktemp -d)
pids=()
# The nodes save state as they stop (SIGTERM): wait for them, or rm races their writes.
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

FS=17379; RS=17380; RD=17381
. benches/ports.sh
ports_free $FS $RS $RD 17190 17191
DB_PATH="$work/fs" API_PORT=17190 INTERNAL_PORT=17191 RESP_PORT=$FS LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn \
    "$CARGO_TARGET_DIR/release/firescroll" >"$work/fs.log" 2>&1 &
pids+=($!)
redis-server --port $RS --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
mkdir -p "$work/durable"
redis-server --port $RD --save '' --appendonly yes --appendfsync always --dir "$work/durable" \
    --daemonize no >"$work/redis-durable.log" 2>&1 &
pids+=($!)
for port in $FS $RS $RD; do
    for _ in $(seq 1 100); do redis-cli -p $port PING >/dev/null 2>&1 && break; sleep 0.1; done
done
# Something else on a port would answer instead: refuse to measure it.
for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a server did not start:" >&2; cat "$work"/*.log >&2; exit 1; }
done

# redis-benchmark's __rand_int__ is a 12-digit zero-padded number below -r.
python3 - "$KEYS" >"$work/load.txt" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    key = f"key:{i:012d}"
    field = f"field:{i:012d}"
    for parts in (("SET", key, "xxx"), ("HSET", "bench:hash", field, "xxx")):
        sys.stdout.write(f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts))
PY
for port in $FS $RS $RD; do redis-cli -p $port --pipe <"$work/load.txt" | tail -1; done
# FireScroll applies asynchronously: wait until the last key is readable.
last=$(printf 'key:%012d' $((KEYS - 1)))
for _ in $(seq 1 300); do [ -n "$(redis-cli -p $FS GET "$last")" ] && break; sleep 0.1; done

bench() {  # port label args... -> "rps p50 p99"
    local port=$1; shift
    redis-benchmark -p "$port" -c "$CLIENTS" -n "$REQUESTS" -r "$KEYS" --csv "$@" 2>/dev/null |
        awk -F'"' 'NR==2 {print $4, $10, $14}'
}
printf '%-24s %12s %9s %9s %12s %9s %9s %8s %s\n' test fs_ops/s fs_p50 fs_p99 redis_ops/s r_p50 r_p99 ratio range
# Prints a row from lines "ratio fs_ops fs_p50 fs_p99 r_ops r_p50 r_p99" (one per round): the
# round with the median ratio, then the lowest and highest ratio.
median_row() {  # label
    sort -n | awk -v label="$1" '{ line[NR] = $0; r[NR] = $1 }
        END { split(line[int((NR + 1) / 2)], m, " ")
              printf "%-24s %12s %9s %9s %12s %9s %9s %8s %s\n", label, m[2], m[3], m[4], m[5], m[6], m[7], m[1], r[1] "-" r[NR] }'
}
row() {  # against label args...
    local against=$1 label=$2; shift 2
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate who goes first, so neither always meets the machine warmer.
        if ((round % 2)); then
            read -r a50 b50 c50 <<<"$(bench $FS "$@")"
            read -r a b c <<<"$(bench "$against" "$@")"
        else
            read -r a b c <<<"$(bench "$against" "$@")"
            read -r a50 b50 c50 <<<"$(bench $FS "$@")"
        fi
        echo "$(awk -v x="$a50" -v y="$a" 'BEGIN{printf "%.2f", x/y}') $a50 $b50 $c50 $a $b $c"
    done | median_row "$label"
}
echo "# reads, against redis-server"
row $RS "GET -c$CLIENTS" -t get
row $RS "GET -c$CLIENTS -P16" -t get -P 16
row $RS "HGET -c$CLIENTS" HGET bench:hash field:__rand_int__
row $RS "HGET -c$CLIENTS -P16" -P 16 HGET bench:hash field:__rand_int__
echo "# writes, against redis-server with appendfsync always"
row $RD "SET -c$CLIENTS" -t set
row $RD "SET -c$CLIENTS -P16" -t set -P 16
row $RD "HSET -c$CLIENTS" HSET bench:hash field:__rand_int__ xxx
row $RD "HSET -c$CLIENTS -P16" -P 16 HSET bench:hash field:__rand_int__ xxx
row $RD "INCR -c$CLIENTS" -t incr
row $RD "INCR -c$CLIENTS -P16" -t incr -P 16
echo "# reads beside a pipelined write load (SET -c20 -P16), against redis-server with appendfsync always"
mixed() {  # port -> "rps p50 p99" of GET -c30 while SET -c20 -P16 runs
    redis-benchmark -p "$1" -c 20 -n 100000000 -r "$KEYS" -P 16 -t set -q >/dev/null 2>&1 &
    local writer=$!
    sleep 1
    redis-benchmark -p "$1" -c 30 -n "$REQUESTS" -r "$KEYS" --csv -t get 2>/dev/null |
        awk -F'"' 'NR==2 {print $4, $10, $14}'
    kill "$writer" 2>/dev/null || true
    wait "$writer" 2>/dev/null || true
}
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
        read -r a50 b50 c50 <<<"$(mixed $FS)"
        read -r a b c <<<"$(mixed $RD)"
    else
        read -r a b c <<<"$(mixed $RD)"
        read -r a50 b50 c50 <<<"$(mixed $FS)"
    fi
    echo "$(awk -v x="$a50" -v y="$a" 'BEGIN{printf "%.2f", x/y}') $a50 $b50 $c50 $a $b $c"
done | median_row "GET -c30 beside SETs"
