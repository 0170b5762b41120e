#!/usr/bin/env bash
# Every row of the performance table in one run, each side by side with its baseline on this
# machine, printed as one table of ratios (markdown). Runs the scripts next to it:
# redis_bench.sh (RESP vs redis-server, plain and appendfsync always), http_get.sh (vs an axum
# hello world), http_put.sh (vs durable redis SET), cluster_reads.sh (proxied vs local),
# the criterion apply bench with a plugin condition, and memory.sh (1M records).
#
#   benches/compare.sh      # needs wrk, redis-tools, redis-server, python3; ~25 minutes
# Env: SKIP="memory plugin ..." leaves rows out (redis, http_get, http_put, cluster, plugin, memory).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firescroll/bench-target}"
# Each script's whole output stays here for a look at the numbers behind a ratio.
out="$CARGO_TARGET_DIR/compare-last"
rm -rf "$out" && mkdir -p "$out"
skip() { [[ " ${SKIP:-} " == *" $1 "* ]]; }
run() {  # name script... : runs it, keeps its output, says where it failed
    local name=$1; shift
    if skip "$name"; then return; fi
    echo "running $name: $*" >&2
    "$@" >"$out/$name" 2>&1 || { echo "$name failed:" >&2; tail -20 "$out/$name" >&2; }
}
run redis benches/redis_bench.sh
run http_get benches/http_get.sh
run http_put benches/http_put.sh
run cluster benches/cluster_reads.sh
if ! skip plugin; then
    if [ -f plugins/dist/semver-gate.wasm ] ||
        scripts/build-plugins.sh >"$out/plugins-build" 2>&1; then
        # With apply without a plugin beside it: the absolute rate moves with the machine's
        # speed that day (the same build measured 40k and 130k on different days), the ratio less.
        run plugin cargo bench -p firescroll-benches --bench apply -- \
            'apply/batch_of_1024_(single_op_puts|puts_with_if_plugin)$'
    fi
fi
run memory benches/memory.sh

ratio() {  # redis_bench row label -> its ratio column
    [ -f "$out/redis" ] || { echo "n/a"; return; }
    # The ratio of the median round, then the lowest-highest of all rounds.
    awk -v row="$1" '{ label = substr($0, 1, 24); sub(/ +$/, "", label); if (label == row) r = $(NF - 1) "x (" $NF ")" }
        END { print (r == "" ? "n/a" : r) }' "$out/redis"
}
thrpt() {  # criterion bench name -> its throughput estimate in the plugin run, elements/s
    [ -f "$out/plugin" ] || return 0
    awk -v name="$1" '$1 == name { seen = 1 }
        seen && $1 == "thrpt:" { v = $4; u = $5; print v * (u ~ /^M/ ? 1e6 : u ~ /^K/ ? 1e3 : 1); exit }' "$out/plugin"
}
plugin_row() {
    local with without
    with=$(thrpt apply/batch_of_1024_puts_with_if_plugin)
    without=$(thrpt apply/batch_of_1024_single_op_puts)
    [ -n "$with" ] || { echo "n/a"; return; }
    if [ -n "$without" ]; then
        awk -v a="$with" -v b="$without" 'BEGIN { printf "%.0fk entries/s (%.2fx apply without a plugin, %.0fk/s, same run)", a / 1e3, a / b, b / 1e3 }'
    else
        awk -v a="$with" 'BEGIN { printf "%.0fk entries/s", a / 1e3 }'
    fi
}
grab() {  # file regex -> the first capture of the last line it matches
    [ -f "$out/$1" ] || { echo "n/a"; return; }
    sed -nE "s/^.*$2.*$/\1/p" "$out/$1" | tail -1 | grep . || echo "n/a"
}
echo
echo "Each script's output: $out"
echo
echo "| measure | result | goal |"
echo "|---|---|---|"
if ! skip redis; then
    for row in "SET -c50" "HSET -c50" "SET -c50 -P16" "HSET -c50 -P16" "INCR -c50" "INCR -c50 -P16"; do
        echo "| RESP \`$row\` vs durable redis-server | $(ratio "$row") | ≥ 1.0x |"
    done
    for row in "GET -c50" "GET -c50 -P16" "HGET -c50" "HGET -c50 -P16"; do
        echo "| RESP \`$row\` vs redis-server | $(ratio "$row") | ≥ 1.0x |"
    done
    # Not a goal of the issue: what readers see of a write burst, for the record.
    echo "| RESP \`GET -c30\` beside pipelined SETs (-c20 -P16) vs durable redis-server under the same load | $(ratio "GET -c30 beside SETs") | — |"
fi
skip http_get || echo "| HTTP get vs axum hello world | $(grab http_get 'throughput: ([0-9.]+)')x ($(grab http_get 'pairs, ([0-9.]+-[0-9.]+)')) | ≥ 0.9x |"
skip http_put || echo "| HTTP put (one record, wait false) vs durable redis SET | $(grab http_put 'ratio: ([0-9.]+)x')x ($(grab http_put 'pairs, ([0-9.]+-[0-9.]+)')) | ≥ 0.5x |"
skip cluster || echo "| proxied get vs local get (HTTP, Redis) | $(grab cluster 'throughput: (HTTP [0-9.]+, Redis [0-9.]+)') | ≥ 0.8x |"
skip plugin || echo "| apply with a plugin condition | $(plugin_row) | ≥ 200k entries/s |"
skip memory || echo "| RSS with 1M small records, loaded / after restart | $(grab memory 'loaded [0-9]+ records: (RSS [0-9]+ MB), .*') / $(grab memory 'after a restart: (RSS [0-9]+ MB), .*') (read index $(grab memory 'read index ([0-9]+ MB)')) | < 200 MB |"
