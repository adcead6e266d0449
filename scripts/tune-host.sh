#!/usr/bin/env bash
# Host tuning for a ringmq deployment holding up to millions of MQTT connections.
#
#   scripts/tune-host.sh [--dry-run] [--broker-cpus LIST] [--service NAME] [--state FILE]
#                        [--no-persist]
#   scripts/tune-host.sh --revert [--dry-run] [--state FILE]
#
# Apply (default): sets the kernel parameters, writes the fd / memlock limits for the broker's
# systemd unit and for login sessions, sets the CPU frequency governor to `performance`, and
# (with --broker-cpus) moves the NICs' interrupts off the broker's cores. Values are persisted
# in /etc/sysctl.d/90-ringmq.conf unless --no-persist.
#
# Idempotent: a setting already at (or, for limits, above) its target is left alone. The value
# each setting had before the FIRST apply is saved in the state file (default
# /var/lib/ringmq/tune-host.state); a second apply adds only settings not saved yet, so
# --revert always restores the pre-tuning host, then deletes the state file.
#
# --dry-run prints every change as `current -> new` (or, with --revert, what would be
# restored) and changes nothing. A setting the kernel or the environment refuses (a container,
# a VM without cpufreq, a sysctl outside this network namespace, ...) is reported as SKIP and
# does not fail the script. Needs root to apply; --dry-run works as any user.
#
# Exit: 0 = done (possibly with SKIPs); 2 = bad usage.
set -uo pipefail

STATE=/var/lib/ringmq/tune-host.state
SERVICE=ringmq
BROKER_CPUS=
DRY=0
REVERT=0
PERSIST=1
SYSCTL_FILE=/etc/sysctl.d/90-ringmq.conf
LIMITS_FILE=/etc/security/limits.d/90-ringmq.conf

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 2; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --revert) REVERT=1 ;;
        --no-persist) PERSIST=0 ;;
        --broker-cpus) BROKER_CPUS=${2:?--broker-cpus needs a CPU list}; shift ;;
        --service) SERVICE=${2:?--service needs a unit name}; shift ;;
        --state) STATE=${2:?--state needs a file}; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
    shift
done
DROPIN_DIR=/etc/systemd/system/${SERVICE}.service.d
DROPIN_FILE=$DROPIN_DIR/90-ringmq-limits.conf

if [[ $DRY -eq 0 && $EUID -ne 0 ]]; then
    echo "tune-host.sh: must run as root to change the host (use --dry-run to preview)" >&2
    exit 2
fi

changed=0 skipped=0 unchanged=0
say()  { printf '%s\n' "$*"; }
skip() { say "  SKIP    $*"; skipped=$((skipped + 1)); }

# ---------- state file: "kind<TAB>key<TAB>value" lines, first value wins ----------
state_has() { [[ -f $STATE ]] && grep -q -F -- "$(printf '%s\t%s\t' "$1" "$2")" "$STATE"; }
state_save() { # kind key value — records the original value once
    [[ $DRY -eq 1 ]] && return 0
    state_has "$1" "$2" && return 0
    mkdir -p "$(dirname "$STATE")"
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STATE"
}

norm() { tr -s ' \t' '  ' <<<"$1" | sed 's/^ //; s/ $//'; }
sysctl_path() { echo "/proc/sys/${1//.//}"; }
sysctl_get() { local p; p=$(sysctl_path "$1"); [[ -r $p ]] && norm "$(cat "$p" 2>/dev/null)"; }
sysctl_put() { printf '%s\n' "$2" 2>/dev/null >"$(sysctl_path "$1")"; }

persist_lines=()

