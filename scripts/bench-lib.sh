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

# bench_flotilla: the binary to measure: FLOTILLA if set, else the debug build (built now).
bench_flotilla() {
    if [ -z "${FLOTILLA:-}" ]; then
        cargo build --locked --bin flotilla
        FLOTILLA="$CARGO_TARGET_DIR/debug/flotilla"
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
# $WORK/NAME, waits until PD reports STORES stores up, and sets PG_PID, PD and PG_TLS (the
# client's `--ca --cert --key` flags when ARGS hold --tls, else empty).
start_playground() {
    local name=$1 stores=$2; shift 2
    echo "flotilla playground --stores $stores${*:+ $*}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    "$FLOTILLA" playground --data-dir "$WORK/$name" --pd-port "$(free_port)" --stores "$stores" \
        "$@" >"$WORK/$name.out" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    PG_TLS=()
    case " $* " in
        *" --tls "*)
            local tls="$WORK/$name/tls"
            PG_TLS=(--ca "$tls/ca.pem" --cert "$tls/client.pem" --key "$tls/client-key.pem")
            ;;
    esac
    for _ in $(seq 1 180); do
        PD=$(sed -n 's/^PD address: //p' "$WORK/$name.out" 2>/dev/null || true)
        if [ -n "$PD" ] && [ "$("$FLOTILLA" ctl --pd "$PD" "${PG_TLS[@]}" stores 2>/dev/null | grep -c ' up ')" = "$stores" ]; then
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

# --- CPU accounting of the measured processes and the cluster's shape (bench-scale.sh,
# bench-hot.sh). The caller sets CPU (where cpu_point appends), SHAPE_LOG (where shape and
# wait_balanced write) and BALANCE_WAIT (seconds). ---

TICKS=$(getconf CLK_TCK)
CG1_CPU=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ { print $2; exit }' /proc/mounts)
CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)

# bench_priority NAME: renices the script to 0 and, where v1's cpu hierarchy is writable, puts
# it and all it starts (PD, the load generator, the stores' and etcd members' cgroups, created
# under ours) into a cgroup with the largest cpu.shares, so that other jobs on the machine
# (compiles, tests, at any nice) take CPU only when the benchmark leaves it idle. (On v2 a
# cgroup with processes cannot have children with controllers, so there the script stays where
# it is.) Sets BENCH_CG (empty where there is none). Call after bench_init.
bench_priority() {
    local name=$1 own
    if [ "$(nice)" -gt 0 ]; then
        renice -n 0 -p $$ >/dev/null 2>&1 || echo "$name: running niced ($(nice)); the load generator may lose CPU to other jobs" >&2
    fi
    BENCH_CG=""
    [ -n "$CG1_CPU" ] || return 0
    own=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' /proc/$$/cgroup)
    BENCH_CG="$CG1_CPU${own%/}/flotilla-$name-$$"
    if mkdir "$BENCH_CG" 2>/dev/null && echo 262144 >"$BENCH_CG/cpu.shares" \
        && echo $$ >"$BENCH_CG/cgroup.procs"; then
        BENCH_CG_PARENT="$CG1_CPU${own%/}"
        trap 'bench_cleanup; echo $$ >"$BENCH_CG_PARENT/cgroup.procs"; rmdir "$BENCH_CG" 2>/dev/null || true' EXIT
    else
        echo "$name: cannot make a high-shares cgroup at $BENCH_CG; running without" >&2
        rmdir "$BENCH_CG" 2>/dev/null || true
        BENCH_CG=""
    fi
}

# cg_stat PID: "NR_PERIODS NR_THROTTLED" of the CPU cgroup the process is in (v1's cpu
# hierarchy, else v2), "0 0" where it has none with a quota.
cg_stat() {
    local path f=""
    if [ -n "$CG1_CPU" ]; then
        path=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' "/proc/$1/cgroup" 2>/dev/null)
        [ -n "$path" ] && f="$CG1_CPU$path/cpu.stat"
    fi
    if [ ! -r "$f" ] && [ -n "$CG2" ]; then
        path=$(awk -F: '$1 == "0" { print $3 }' "/proc/$1/cgroup" 2>/dev/null)
        f="$CG2$path/cpu.stat"
    fi
    if [ -r "$f" ]; then
        awk '$1 == "nr_periods" { p = $2 } $1 == "nr_throttled" { t = $2 } END { print p + 0, t + 0 }' "$f"
    else
        echo "0 0"
    fi
}

