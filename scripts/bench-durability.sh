#!/usr/bin/env bash
# Durable-log benchmarks (PERF.md, "Durable log"): QoS 1 p2p throughput in each durability
# mode, with clean and with persistent subscribers, and recovery time with a large queue.
#
#   scripts/bench-durability.sh [--rounds N] [--duration S] [--recovery MESSAGES]
#
# Broker on core 0 (one shard), generator on core 1, data directory under $TMPDIR (a real
# disk: the flush latency is part of what is measured). Prints one line per run:
#   MODE SUBS out_msgs_per_s  journal-counters...
# --recovery N (e.g. 1000000): after the matrix, fill 100 offline sessions with N QoS 1
# messages (process mode), kill -9 the broker and time the restart until it listens.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
ROUNDS=3 DURATION=5 RECOVERY=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --recovery) RECOVERY=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -x $BIN/ringmq && -x $BIN/ringmq-bench ]] || (cd "$ROOT" && cargo build --release --bins)

start_broker() { # port dir args...
    local port=$1 dir=$2; shift 2
    taskset -c 0 "$BIN/ringmq" --shards 1 --listen "127.0.0.1:$port" --data-dir "$dir" \
        --log-level info "$@" >/dev/null 2>"$dir.err" &
    BP=$!
    for _ in $(seq 100); do grep -q accepting "$dir.err" 2>/dev/null && return; sleep 0.1; done
}

for ((r = 1; r <= ROUNDS; r++)); do
    for mode in none process batch always; do
        for subs in clean persistent; do
            port=$((20000 + RANDOM % 10000)); dir=$(mktemp -d)
            start_broker "$port" "$dir" --durability "$mode"
            extra=(); [[ $subs == persistent ]] && extra=(--persistent)
            out=$(taskset -c 1 "$BIN/ringmq-bench" p2p --pubs 100 --qos 1 --duration "$DURATION" \
                "${extra[@]}" --port "$port" --json | tail -1 |
                python3 -c 'import json,sys; print(int(json.load(sys.stdin)["out_msgs_per_s"]))')
            kill "$BP"; wait "$BP" 2>/dev/null || true
            counters=$(grep -h "journal counters" "$dir.err" | sed 's/.*journal counters//' || true)
            echo "$mode $subs $out $counters"
            rm -rf "$dir" "$dir.err"
        done
    done
done

if [[ $RECOVERY -gt 0 ]]; then
    port=$((20000 + RANDOM % 10000)); dir=$(mktemp -d)
    args=(--durability process --max-queued-messages $(( (RECOVERY + 99) / 100 )))
    start_broker "$port" "$dir" "${args[@]}"
    taskset -c 1 "$BIN/ringmq-bench" backlog --pubs 100 --messages "$RECOVERY" --qos 1 \
        --hold-offline --duration 120 --port "$port" --json >/dev/null || true
    kill -9 "$BP"; wait "$BP" 2>/dev/null || true
    echo "log on disk: $(du -sh "$dir/journal" | cut -f1)"
    t0=$(date +%s.%N)
    start_broker "$port" "$dir" "${args[@]}"
    t1=$(date +%s.%N)
    echo "recovery of $RECOVERY queued messages: listening after $(echo "$t1 - $t0" | bc) s"
    grep -h "journal: recovered" "$dir.err" | sed 's/.*journal: //'
    kill "$BP"; wait "$BP" 2>/dev/null || true
    rm -rf "$dir" "$dir.err"
fi