# sysctl KEY VALUE MODE WHY — MODE "min": only raise (every field >= target leaves it alone);
# "set": exact value.
sysctl_tune() {
    local key=$1 want=$2 mode=$3 why=$4 cur
    if ! cur=$(sysctl_get "$key") || [[ -z $cur ]]; then
        skip "$key: not present on this kernel/namespace   # $why"
        return
    fi
    want=$(norm "$want")
    local need=0
    if [[ $mode == min ]]; then
        local -a c w
        read -r -a c <<<"$cur"
        read -r -a w <<<"$want"
        for i in "${!w[@]}"; do
            [[ ${c[$i]:-0} -lt ${w[$i]} ]] && need=1
        done
    else
        [[ $cur != "$want" ]] && need=1
    fi
    persist_lines+=("# $why" "$key = $(if [[ $need -eq 1 ]]; then echo "$want"; else echo "$cur"; fi)")
    if [[ $need -eq 0 ]]; then
        say "  ok      $key = $cur"
        unchanged=$((unchanged + 1))
        return
    fi
    if [[ $DRY -eq 1 ]]; then
        say "  CHANGE  $key: $cur -> $want   # $why"
        changed=$((changed + 1))
        return
    fi
    state_save sysctl "$key" "$cur"
    # writing vm.dirty_*bytes zeroes the matching *_ratio: keep it for --revert
    case $key in
        vm.dirty_bytes) state_save sysctl vm.dirty_ratio "$(sysctl_get vm.dirty_ratio)" ;;
        vm.dirty_background_bytes) state_save sysctl vm.dirty_background_ratio "$(sysctl_get vm.dirty_background_ratio)" ;;
    esac
    if sysctl_put "$key" "$want" && [[ $(sysctl_get "$key") == "$want" ]]; then
        say "  set     $key: $cur -> $want   # $why"
        changed=$((changed + 1))
    else
        skip "$key: kernel refused $want (still $(sysctl_get "$key"))   # $why"
        persist_lines=("${persist_lines[@]:0:${#persist_lines[@]}-2}")
    fi
}

# sysfs-style file (governor, IRQ affinity): PATH VALUE LABEL WHY
file_tune() {
    local path=$1 want=$2 label=$3 why=$4 cur
    cur=$(cat "$path" 2>/dev/null) || { skip "$label: cannot read $path"; return; }
    if [[ $cur == "$want" ]]; then
        say "  ok      $label = $cur"
        unchanged=$((unchanged + 1))
        return
    fi
    if [[ $DRY -eq 1 ]]; then
        say "  CHANGE  $label: $cur -> $want   # $why"
        changed=$((changed + 1))
        return
    fi
    state_save file "$path" "$cur"
    if printf '%s\n' "$want" 2>/dev/null >"$path" && [[ $(cat "$path") == "$want" ]]; then
        say "  set     $label: $cur -> $want   # $why"
        changed=$((changed + 1))
    else
        skip "$label: refused $want (still $(cat "$path" 2>/dev/null))   # $why"
    fi
}

# config file we own: PATH CONTENT LABEL
conf_file() {
    local path=$1 content=$2 label=$3
    if [[ -f $path && "$(cat "$path")" == "$content" ]]; then
        say "  ok      $label ($path)"
        unchanged=$((unchanged + 1))
        return
    fi
    if [[ $DRY -eq 1 ]]; then
        say "  CHANGE  $label: write $path:"
        while IFS= read -r line; do say "            | $line"; done <<<"$content"
        changed=$((changed + 1))
        return
    fi
    if [[ -f $path ]]; then
        if ! state_has backup "$path"; then
            cp -p "$path" "$path.ringmq-orig" && state_save backup "$path" "$path.ringmq-orig"
        fi
    else
        state_save created "$path" -
    fi
    [[ -d $(dirname "$path") ]] || state_save createddir "$(dirname "$path")" -
    if mkdir -p "$(dirname "$path")" 2>/dev/null && printf '%s\n' "$content" >"$path" 2>/dev/null; then
        say "  set     $label: wrote $path"
        changed=$((changed + 1))
    else
        skip "$label: cannot write $path"
    fi
}