# cpu_snapshot PID...: one line per live process: "ROLE PID CPU_TICKS NR_PERIODS NR_THROTTLED",
# ROLE being store, pd or etcd (from its command line).
cpu_snapshot() {
    local pid role
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        case " $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" in
        *" server "*) role=store ;;
        *" pd "*) role=pd ;;
        *etcd" "*) role=etcd ;;
        *) role=other ;;
        esac
        # Fields after the command name: utime and stime are the 12th and 13th.
        echo "$role $pid $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }') $(cg_stat "$pid")"
    done
}

# cpu_point LABEL WORKLOAD CLIENTS SECONDS BEFORE AFTER: appends to CPU one JSON line with each
# machine's (store's or etcd member's) cores and throttled share of its CFS periods, and PD's
# cores, over the window between the two snapshots.
cpu_point() {
    awk -v label="$1" -v workload="$2" -v clients="$3" -v secs="$4" -v hz="$TICKS" '
        FNR == NR { t[$2] = $3; p[$2] = $4; th[$2] = $5; next }
        ($2 in t) {
            cores = ($3 - t[$2]) / hz / secs
            if ($1 == "pd") { pd += cores; next }
            dp = $4 - p[$2]; share = dp > 0 ? ($5 - th[$2]) / dp : 0
            m = m sep sprintf("{\"pid\":%s,\"cores\":%.3f,\"throttled\":%.3f}", $2, cores, share)
            sep = ","
        }
        END {
            printf "{\"label\":\"%s\",\"workload\":\"%s\",\"clients\":%s,\"window_s\":%.1f,\"machines\":[%s],\"pd_cores\":%.3f}\n",
                label, workload, clients, secs, m, pd
        }' "$5" "$6" >>"$CPU"
}

# shape LABEL TAG WHEN: per store (in `flotilla ctl stores` order) its regions, its leaders,
# and its leaders of the raw keyspace's regions that hold keys (what raw-put and raw-get load).
shape() {
    local f="$WORK/$1-$2"
    "$FLOTILLA" ctl --pd "$PD" stores >"$f-stores.txt" 2>&1 || true
    "$FLOTILLA" ctl --pd "$PD" regions >"$f-regions.txt" 2>&1 || true
    awk -v label="$1" -v when="$3" '
        FNR == NR { if ($1 ~ /^[0-9]+$/ && $7 ~ /^[0-9]+$/ && $7 > 0 && $2 ~ /^r/) raw[$4]++; next }
        FNR > 1 && NF >= 6 { r = r sep $5; l = l sep $6; w = w sep (raw[$1] + 0); sep = "," }
        END { printf "%s %s: regions per store [%s], leaders per store [%s], leaders of loaded raw-keyspace regions per store [%s]\n", label, when, r, l, w }
    ' "$f-regions.txt" "$f-stores.txt" >>"$SHAPE_LOG"
}

# wait_balanced LABEL: waits, up to BALANCE_WAIT s, until every store holds within 25% of the
# mean region count (the issue's criterion), so that no replica moves while measuring.
wait_balanced() {
    local start=$SECONDS
    echo "flotilla ctl --pd \$PD stores  # until every store holds within 25% of the mean region count, up to ${BALANCE_WAIT}s" >>"$COMMANDS"
    while [ $((SECONDS - start)) -lt "$BALANCE_WAIT" ]; do
        if "$FLOTILLA" ctl --pd "$PD" stores 2>/dev/null | awk '
            NR > 1 && NF >= 6 { n++; s += $5; c[n] = $5 }
            END { if (!n) exit 1; m = s / n; for (i = 1; i <= n; i++) if (c[i] > 1.25 * m || c[i] < 0.75 * m) exit 1 }'
        then
            echo "$1 replicas balanced after $((SECONDS - start)) s" >>"$SHAPE_LOG"
            return 0
        fi
        sleep 2
    done
    echo "$1 replicas NOT balanced after ${BALANCE_WAIT} s (measured anyway)" >>"$SHAPE_LOG"
}
