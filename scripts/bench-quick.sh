#!/usr/bin/env bash
# Quick end-to-end benchmark: every ringmq-bench scenario, briefly, against a fresh ringmq.
#
# Builds release, then for each scenario starts `ringmq --shards 1` pinned to core 0 (a
# fresh broker per scenario, so one run's backlog or memory never colours the next) and
# runs the generator pinned to core 1. Prints one JSON line per scenario; exits non-zero if
# any run failed its delivery check or could not be set up. Bounded: well under 3 minutes.
#
# usage: scripts/bench-quick.sh [--no-build]
# env:   CARGO_TARGET_DIR (default: target), BROKER_CORE (0), BENCH_CORE (1), PORT (random)
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
BROKER_CORE=${BROKER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
PORT=${PORT:-$((20000 + RANDOM % 10000))}

if [[ ${1:-} != --no-build ]]; then
    cargo build --release --bin ringmq --bin ringmq-bench >&2
fi
BROKER_BIN=$TARGET/release/ringmq
BENCH_BIN=$TARGET/release/ringmq-bench

DATA=$(mktemp -d)
BROKER_PID=
stop_broker() {
    if [[ -n $BROKER_PID ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
cleanup() {
    stop_broker
    rm -rf "$DATA"
}
trap cleanup EXIT

start_broker() {
    rm -rf "${DATA:?}"/*
    taskset -c "$BROKER_CORE" "$BROKER_BIN" --shards 1 --listen "127.0.0.1:$PORT" \
        --data-dir "$DATA" --log-level warn >"$DATA.out" 2>"$DATA.err" &
    BROKER_PID=$!
    for _ in $(seq 100); do
        grep -q "listening" "$DATA.out" 2>/dev/null && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "ringmq did not start:" >&2
    cat "$DATA.err" >&2
    exit 2
}

failed=0
run() {
    start_broker
    local rc=0
    timeout 60 taskset -c "$BENCH_CORE" "$BENCH_BIN" "$@" --port "$PORT" \
        --broker-pid "$BROKER_PID" --json || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "# FAILED (exit $rc): ringmq-bench $*" >&2
        failed=1
    fi
    stop_broker
}

run conn --conns 10000 --duration 2
run p2p --pubs 100 --qos 1 --duration 3
run fanin --pubs 100 --subs 1 --qos 0 --rate 1000 --duration 3
run fanin --pubs 100 --subs 1 --qos 1 --rate 200 --duration 3
run fanout --pubs 1 --subs 100 --qos 0 --duration 3
run fanout --pubs 1 --subs 100 --qos 1 --duration 3
run fanout --pubs 1 --subs 100 --qos 2 --duration 3
run shared --pubs 10 --subs 10 --qos 1 --duration 3
run large --payload 1048576 --subs 10 --qos 1 --inflight 4 --duration 3
run large --payload 8388608 --subs 10 --qos 1 --inflight 2 --duration 3
run backlog --subs 20 --messages 10000 --qos 1
run storm --conns 2000
run slow --pubs 1 --subs 20 --qos 0 --duration 3
run slow --pubs 1 --subs 20 --qos 1 --duration 3
exit $failed
