#!/usr/bin/env bash
# Side-by-side benchmark: ringmq against Mosquitto 2, rumqttd and NATS (MQTT listener), each
# broker alone on one core, the same ringmq-bench scenarios against each, one comparison table.
#
#   scripts/bench-compare.sh [--peers "ringmq mosquitto rumqttd nats"] [--rows "conn-10k,..."]
#                            [--scenarios FILE] [--sweep NAME]... [--latency-at-half]
#                            [--duration SECS] [--out DIR] [--no-build]
#                            [--no-install] [--broker-core N] [--bench-core N]
#                            [--run-timeout SECS] [--bench-args "ARGS"]
#
# For every peer, and for every scenario row, a FRESH broker is started on loopback pinned to
# --broker-core (taskset -c 0: a multi-threaded peer has all its threads on that one core),
# `ringmq-bench <scenario> ... --json --broker-pid PID` runs pinned to --bench-core (1), and
# the broker is stopped (TERM, then KILL after 5 s) before the next one starts. Every bench
# run is killed after --run-timeout seconds (default: duration + 60).
#
# --latency-at-half: after each message-flow row (not conn, storm or backlog), a second run
# "<row>@half" on a fresh broker at half the throughput this peer just reached: --rate =
# in_msgs_per_s / 2 / publishers (--rate is per publisher; the generator paces per message,
# publishers staggered). Its table rows give p50 / p99 / p99.9 latency at that load.
#
# Peers: ringmq = `target/release/ringmq --shards 1 --max-inflight 100 $RINGMQ_ARGS` (built here
# unless --no-build; the window is rumqttd's fixed outgoing window, given to every peer;
# --ringmq-args, default "--durability none": the peers run without persistence too —
# Mosquitto `persistence false`, rumqttd keeps nothing — so the rows compare like with like;
# pass --ringmq-args "" to measure ringmq's durable default instead);
# mosquitto / nats-server from apt, rumqttd from `cargo install rumqttd` (installed if
# missing, unless --no-install). A peer that cannot be installed or started is skipped with
# a message. Configs: scripts/peers/{mosquitto.conf,rumqttd.toml,nats.conf}, with @PORT@ and
# @DATA@ filled in per run.
#
# Scenario rows: "label|ringmq-bench arguments" lines (see default_rows below, or --scenarios
# FILE with the same format, # comments allowed); --rows picks a subset by label; --duration
# replaces every row's --duration (quick runs). --sweep NAME (repeatable, default off) appends
# the rows of scripts/peers/rows-NAME.txt: `payload` = p2p and fan-out at 20 B (the smallest
# payload: the 20-byte bench header, standing in for 16 B), 256 B, 4 KiB and 64 KiB, plus
# 8 MiB to 100 subscribers at QoS 0 and 1 (10 messages, so memory stays bounded);
# `resilience` = backlog, storm and slow. To run a sweep alone: --scenarios
# scripts/peers/rows-payload.txt. --bench-args (default "--keepalive 60") is added
# to every run: rumqttd refuses keep-alive 0 (ZeroKeepAlive), so every peer gets the same 60 s
# (the runs are shorter than the 90 s after which a silent client may be dropped).
#
# Output (--out DIR, default bench-results/compare-<UTC time>):
#   results.jsonl  one line per (peer, row): the bench's JSON summary plus peer, row, args,
#                  exit code, broker version and whether the broker survived;
#   table.md       the comparison table (also printed): absolute numbers and each value's
#                  ratio to the best peer on that row;
#   logs/          broker and bench stderr per run.
# Exit: 0 when every run produced a summary, 1 otherwise (the table is printed either way).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
PEERS="ringmq mosquitto rumqttd nats"
ROWS=
SCEN_FILE=
DURATION=
OUT=
BUILD=1
INSTALL=1
BROKER_CORE=0
BENCH_CORE=1
RUN_TIMEOUT=
SWEEPS=()
LAT_HALF=0
BENCH_COMMON="--keepalive 60"
RINGMQ_ARGS="--durability none"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