# "0-2,5" -> "0 1 2 5"
expand_cpus() {
    local part a b out=()
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            a=${part%-*} b=${part#*-}
            for ((i = a; i <= b; i++)); do out+=("$i"); done
        elif [[ -n $part ]]; then
            out+=("$part")
        fi
    done
    echo "${out[*]}"
}

# ---------------------------------- revert ----------------------------------
if [[ $REVERT -eq 1 ]]; then
    if [[ ! -f $STATE ]]; then
        say "tune-host.sh --revert: no state file $STATE (nothing applied, or already reverted)"
        exit 0
    fi
    say "reverting from $STATE$( [[ $DRY -eq 1 ]] && echo ' (dry run)')"
    # dirty_bytes / dirty_background_bytes = 0 means "the *_ratio is in force"; the kernel
    # refuses writing 0, and writing the ratio zeroes the bytes value, so restore ratios last.
    ratios=() dirs=()
    while IFS=$'\t' read -r kind key val; do
        case $kind in
            sysctl)
                if [[ $key == vm.dirty_bytes || $key == vm.dirty_background_bytes ]] && [[ $val == 0 ]]; then
                    continue
                fi
                if [[ $key == vm.dirty_ratio || $key == vm.dirty_background_ratio ]]; then
                    ratios+=("$key=$val"); continue
                fi
                if [[ $DRY -eq 1 ]]; then say "  RESTORE $key: $(sysctl_get "$key") -> $val"
                elif sysctl_put "$key" "$val"; then say "  restore $key = $val"
                else skip "$key: could not restore $val"; fi ;;
            file)
                if [[ $DRY -eq 1 ]]; then say "  RESTORE $key: $(cat "$key" 2>/dev/null) -> $val"
                elif printf '%s\n' "$val" 2>/dev/null >"$key"; then say "  restore $key = $val"
                else skip "$key: could not restore $val"; fi ;;
            created)
                if [[ $DRY -eq 1 ]]; then say "  REMOVE  $key"
                else rm -f "$key" && say "  remove  $key"; fi ;;
            createddir) dirs+=("$key") ;;
            backup)
                if [[ $DRY -eq 1 ]]; then say "  RESTORE $key from $val"
                else mv -f "$val" "$key" && say "  restore $key from $val"; fi ;;
        esac
    done <"$STATE"
    for kv in "${ratios[@]}"; do
        key=${kv%%=*} val=${kv#*=}
        if [[ $DRY -eq 1 ]]; then say "  RESTORE $key: $(sysctl_get "$key") -> $val"
        elif sysctl_put "$key" "$val"; then say "  restore $key = $val"
        else skip "$key: could not restore $val"; fi
    done
    for d in "${dirs[@]}"; do # directories apply created, if now empty
        if [[ $DRY -eq 1 ]]; then say "  REMOVE  $d/ (if empty)"
        else rmdir "$d" 2>/dev/null && say "  remove  $d/"; fi
    done
    if [[ $DRY -eq 0 ]]; then
        command -v systemctl >/dev/null && [[ -d /run/systemd/system ]] && systemctl daemon-reload
        rm -f "$STATE"
        say "reverted; removed $STATE"
    fi
    exit 0
fi

# ---------------------------------- apply -----------------------------------
say "ringmq host tuning$( [[ $DRY -eq 1 ]] && echo ' (dry run: nothing is changed)'); state: $STATE"

mem_pages=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 4 ))
NOFILE=4194304

say "file descriptors (one per connection)"
sysctl_tune fs.file-max "$((NOFILE * 2))" min "system-wide open files: every MQTT connection is one fd"
sysctl_tune fs.nr_open "$NOFILE" min "per-process ceiling for RLIMIT_NOFILE; LimitNOFILE cannot exceed it"

