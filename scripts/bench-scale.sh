#!/usr/bin/env bash
# Scale-out on emulated machines: every store (and every etcd member) runs in a CPU cgroup of
# its own with the same quota, so that adding stores adds CPU, as adding machines would. PD and
# the load generator are not limited; the load generator's own CPU is reported for each point
# (near 1 core, it and not the cluster set the pace).
#
# For each "QUOTA:N1,N2,..." of SHAPES (default "0.2:3,6 0.15:3,9") and each system of SYSTEMS
# (default "many single etcd"), one after another, with the same `flotilla bench`:
#   many   Flotilla, N stores, many regions (the playground's small regions; at least
#          MIN_REGIONS regions with leaders on every store before measuring);
#   single Flotilla, N stores kept to one data region (`playground --single-region`);
#   etcd   etcd 3.4 with ETCD_MEMBERS members (default "3 5"), each under the same quota
#          (`flotilla cpu-limit`), measured once per quota.
# Writes the results (JSON lines) and the section of docs/perf.md between the bench-scale
# markers, and a throughput-vs-machines plot per workload under docs/bench/scale/.
#
# Knobs (environment): SHAPES, SYSTEMS, ETCD_MEMBERS, WORKLOADS (raw-put,raw-get,ycsb-a,
# txn-rmw), CLIENTS (64,256), DURATION (s per point, 10), WARMUP (s, 3), KEYS (50000),
# MIN_REGIONS (48), OUT (docs), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

SHAPES=${SHAPES:-"0.2:3,6 0.15:3,9"}
SYSTEMS=${SYSTEMS:-"many single etcd"}
ETCD_MEMBERS=${ETCD_MEMBERS:-"3 5"}
WORKLOADS=${WORKLOADS:-raw-put,raw-get,ycsb-a,txn-rmw}
CLIENTS=${CLIENTS:-64,256}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-50000}
MIN_REGIONS=${MIN_REGIONS:-48}
OUT=${OUT:-docs}

need_pkgs=()
case " $SYSTEMS " in *" etcd "*)
    command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client) ;;
esac
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "bench-scale: installing ${need_pkgs[*]}" >&2
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [ -z "${FLOTILLA:-}" ]; then
    cargo build --locked --bin flotilla
    FLOTILLA="$CARGO_TARGET_DIR/debug/flotilla"
fi
WORK=$(mktemp -d /tmp/flotilla-scale.XXXXXX)
RESULTS="$WORK/results.jsonl"
COMMANDS="$WORK/commands.txt"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# bench ARGS...: runs `flotilla bench` and records the command (without the work directory).
bench() {
    echo "flotilla bench $*" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    "$FLOTILLA" bench --json "$RESULTS" --seed 1 "$@"
}