default_rows() {
    cat <<'EOF'
conn-10k|conn --conns 10000 --duration 5
fanin-qos0|fanin --pubs 100 --subs 1 --qos 0 --duration 10
fanout-qos0|fanout --pubs 1 --subs 100 --qos 0 --duration 10
p2p-qos1|p2p --pubs 100 --qos 1 --duration 10
fanin-qos1|fanin --pubs 100 --subs 1 --qos 1 --duration 10
fanin-qos2|fanin --pubs 100 --subs 1 --qos 2 --duration 10
large-1MiB-qos1|large --payload 1048576 --subs 10 --qos 1 --inflight 4 --duration 10
shared-qos1|shared --pubs 10 --subs 10 --qos 1 --duration 10
EOF
}

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --peers) PEERS=$2; shift ;;
        --rows) ROWS=$2; shift ;;
        --scenarios) SCEN_FILE=$2; shift ;;
        --sweep) SWEEPS+=("$2"); shift ;;
        --latency-at-half) LAT_HALF=1 ;;
        --duration) DURATION=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --broker-core) BROKER_CORE=$2; shift ;;
        --bench-core) BENCH_CORE=$2; shift ;;
        --run-timeout) RUN_TIMEOUT=$2; shift ;;
        --bench-args) BENCH_COMMON=$2; shift ;;
        --ringmq-args) RINGMQ_ARGS=$2; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
    shift
done

OUT=${OUT:-bench-results/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
log() { printf '[bench-compare] %s\n' "$*" >&2; }

# One fd per connection on both sides: take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ----------------------------- scenario rows -----------------------------
mapfile -t ALL_ROWS < <(if [[ -n $SCEN_FILE ]]; then grep -v '^\s*\(#\|$\)' "$SCEN_FILE"; else default_rows; fi)
for sw in "${SWEEPS[@]}"; do
    f=$ROOT/scripts/peers/rows-$sw.txt
    [[ -f $f ]] || { log "no sweep '$sw' ($f)"; exit 2; }
    mapfile -t -O "${#ALL_ROWS[@]}" ALL_ROWS < <(grep -v '^\s*\(#\|$\)' "$f")
done
SEL_ROWS=()
for r in "${ALL_ROWS[@]}"; do
    label=${r%%|*}
    if [[ -z $ROWS || ",$ROWS," == *",$label,"* ]]; then SEL_ROWS+=("$r"); fi
done
[[ ${#SEL_ROWS[@]} -gt 0 ]] || { log "no scenario rows selected (--rows $ROWS)"; exit 2; }

# ------------------------------ build / install ------------------------------
if [[ $BUILD -eq 1 ]]; then
    log "building ringmq and ringmq-bench (release, CARGO_TARGET_DIR=$TARGET)"
    CARGO_TARGET_DIR=$TARGET cargo build --release --bin ringmq --bin ringmq-bench >&2 ||
        { log "build failed"; exit 2; }
fi
BENCH=$TARGET/release/ringmq-bench
RINGMQ=$TARGET/release/ringmq
[[ -x $BENCH ]] || { log "no $BENCH (build it, or set CARGO_TARGET_DIR)"; exit 2; }

peer_bin() {
    case $1 in
        ringmq) echo "$RINGMQ" ;;
        mosquitto) command -v mosquitto || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; } ;;
        rumqttd) command -v rumqttd || { [[ -x $HOME/.cargo/bin/rumqttd ]] && echo "$HOME/.cargo/bin/rumqttd"; } ;;
        nats) command -v nats-server || { [[ -x /usr/sbin/nats-server ]] && echo /usr/sbin/nats-server; } ;;
    esac
}

install_peer() {
    [[ $INSTALL -eq 1 ]] || return 1
    case $1 in
        mosquitto) log "installing mosquitto (apt)"; timeout 600 apt-get install -y mosquitto >&2 ;;
        nats) log "installing nats-server (apt)"; timeout 600 apt-get install -y nats-server >&2 ;;
        rumqttd) log "installing rumqttd (cargo install, several minutes)"; timeout 1800 cargo install rumqttd >&2 ;;
        *) return 1 ;;
    esac
}

peer_version() {
    local bin=$1
    case $2 in
        ringmq) echo "ringmq at $(git -C "$ROOT" describe --always --dirty 2>/dev/null), binary built $(date -u -r "$bin" +%FT%TZ)" ;;
        mosquitto) "$bin" -h 2>/dev/null | head -1 ;;
        rumqttd) "$bin" --version 2>/dev/null | head -1 ;;
        nats) "$bin" --version 2>/dev/null | head -1 ;;
    esac
}

# ------------------------------ broker control ------------------------------
BROKER_PID=
RUNDIR=
# Broker ports: below the ephemeral range when there is room, so the bench's own client
# sockets (and their TIME_WAIT remnants) never hold the port the next broker wants.
EPH_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
if [[ $EPH_LOW -gt 12000 ]]; then
    PORT=$((10000 + RANDOM % (EPH_LOW - 12000)))