say "accept path (connect and reconnect storms)"
sysctl_tune net.core.somaxconn 65535 min "cap on every listen backlog; ringmq asks listen_backlog (4096) per shard"
sysctl_tune net.ipv4.tcp_max_syn_backlog 65535 min "half-open connections kept during a storm instead of dropping SYNs"
sysctl_tune net.core.netdev_max_backlog 16384 min "per-CPU packet input queue: absorbs bursts from many devices"
sysctl_tune net.ipv4.ip_local_port_range "1024 65535" set "more source ports for outgoing connections (bridges, local load generators)"
sysctl_tune net.ipv4.tcp_tw_reuse 1 set "reuse TIME_WAIT ports for outgoing connections after a storm"
sysctl_tune net.ipv4.tcp_fin_timeout 15 set "release orphaned FIN_WAIT2 sockets of vanished devices sooner"

say "socket memory (many mostly idle connections: small defaults, autotuning up to a sane max)"
sysctl_tune net.core.rmem_default 65536 set "default receive buffer of non-TCP sockets"
sysctl_tune net.core.wmem_default 65536 set "default send buffer of non-TCP sockets"
sysctl_tune net.core.rmem_max 16777216 min "allows SO_RCVBUF up to 16 MiB for large-payload links"
sysctl_tune net.core.wmem_max 16777216 min "allows SO_SNDBUF up to 16 MiB for large-payload links"
sysctl_tune net.ipv4.tcp_rmem "4096 16384 16777216" set "TCP receive buffer min/default/max: 16 KiB start per idle device, grows when busy"
sysctl_tune net.ipv4.tcp_wmem "4096 16384 16777216" set "TCP send buffer min/default/max: 16 KiB start, grows for fan-out subscribers"
sysctl_tune net.ipv4.tcp_mem "$((mem_pages / 16)) $((mem_pages / 8)) $((mem_pages / 4))" min "TCP buffer pages for all sockets (1/16, 1/8, 1/4 of RAM): millions of sockets each holding a little"
sysctl_tune net.ipv4.tcp_slow_start_after_idle 0 set "a device that was idle keeps its congestion window for its next burst"

say "connection tracking (only if nf_conntrack is loaded)"
if [[ -e /proc/sys/net/netfilter/nf_conntrack_max ]]; then
    sysctl_tune net.netfilter.nf_conntrack_max 4194304 min "one conntrack entry per connection; a full table drops new connections"
    sysctl_tune net.netfilter.nf_conntrack_buckets 1048576 min "hash buckets for the table (max/4 entries per chain on average)"
    sysctl_tune net.netfilter.nf_conntrack_tcp_timeout_established 86400 set "forget silently vanished devices after 1 day, not 5"
else
    say "  ok      nf_conntrack not loaded: nothing to size"
fi

say "memory and write-back (mmap'd log)"
sysctl_tune vm.dirty_background_bytes 67108864 set "start background write-back at 64 MiB dirty, not 10% of RAM: no multi-GB flush bursts"
sysctl_tune vm.dirty_bytes 536870912 set "throttle writers at 512 MiB dirty (bounded stall instead of 20% of RAM)"
sysctl_tune vm.dirty_expire_centisecs 1000 set "dirty log pages older than 10 s are written back"
sysctl_tune vm.dirty_writeback_centisecs 100 set "flusher wakes every 1 s: smooth write-back of the log"
sysctl_tune vm.max_map_count 1048576 min "log segments and io_uring buffers are mappings"
sysctl_tune vm.swappiness 10 set "keep session state resident; swap only under real pressure"

