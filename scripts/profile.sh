#!/usr/bin/env bash
# CPU profile of the ringmq broker under one ringmq-bench scenario, as a flamegraph.
#
#   scripts/profile.sh --out DIR [--no-build] [--broker-core N] [--bench-core N]
#                      [--freq HZ] [--call-graph dwarf|fp] [--tool auto|perf|callgrind]
#                      [--timeout SECS] [--broker-args "..."] -- <scenario> [ringmq-bench args]
#
#   e.g. scripts/profile.sh --out prof/fanin-q1 -- fanin --pubs 100 --qos 1 --duration 10
#
# Builds release (`debug = 1` in Cargo.toml keeps the symbols and line tables that DWARF
# unwinding needs), starts `ringmq --shards 1` pinned to --broker-core (0), runs
# `ringmq-bench <scenario> ... --json` pinned to --bench-core (1) and, for the whole bench run,
# samples the broker process with `perf record --call-graph dwarf` (perf itself runs on the
# bench core). The hardware `cycles` event is used when the CPU exposes it, else the
# `cpu-clock` software timer (VMs).
#
# Output in DIR: flamegraph.svg (inferno), perf.folded (collapsed stacks, diffable with
# inferno-diff-folded), perf-report.txt (top symbols, self time), bench.json (the run's
# summary), broker.log, perf.data, command.txt.
#
# When perf cannot open events at all (or --tool callgrind), the broker runs under
# `valgrind --tool=callgrind` instead (about 50x slower, so the bench --duration is capped at
# 5 s and --rate defaults to 200 msgs/s per publisher) and DIR gets callgrind.out and
# callgrind.txt (callgrind_annotate, inclusive) and callgrind-self.txt (exclusive) instead of
# the flamegraph.
#
# Missing tools are installed: linux-perf / valgrind (apt), inferno (cargo install).
# Bounded: the bench run is killed after --timeout (default: its --duration + 60 s).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=
BUILD=1
BROKER_CORE=0
BENCH_CORE=1
FREQ=999
CALL_GRAPH=dwarf
TOOL=auto
TIMEOUT=
BROKER_ARGS=
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --broker-core) BROKER_CORE=$2; shift ;;
        --bench-core) BENCH_CORE=$2; shift ;;
        --freq) FREQ=$2; shift ;;
        --call-graph) CALL_GRAPH=$2; shift ;;
        --tool) TOOL=$2; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        --broker-args) BROKER_ARGS=$2; shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) break ;;
    esac
    shift