else
    PORT=$((20000 + RANDOM % 20000))
fi

stop_broker() {
    [[ -n $BROKER_PID ]] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        log "broker $BROKER_PID ignored TERM for 5 s: KILL"
        kill -KILL "$BROKER_PID" 2>/dev/null
    fi
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
    [[ -n $RUNDIR ]] && rm -rf "$RUNDIR"
    RUNDIR=
}
BENCH_PID=
trap 'stop_broker' EXIT
trap '[[ -n $BENCH_PID ]] && kill -TERM "$BENCH_PID" 2>/dev/null; stop_broker; exit 130' INT TERM

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN; }
port_in_use() { [[ -n $(ss -Htan "sport = :$1" 2>/dev/null) ]]; }
# user+nice+system ticks of one CPU (no irq/softirq/steal), and a process's utime+stime ticks
cpu_ticks() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4}' /proc/stat; }
proc_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

# start_broker PEER BIN LOG: sets BROKER_PID; returns 1 if it does not listen within 10 s.
start_broker() {
    local peer=$1 bin=$2 logf=$3 conf
    PORT=$((PORT + 1))
    while port_in_use "$PORT"; do PORT=$((PORT + 1)); done
    RUNDIR=$(mktemp -d /tmp/bench-compare.XXXXXX)
    case $peer in
        ringmq)
            # --max-inflight 100: every peer gets the outgoing window rumqttd has fixed
            # (src/router/iobufs.rs MAX_INFLIGHT = 100); see scripts/peers/*.
            taskset -c "$BROKER_CORE" "$bin" --shards 1 --listen "127.0.0.1:$PORT" \
                --max-inflight 100 --data-dir "$RUNDIR/data" --log-level warn $RINGMQ_ARGS \
                >"$logf" 2>&1 & ;;
        mosquitto)
            conf=$RUNDIR/mosquitto.conf
            sed "s|@PORT@|$PORT|g" "$ROOT/scripts/peers/mosquitto.conf" >"$conf"
            taskset -c "$BROKER_CORE" "$bin" -c "$conf" >"$logf" 2>&1 & ;;
        rumqttd)
            conf=$RUNDIR/rumqttd.toml
            sed "s|@PORT@|$PORT|g" "$ROOT/scripts/peers/rumqttd.toml" >"$conf"
            taskset -c "$BROKER_CORE" "$bin" -q -c "$conf" >"$logf" 2>&1 & ;;
        nats)
            conf=$RUNDIR/nats.conf
            sed "s|@PORT@|$PORT|g; s|@DATA@|$RUNDIR/jetstream|g" "$ROOT/scripts/peers/nats.conf" >"$conf"
            taskset -c "$BROKER_CORE" "$bin" -c "$conf" >"$logf" 2>&1 & ;;
    esac
    BROKER_PID=$!
    for _ in $(seq 100); do
        listening "$PORT" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$peer did not start listening on $PORT; last log lines:"
    tail -5 "$logf" >&2
    stop_broker
    return 1
}

# --------------------------------- runs ---------------------------------
failed=0
append_result() { # peer row args exit alive version jsonfile [wall_s broker_cpu_s foreign_cpu_s]
    python3 - "$@" >>"$RESULTS" <<'EOF'
import json, sys
peer, row, args, code, alive, version, path = sys.argv[1:8]
extra = sys.argv[8:11]
summary = None
try:
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            summary = json.loads(line)
except (OSError, ValueError):
    pass
rec = {"peer": peer, "row": row, "args": args, "exit": int(code),
       "broker_alive": alive == "1", "broker_version": version, "summary": summary}
if len(extra) == 3:
    rec["wall_s"], rec["broker_cpu_s"], rec["foreign_cpu_s"] = (float(x) for x in extra)
print(json.dumps(rec))
EOF
}