say "resource limits for the broker (LimitNOFILE, LimitMEMLOCK for io_uring)"
dropin="# written by ringmq scripts/tune-host.sh
[Service]
# one fd per connection plus log segments; must stay <= fs.nr_open
LimitNOFILE=$NOFILE
# glommio/io_uring lock ring and DMA buffer memory (>= 512 KiB per shard)
LimitMEMLOCK=infinity"
conf_file "$DROPIN_FILE" "$dropin" "systemd drop-in for $SERVICE.service"
limits="# written by ringmq scripts/tune-host.sh: fd and memlock limits for login sessions
# (manual runs, load generators); the systemd drop-in covers the service.
*    soft nofile   $NOFILE
*    hard nofile   $NOFILE
root soft nofile   $NOFILE
root hard nofile   $NOFILE
*    soft memlock  unlimited
*    hard memlock  unlimited
root soft memlock  unlimited
root hard memlock  unlimited"
conf_file "$LIMITS_FILE" "$limits" "limits.d (pam_limits)"
if [[ $DRY -eq 0 ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload && say "  systemctl daemon-reload done (restart $SERVICE to pick up limits)"
fi
say "  note    this shell: nofile $(ulimit -Sn)/$(ulimit -Hn), memlock $(ulimit -Sl)/$(ulimit -Hl) (new sessions/services get the new limits)"

say "CPU frequency governor"
govs=(/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor)
if [[ -e ${govs[0]} ]]; then
    for g in "${govs[@]}"; do
        cpu=${g#/sys/devices/system/cpu/}; cpu=${cpu%%/*}
        file_tune "$g" performance "$cpu governor" "no frequency ramp-up latency on message bursts"
    done
else
    skip "no cpufreq in this machine (VM/container): the host controls frequency"
fi

say "NIC interrupt affinity"
if [[ -z $BROKER_CPUS ]]; then
    say "  ok      --broker-cpus not given: interrupts left where they are"
else
    read -r -a bcpus <<<"$(expand_cpus "$BROKER_CPUS")"
    read -r -a online <<<"$(expand_cpus "$(cat /sys/devices/system/cpu/online)")"
    others=()
    for c in "${online[@]}"; do
        [[ " ${bcpus[*]} " == *" $c "* ]] || others+=("$c")
    done
    if [[ ${#others[@]} -eq 0 ]]; then
        skip "--broker-cpus $BROKER_CPUS covers every online CPU: no core left for interrupts"
    else
        target=$(IFS=,; echo "${others[*]}")
        pgrep -x irqbalance >/dev/null &&
            say "  WARN    irqbalance is running and will move interrupts back: stop it or set IRQBALANCE_BANNED_CPULIST=$BROKER_CPUS"
        found=0
        for dev in /sys/class/net/*/device; do
            [[ -e $dev ]] || continue
            ifname=${dev#/sys/class/net/}; ifname=${ifname%/device}
            devpath=$(readlink -f "$dev")
            # MSI vectors live on the PCI function; virtio NICs sit one level below it.
            irqdir=$devpath/msi_irqs
            [[ -d $irqdir ]] || irqdir=$(dirname "$devpath")/msi_irqs
            irqs=()
            if [[ -d $irqdir ]]; then
                for i in "$irqdir"/*; do irqs+=("${i##*/}"); done
            elif [[ -r $devpath/irq ]]; then
                irqs+=("$(cat "$devpath/irq")")
            fi
            for irq in "${irqs[@]}"; do
                [[ -w /proc/irq/$irq/smp_affinity_list ]] || continue
                found=1
                file_tune "/proc/irq/$irq/smp_affinity_list" "$target" "$ifname irq $irq" "keep NIC interrupts and softirq work off broker cores $BROKER_CPUS"
            done
        done
        [[ $found -eq 1 ]] || skip "no NIC interrupts found (no PCI network device visible)"
    fi
fi

if [[ $PERSIST -eq 1 ]]; then
    say "persistence across reboots"
    conf_file "$SYSCTL_FILE" "$(printf '# written by ringmq scripts/tune-host.sh (remove with --revert)\n'; printf '%s\n' "${persist_lines[@]}")" "sysctl.d"
fi

say "summary: $changed $( [[ $DRY -eq 1 ]] && echo 'would change' || echo changed), $unchanged already tuned, $skipped skipped$( [[ $DRY -eq 0 && -f $STATE ]] && echo "; undo with: $0 --revert")"
exit 0