done
[[ -n $OUT && $# -ge 1 ]] || usage
BENCH_ARGS=("$@")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[profile] %s\n' "$*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

arg_value() { # --flag: its value in BENCH_ARGS, or empty
    local i
    for ((i = 0; i < ${#BENCH_ARGS[@]}; i++)); do
        [[ ${BENCH_ARGS[$i]} == "$1" ]] && { echo "${BENCH_ARGS[i + 1]:-}"; return; }
    done
}
set_arg() { # --flag value: replace or append in BENCH_ARGS
    local i
    for ((i = 0; i < ${#BENCH_ARGS[@]}; i++)); do
        [[ ${BENCH_ARGS[$i]} == "$1" ]] && { BENCH_ARGS[i + 1]=$2; return; }
    done
    BENCH_ARGS+=("$1" "$2")
}

# ------------------------------- tools -------------------------------
need_apt() { command -v "$1" >/dev/null || { log "installing $2 (apt)"; timeout 600 apt-get install -y "$2" >&2; }; }

perf_event=
if [[ $TOOL != callgrind ]]; then
    need_apt perf linux-perf
    if command -v perf >/dev/null; then
        if perf stat -e cycles -x, true 2>&1 | grep -q '^[0-9]'; then
            perf_event=cycles
        elif perf stat -e cpu-clock -x, true 2>&1 | grep -q '^[0-9.]'; then
            perf_event=cpu-clock
        fi
    fi
    if [[ -z $perf_event ]]; then
        [[ $TOOL == perf ]] && { log "perf cannot open any event here"; exit 2; }
        log "perf events unavailable: falling back to callgrind"
        TOOL=callgrind
    else
        TOOL=perf
        for t in inferno-collapse-perf inferno-flamegraph; do
            command -v "$t" >/dev/null || [[ -x $HOME/.cargo/bin/$t ]] || {
                log "installing inferno (cargo install)"; timeout 1800 cargo install inferno >&2; break; }
        done
        export PATH=$PATH:$HOME/.cargo/bin
    fi
fi
if [[ $TOOL == callgrind ]]; then
    need_apt valgrind valgrind
    command -v valgrind >/dev/null || { log "no valgrind"; exit 2; }
    dur=$(arg_value --duration)
    if [[ -z $dur || $dur -gt 5 ]]; then set_arg --duration 5; fi
    [[ -n $(arg_value --rate) ]] || set_arg --rate 200
fi

# ------------------------------- build -------------------------------
if [[ $BUILD -eq 1 ]]; then
    log "building release (CARGO_TARGET_DIR=$TARGET)"
    CARGO_TARGET_DIR=$TARGET cargo build --release --bin ringmq --bin ringmq-bench >&2 ||
        { log "build failed"; exit 2; }
fi
RINGMQ=$TARGET/release/ringmq
BENCH=$TARGET/release/ringmq-bench
[[ -x $RINGMQ && -x $BENCH ]] || { log "missing $RINGMQ or $BENCH"; exit 2; }

dur=$(arg_value --duration)
TIMEOUT=${TIMEOUT:-$(( ${dur:-10} + 60 ))}

# ------------------------------- broker -------------------------------
PORT=$((20000 + RANDOM % 20000))
while ss -Hltn "sport = :$PORT" | grep -q LISTEN; do PORT=$((PORT + 1)); done
DATA=$(mktemp -d /tmp/profile-ringmq.XXXXXX)
BROKER_PID='' PERF_PID=''
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    if [[ -n $BROKER_PID ]]; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r -a extra <<<"$BROKER_ARGS"
broker_cmd=("$RINGMQ" --shards 1 --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" --log-level warn "${extra[@]}")
if [[ $TOOL == callgrind ]]; then
    broker_cmd=(valgrind --tool=callgrind "--callgrind-out-file=$OUT/callgrind.out" "${broker_cmd[@]}")
fi
{
    echo "taskset -c $BROKER_CORE ${broker_cmd[*]}"
    echo "taskset -c $BENCH_CORE $BENCH ${BENCH_ARGS[*]} --host 127.0.0.1 --port $PORT --json"
} >"$OUT/command.txt"
taskset -c "$BROKER_CORE" "${broker_cmd[@]}" >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
wait_s=100
[[ $TOOL == callgrind ]] && wait_s=600
for ((i = 0; i < wait_s; i++)); do
    ss -Hltn "sport = :$PORT" | grep -q LISTEN && break
    kill -0 "$BROKER_PID" 2>/dev/null || { log "broker exited:"; tail "$OUT/broker.log" >&2; exit 2; }
    sleep 0.1
done
ss -Hltn "sport = :$PORT" | grep -q LISTEN || { log "broker not listening on $PORT"; exit 2; }

if [[ $TOOL == perf ]]; then
    log "perf record -e $perf_event -F $FREQ --call-graph $CALL_GRAPH -p $BROKER_PID (on CPU $BENCH_CORE)"
    cg=$CALL_GRAPH
    [[ $cg == dwarf ]] && cg=dwarf,16384
    taskset -c "$BENCH_CORE" perf record -e "$perf_event" -F "$FREQ" --call-graph "$cg" \
        -p "$BROKER_PID" -o "$OUT/perf.data" 2>"$OUT/perf-record.log" &
    PERF_PID=$!
    sleep 0.5
fi

log "ringmq-bench ${BENCH_ARGS[*]} (port $PORT, limit ${TIMEOUT}s)"
code=0
timeout --kill-after=5 "$TIMEOUT" taskset -c "$BENCH_CORE" "$BENCH" "${BENCH_ARGS[@]}" \
    --host 127.0.0.1 --port "$PORT" --broker-pid "$BROKER_PID" --json \
    >"$OUT/bench.json" 2>"$OUT/bench.err" || code=$?
log "bench exit $code: $(tail -c 600 "$OUT/bench.json")"

if [[ $TOOL == perf ]]; then
    kill -INT "$PERF_PID" 2>/dev/null
    wait "$PERF_PID" 2>/dev/null
    PERF_PID=
    tail -2 "$OUT/perf-record.log" >&2
    log "folding stacks and drawing the flamegraph"
    # perf script is single-threaded and slow on DWARF data: keep it on the bench core too.
    taskset -c "$BENCH_CORE" perf script -i "$OUT/perf.data" 2>/dev/null |
        inferno-collapse-perf >"$OUT/perf.folded"
    inferno-flamegraph --title "ringmq: ${BENCH_ARGS[*]}" --subtitle "$perf_event @ ${FREQ} Hz, broker on CPU $BROKER_CORE" \
        <"$OUT/perf.folded" >"$OUT/flamegraph.svg"
    perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 \
        2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]|^#' | sed "s/  *-  *-  *$//" | head -60 >"$OUT/perf-report.txt"
    log "top symbols (self):"
    grep -E '^ +[0-9]' "$OUT/perf-report.txt" | head -15 >&2
    echo "$OUT/flamegraph.svg"
else
    # callgrind writes its file when the broker exits: stop it now.
    kill -TERM "$BROKER_PID" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
    outs=("$OUT"/callgrind.out*)
    f=${outs[0]}
    [[ -e $f ]] || { log "callgrind wrote no output"; exit 2; }
    callgrind_annotate --inclusive=yes "$f" 2>/dev/null | head -80 >"$OUT/callgrind.txt"
    callgrind_annotate "$f" 2>/dev/null | head -60 >"$OUT/callgrind-self.txt"
    head -40 "$OUT/callgrind-self.txt" >&2
    echo "$OUT/callgrind.txt"
fi
[[ $code -eq 0 ]] || log "note: the bench run exited $code (see bench.json / bench.err)"
exit 0