# run_one PEER BIN VERSION LABEL "ARGS" [RATE]: one bench run on a fresh broker (RATE replaces
# or adds --rate); sets LAST_JOUT (the JSON output file) and LAST_CODE; appends the result.
LAST_JOUT=
LAST_CODE=
run_one() {
    local peer=$1 bin=$2 version=$3 label=$4 rate=${6:-} args i dur limit blog jout code
    read -r -a args <<<"$5"
    if [[ -n $DURATION ]]; then
        for i in "${!args[@]}"; do
            [[ ${args[$i]} == --duration ]] && args[i+1]=$DURATION
        done
    fi
    if [[ -n $rate ]]; then
        local found=0
        for i in "${!args[@]}"; do
            [[ ${args[$i]} == --rate ]] && { args[i+1]=$rate; found=1; }
        done
        [[ $found -eq 1 ]] || args+=(--rate "$rate")
    fi
    dur=10
    for i in "${!args[@]}"; do [[ ${args[$i]} == --duration ]] && dur=${args[i+1]}; done
    limit=${RUN_TIMEOUT:-$((${dur%.*} + 60))}
    blog=$OUT/logs/$peer.$label.broker.log
    jout=$OUT/logs/$peer.$label.json
    LAST_JOUT=$jout
    LAST_CODE=126
    if ! start_broker "$peer" "$bin" "$blog"; then
        append_result "$peer" "$label" "${args[*]}" 126 0 "$version" /dev/null
        failed=1
        return 1
    fi
    log "$peer $label: ringmq-bench ${args[*]} (port $PORT, limit ${limit}s)"
    local t0 c0 b0 t1 c1 b1 wall bcpu foreign alive
    t0=$(date +%s.%N) c0=$(cpu_ticks "$BROKER_CORE") b0=$(proc_ticks "$BROKER_PID")
    # in the background + wait, so INT/TERM interrupt the wait and stop both at once
    timeout --kill-after=5 "$limit" taskset -c "$BENCH_CORE" "$BENCH" "${args[@]}" \
        --host 127.0.0.1 --port "$PORT" --broker-pid "$BROKER_PID" --json \
        >"$jout" 2>"$OUT/logs/$peer.$label.bench.err" &
    BENCH_PID=$!
    wait "$BENCH_PID"
    code=$?
    BENCH_PID=
    LAST_CODE=$code
    t1=$(date +%s.%N) c1=$(cpu_ticks "$BROKER_CORE") b1=$(proc_ticks "$BROKER_PID")
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    bcpu=$(awk -v a="$b0" -v b="$b1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}')
    # CPU time on the broker's core not spent by the broker: other load disturbing the run
    foreign=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" -v x="$bcpu" 'BEGIN {f = (b - a) / t - x; printf "%.2f", f < 0 ? 0 : f}')
    alive=0
    kill -0 "$BROKER_PID" 2>/dev/null && alive=1
    [[ $alive -eq 1 ]] || log "$peer $label: broker died during the run (see $blog)"
    [[ $code -eq 124 || $code -eq 137 ]] && log "$peer $label: killed after ${limit}s"
    [[ -s $jout ]] || failed=1
    log "$peer $label: exit $code $(tail -c 400 "$jout")"
    append_result "$peer" "$label" "${args[*]}" "$code" "$alive" "$version" "$jout" "$wall" "$bcpu" "$foreign"
    stop_broker
}

# half_rate JSONFILE: the per-publisher --rate for a run at half the throughput in JSONFILE;
# empty when the row is not a message flow or reached no throughput.
half_rate() {
    python3 - "$1" <<'EOF'
import json, sys
s = None
try:
    for line in open(sys.argv[1]):
        if line.strip().startswith("{"):
            s = json.loads(line)
except (OSError, ValueError):
    pass
if s and s.get("scenario") not in (None, "conn", "storm", "backlog") and s.get("pubs"):
    r = int(float(s.get("in_msgs_per_s") or 0) / 2 / int(s["pubs"]))
    if r >= 1:
        print(r)
EOF
}

for peer in $PEERS; do
    bin=$(peer_bin "$peer")
    if [[ -z $bin ]]; then
        install_peer "$peer" || true
        bin=$(peer_bin "$peer")
    fi
    if [[ -z $bin || ! -x $bin ]]; then
        log "SKIP $peer: not installed and could not be installed"
        for r in "${SEL_ROWS[@]}"; do
            append_result "$peer" "${r%%|*}" "${r#*|}" 127 0 "not installed" /dev/null
            [[ $LAT_HALF -eq 1 ]] && append_result "$peer" "${r%%|*}@half" "${r#*|}" 127 0 "not installed" /dev/null
        done
        continue
    fi
    version=$(peer_version "$bin" "$peer")
    log "== $peer ($version): broker on CPU $BROKER_CORE, load on CPU $BENCH_CORE"
    for r in "${SEL_ROWS[@]}"; do
        label=${r%%|*}
        run_one "$peer" "$bin" "$version" "$label" "${r#*|} $BENCH_COMMON" || continue
        [[ $LAT_HALF -eq 1 ]] || continue
        half=$(half_rate "$LAST_JOUT")
        if [[ -z $half ]]; then
            log "$peer $label: no half-throughput run (not a message flow, or no throughput)"
            continue
        fi
        log "$peer $label: latency at half throughput: --rate $half per publisher"
        run_one "$peer" "$bin" "$version" "$label@half" "${r#*|} $BENCH_COMMON" "$half" || true
    done
done

# --------------------------------- table ---------------------------------
python3 - "$RESULTS" "$PEERS" "$BROKER_CORE" "$BENCH_CORE" >"$OUT/table.md" <<'EOF'
import json, sys
path, peers = sys.argv[1], sys.argv[2].split()
broker_core, bench_core = sys.argv[3], sys.argv[4]
recs = [json.loads(l) for l in open(path) if l.strip()]
rows = []
for r in recs:
    if r["row"] not in rows:
        rows.append(r["row"])
by = {(r["peer"], r["row"]): r for r in recs}

def get(s, dotted):
    for k in dotted.split("."):
        if not isinstance(s, dict) or k not in s:
            return None
        s = s[k]
    return s

# (label, json path, higher is better, format)
CONN = [("connects/s", "connect_rate", True, "{:,.0f}"),
        ("RSS B/conn", "rss_per_conn_bytes", False, "{:,.0f}"),
        ("CONNACK p99 µs", "connack_us.p99", False, "{:,.0f}")]
# higher None: a figure without a better direction (no ratio, no ★)
BACKLOG = [("drain msgs/s", "backlog.drain_msgs_per_s", True, "{:,.0f}"),
           ("drain s", "backlog.drain_s", False, "{:,.3f}"),
           ("resume CONNACK p99 µs", "backlog.reconnect_connack_us.p99", False, "{:,.0f}"),
           ("lost", "lost", False, "{:,.0f}"),
           ("peak RSS MiB", "broker_hwm_kib", False, "{:,.1f}")]
STORM = [("reconnects/s", "storm.reconnect_rate", True, "{:,.0f}"),
         ("CONNACK p50 µs", "storm.connack_us.p50", False, "{:,.0f}"),
         ("CONNACK p99 µs", "storm.connack_us.p99", False, "{:,.0f}"),
         ("session missing", "storm.session_missing", False, "{:,.0f}"),
         ("peak RSS MiB", "broker_hwm_kib", False, "{:,.1f}")]
SLOW = [("fast out msgs/s", "out_msgs_per_s", True, "{:,.0f}"),
        ("fast p99 µs", "lat_us.p99", False, "{:,.0f}"),
        ("fast lost", "lost", False, "{:,.0f}"),
        ("slow received", "slow.received", None, "{:,.0f}"),
        ("peak RSS MiB", "broker_hwm_kib", False, "{:,.1f}")]
HALF = [("in msgs/s (half)", "in_msgs_per_s", True, "{:,.0f}"),
        ("p50 µs", "lat_us.p50", False, "{:,.0f}"),
        ("p99 µs", "lat_us.p99", False, "{:,.0f}"),
        ("p99.9 µs", "lat_us.p999", False, "{:,.0f}")]
FLOW = [("out msgs/s", "out_msgs_per_s", True, "{:,.0f}"),
        ("in msgs/s", "in_msgs_per_s", True, "{:,.0f}"),
        ("out MB/s", "out_mb_per_s", True, "{:,.1f}"),
        ("out msgs/broker CPU-s", "derived.per_cpu", True, "{:,.0f}"),
        ("p99 µs", "lat_us.p99", False, "{:,.0f}"),
        ("peak RSS MiB", "broker_hwm_kib", False, "{:,.1f}")]

def cell_failure(r):
    if r is None:
        return "—"
    s = r["summary"]
    if r["exit"] == 127:
        return "not installed"
    if r["exit"] == 126:
        return "no start"
    if s is None:
        return "timeout" if r["exit"] in (124, 137) else f"fail (exit {r['exit']})"
    if "skipped" in s:
        return "unsupported"
    if "setup_failed" in s or r["exit"] == 2:
        sample = (s.get("error_samples") or [""])[0][:50]
        return f"set-up failed ({s.get('connected')} connected; {sample})"
    return None

head = ["scenario", "metric"] + peers
out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
notes = []
for row in rows:
    some = next((by[(p, row)] for p in peers if (p, row) in by), None)
    scen = get(some, "summary.scenario") if some else None
    if row.endswith("@half"):
        metrics = HALF
    elif scen == "conn" or row.startswith("conn"):
        metrics = CONN
    else:
        metrics = {"backlog": BACKLOG, "storm": STORM, "slow": SLOW}.get(scen, FLOW)
    for mi, (mlabel, key, higher, fmt) in enumerate(metrics):
        vals = {}
        for p in peers:
            r = by.get((p, row))
            if cell_failure(r) is None:
                if key == "derived.per_cpu":
                    d, c = get(r["summary"], "delivered"), r.get("broker_cpu_s")
                    v = d / c if d is not None and c else None
                else:
                    v = get(r["summary"], key)
                if v is not None and key == "broker_hwm_kib":
                    v = v / 1024
                if v is not None:
                    vals[p] = float(v)
        cand = [v for v in vals.values() if v > 0] if higher else list(vals.values())
        best = (max(cand) if higher else min(cand)) if cand and higher is not None else None
        cells = []
        for p in peers:
            r = by.get((p, row))
            f = cell_failure(r)
            if f is not None:
                cells.append(f if mi == 0 else "")
                continue
            if p not in vals:
                cells.append("n/a")
                continue
            v = vals[p]
            txt = fmt.format(v)
            if best is not None and best > 0:
                ratio = v / best
                txt += f" ({ratio:.2f}{'★' if abs(ratio - 1) < 1e-9 else ''})"
            if mi == 0 and not get(r["summary"], "ok"):
                txt += " ⚠"
                s = r["summary"]
                if scen == "storm":
                    notes.append(f"{p} {row}: storm check failed: {get(s, 'storm.reconnected')} of "
                                 f"{s.get('conns')} reconnected, {get(s, 'storm.session_missing')} without "
                                 f"their session, {get(s, 'storm.echo_failed')} subscriptions not resumed, "
                                 f"errors {s.get('errors')}")
                else:
                    notes.append(f"{p} {row}: delivery check failed: published {s.get('published')}, "
                                 f"delivered {s.get('delivered')} of {s.get('expected')} expected, lost {s.get('lost')}, "
                                 f"dup {s.get('duplicated')}, reordered {s.get('out_of_order')}, phantom {s.get('phantom')}, "
                                 f"errors {s.get('errors')}{' (' + s['error_samples'][0] + ')' if s.get('error_samples') else ''}")
            if mi == 0 and r.get("foreign_cpu_s", 0) > 0.1 * r.get("wall_s", 1):
                txt += " ‡"
                notes.append(f"{p} {row}: other processes used {r['foreign_cpu_s']:.1f} s of the broker's "
                             f"core during the {r['wall_s']:.0f} s run: the numbers are disturbed")
            if mi == 0 and not r["broker_alive"]:
                txt += " †"
                notes.append(f"{p} {row}: broker was not running at the end of the run")
            cells.append(txt)
        out.append("| " + " | ".join([row if mi == 0 else "", mlabel] + cells) + " |")

print(f"Broker pinned to CPU {broker_core} (one core), ringmq-bench on CPU {bench_core}, loopback.")
print("Each cell: value (value / best peer on that row; ★ = best). Throughput: higher is better;")
print("latency and memory: lower is better, so there the ratio is ≥ 1 and 1.00★ is the best.")
print("⚠ = delivery check failed (loss at QoS ≥ 1, duplicates or reordering); † = broker died;")
print("‡ = other processes used > 10% of the broker's core during the run.")
print("out msgs/broker CPU-s = messages delivered per CPU-second the broker used (efficiency).")
if any(r.endswith("@half") for r in rows):
    print("ROW@half = ROW rerun at half the in msgs/s this same peer reached in ROW (--rate per")
    print("publisher, paced per message): latency at a load each broker sustains comfortably.")
if any(get(by.get((p, r)), "summary.scenario") == "slow" for p in peers for r in rows):
    print("slow: one subscriber reads at --slow-factor of the others' pace; 'fast' figures exclude it.")
print()
versions = {}
for r in recs:
    versions.setdefault(r["peer"], r["broker_version"])
print("Versions: " + "; ".join(f"{p}: {versions.get(p, '?')}" for p in peers))
print()
print("\n".join(out))
if notes:
    print()
    for n in notes:
        print(f"- {n}")
EOF
cat "$OUT/table.md"
echo
echo "results: $RESULTS"
echo "table:   $OUT/table.md"
exit $failed