# A port nothing listens on (checked by connecting), from a random start.
free_port() {
    local p=$((20000 + RANDOM % 30000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_playground NAME STORES ARGS...: starts a playground, sets PG_PID and PD.
start_playground() {
    local name=$1 stores=$2; shift 2
    echo "flotilla playground --stores $stores $*" >>"$COMMANDS"
    "$FLOTILLA" playground --data-dir "$WORK/$name" --pd-port "$(free_port)" --stores "$stores" \
        "$@" >"$WORK/$name.out" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    for _ in $(seq 1 180); do
        PD=$(sed -n 's/^PD address: //p' "$WORK/$name.out")
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

common=(--concurrency "$CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --keys "$KEYS")
txn_load=""
case ",$WORKLOADS," in *,txn-rmw,*) txn_load=",load-txn" ;; esac

for shape in $SHAPES; do
    quota=${shape%%:*}
    counts=${shape#*:}
    for system in $SYSTEMS; do
        case $system in
        many|single)
            for n in ${counts//,/ }; do
                label="$system-q$quota-n$n"
                echo "== flotilla $label" >&2
                extra=()
                [ "$system" = single ] && extra=(--single-region)
                start_playground "$label" "$n" --store-cpu "$quota" "${extra[@]}"
                shape_args=()
                [ "$system" = many ] && shape_args=(--min-regions "$MIN_REGIONS" --wait-secs 300)
                bench --target flotilla --pd "$PD" --label "$label" \
                    --server-pids-file "$WORK/$label/pids" \
                    --workload "load$txn_load,$WORKLOADS" "${common[@]}" "${shape_args[@]}"
                "$FLOTILLA" ctl --pd "$PD" stores >"$WORK/$label-stores.txt" 2>&1 || true
                stop_pid "$PG_PID"
            done
            ;;
        etcd)
            for n in $ETCD_MEMBERS; do
                label="etcd-q$quota-n$n"
                echo "== $label" >&2
                cluster="" ; endpoints="" ; cports=() ; pports=()
                for i in $(seq 1 "$n"); do
                    cports[$i]=$(free_port); pports[$i]=$(free_port)
                    while [ "${pports[$i]}" = "${cports[$i]}" ]; do pports[$i]=$(free_port); done
                    cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
                    endpoints+="${endpoints:+,}127.0.0.1:${cports[$i]}"
                done
                echo "flotilla cpu-limit --cores $quota -- etcd ... ($n members)" >>"$COMMANDS"
                etcd_pids=()
                for i in $(seq 1 "$n"); do
                    "$FLOTILLA" cpu-limit --cores "$quota" -- \
                        etcd --name "m$i" --data-dir "$WORK/$label-etcd$i" \
                        --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
                        --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
                        --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
                        --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
                        --initial-cluster "$cluster" --initial-cluster-state new \
                        --initial-cluster-token "flotilla-$label" \
                        --quota-backend-bytes 8589934592 \
                        --auto-compaction-mode revision --auto-compaction-retention 100000 \
                        >"$WORK/$label-etcd$i.log" 2>&1 &
                    etcd_pids+=($!); PIDS+=($!)
                done
                for _ in $(seq 1 60); do
                    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
                    sleep 1
                done
                # The etcd processes are the cpu-limit wrappers' children.
                server_pids=$(for p in "${etcd_pids[@]}"; do pgrep -P "$p"; done | paste -sd,)
                bench --target etcd --endpoints "$endpoints" --etcd-serializable --label "$label" \
                    --server-pids "$server_pids" --workload "load,$WORKLOADS" "${common[@]}"
                for pid in "${etcd_pids[@]}"; do stop_pid "$pid"; done
            done
            ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
        esac
    done
done

echo "== report" >&2
mkdir -p "$OUT/bench/scale"
cp "$RESULTS" "$OUT/bench/scale/results.jsonl"
python3 scripts/bench-scale-report.py "$RESULTS" "$OUT/bench/scale" >"$WORK/tables.md"

{
    echo "<!-- bench-scale:begin (generated by scripts/bench-scale.sh; edits here are overwritten) -->"
    echo
    echo "Run of $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)."
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)."
    echo "Each store and each etcd member in its own CPU cgroup with the quota shown; PD and the"
    echo "load generator unlimited, on the same cores."
    echo
    echo '```sh'
    echo "SHAPES=\"$SHAPES\" SYSTEMS=\"$SYSTEMS\" ETCD_MEMBERS=\"$ETCD_MEMBERS\" WORKLOADS=$WORKLOADS CLIENTS=$CLIENTS DURATION=$DURATION KEYS=$KEYS ./scripts/bench-scale.sh"
    cat "$COMMANDS"
    echo '```'
    echo
    cat "$WORK/tables.md"
    echo
    echo "<!-- bench-scale:end -->"
} >"$WORK/section.md"

perf="$OUT/perf.md"
touch "$perf"
if grep -q '<!-- bench-scale:begin' "$perf"; then
    awk -v section="$WORK/section.md" '
        /<!-- bench-scale:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
        /<!-- bench-scale:end/ { skip = 0; next }
        !skip { print }
    ' "$perf" >"$WORK/perf.md"
    cp "$WORK/perf.md" "$perf"
else
    { echo; echo "## Scale-out on emulated machines"; echo; cat "$WORK/section.md"; } >>"$perf"
fi
echo "bench-scale: wrote $perf and $OUT/bench/scale/" >&2
