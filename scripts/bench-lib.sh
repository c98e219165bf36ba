#!/usr/bin/env bash
# Shared parts of the benchmark scripts (bench-compare.sh, bench-scale.sh): the tools they
# need, a work directory and the cleanup of every process started, `flotilla bench` with its
# command recorded, free ports, playgrounds, etcd clusters, and the splice of a generated
# section into docs/perf.md. Sourced, not run; the caller sets FLOTILLA and calls bench_init.

# bench_need_tools [etcd]: installs what is missing: a font for the plots, and with `etcd` the
# etcd server and client (Debian's etcd-server, etcd-client).
bench_need_tools() {
    local need_pkgs=()
    if [ "${1:-}" = etcd ]; then
        command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
        command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
    fi
    [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)
    if [ ${#need_pkgs[@]} -gt 0 ]; then
        echo "$(basename "$0"): installing ${need_pkgs[*]}" >&2
        local SUDO=""
        [ "$(id -u)" != 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    fi
}

# bench_init NAME: a fresh work directory WORK (/tmp/flotilla-NAME.XXXXXX; removed on exit
# unless KEEP=1), RESULTS (JSON lines of `flotilla bench`), COMMANDS (the commands run), and
# a trap that stops every pid in PIDS on exit.
bench_init() {
    WORK=$(mktemp -d "/tmp/flotilla-$1.XXXXXX")
    RESULTS="$WORK/results.jsonl"
    COMMANDS="$WORK/commands.txt"
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}

# bench ARGS...: runs `flotilla bench` into RESULTS and records the command (without the work
# directory).
bench() {
    echo "flotilla bench $*" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    "$FLOTILLA" bench --json "$RESULTS" --seed 1 "$@"
}

# A port nothing listens on (checked by connecting) and not handed out before in this run,
# from a random start below the kernel's ephemeral range (where an outgoing connection can hold
# a port at any moment, and a server's bind would then fail).
free_port() {
    local low p
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    p=$((10000 + RANDOM % (low - 10100)))
    touch "$WORK/ports"
    while grep -qx "$p" "$WORK/ports" || (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        p=$((p + 1))
    done
    echo "$p" >>"$WORK/ports"
    echo "$p"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_playground NAME STORES ARGS...: starts `flotilla playground` with data under
# $WORK/NAME, waits until PD reports STORES stores up, and sets PG_PID and PD.
start_playground() {
    local name=$1 stores=$2; shift 2
    echo "flotilla playground --stores $stores${*:+ $*}" >>"$COMMANDS"
    "$FLOTILLA" playground --data-dir "$WORK/$name" --pd-port "$(free_port)" --stores "$stores" \
        "$@" >"$WORK/$name.out" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    for _ in $(seq 1 180); do
        PD=$(sed -n 's/^PD address: //p' "$WORK/$name.out" 2>/dev/null || true)
        if [ -n "$PD" ] && [ "$("$FLOTILLA" ctl --pd "$PD" stores 2>/dev/null | grep -c ' up ')" = "$stores" ]; then
            return 0
        fi
        kill -0 "$PG_PID" 2>/dev/null || break
        sleep 1
    done
    echo "playground $name did not come up; see $WORK/$name.out" >&2
    tail -20 "$WORK/$name.out" >&2
    exit 1
}

# start_etcd NAME MEMBERS [CORES]: starts an etcd cluster of MEMBERS members (data under
# $WORK/NAME-etcdI), each in a CPU cgroup of CORES cores (`flotilla cpu-limit`) when given, and
# waits until it is healthy. Sets ETCD_ENDPOINTS (host:port,...), ETCD_PIDS (the pids started,
# to stop) and ETCD_SERVER_PIDS (the etcd processes themselves, comma-separated).
start_etcd() {
    local name=$1 members=$2 cores=${3:-} cluster="" i
    local cports=() pports=() wrap=()
    ETCD_ENDPOINTS=""
    for i in $(seq 1 "$members"); do
        cports[$i]=$(free_port); pports[$i]=$(free_port)
        cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
        ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}127.0.0.1:${cports[$i]}"
    done
    [ -n "$cores" ] && wrap=("$FLOTILLA" cpu-limit --cores "$cores" --)
    echo "${cores:+flotilla cpu-limit --cores $cores -- }etcd --name mI --quota-backend-bytes 8589934592 --auto-compaction-mode revision --auto-compaction-retention 100000 ... ($members members)" >>"$COMMANDS"
    ETCD_PIDS=()
    for i in $(seq 1 "$members"); do
        "${wrap[@]}" etcd --name "m$i" --data-dir "$WORK/$name-etcd$i" \
            --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "flotilla-$name" \
            --quota-backend-bytes 8589934592 \
            --auto-compaction-mode revision --auto-compaction-retention 100000 \
            >"$WORK/$name-etcd$i.log" 2>&1 &
        ETCD_PIDS+=($!); PIDS+=($!)
    done
    local healthy=0
    for _ in $(seq 1 60); do
        if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; then
            healthy=1
            break
        fi
        sleep 1
    done
    if [ "$healthy" != 1 ]; then
        echo "etcd $name is not healthy; see $WORK/$name-etcd*.log" >&2
        tail -3 "$WORK/$name"-etcd*.log >&2
        exit 1
    fi
    if [ -n "$cores" ]; then
        # The etcd processes are the cpu-limit wrappers' children.
        ETCD_SERVER_PIDS=$(for p in "${ETCD_PIDS[@]}"; do pgrep -P "$p"; done | paste -sd,)
    else
        ETCD_SERVER_PIDS=$(IFS=,; echo "${ETCD_PIDS[*]}")
    fi
}

# splice_section MARKER TITLE SECTION PERF: puts the file SECTION (which opens with
# `<!-- MARKER:begin ... -->` and ends with `<!-- MARKER:end -->`) in place of the lines between
# those markers in PERF, or appends it under `## TITLE` where PERF has no such section.
splice_section() {
    local marker=$1 title=$2 section=$3 perf=$4
    touch "$perf"
    if grep -q "<!-- $marker:begin" "$perf"; then
        awk -v section="$section" -v begin="<!-- $marker:begin" -v end="<!-- $marker:end" '
            index($0, begin) == 1 { while ((getline line < section) > 0) print line; skip = 1; next }
            index($0, end) == 1 { skip = 0; next }
            !skip { print }' "$perf" >"$WORK/perf.splice"
        cp "$WORK/perf.splice" "$perf"
    else
        { echo; echo "## $title"; echo; cat "$section"; } >>"$perf"
    fi
}
