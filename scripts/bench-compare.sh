#!/usr/bin/env bash
# Measures, one after another in one run on 127.0.0.1 and with the same load generator
# (`flotilla bench`):
#   1. the disk's fsync latency (one writer, 256-byte appends + fdatasync);
#   2. Flotilla, three stores kept to one data region (`playground --single-region`);
#   3. Flotilla, three stores and many regions (the playground's small regions, >= 32, leaders
#      balanced);
#   4. etcd 3.4, three members (Debian's etcd-server, installed if missing).
# Same workloads, same client counts. Writes the results (JSON lines), PNG plots under
# docs/bench/, and the generated section of docs/perf.md (between the bench-compare markers).
#
# Knobs (environment): CLIENTS (1,16,64,256), WORKLOADS, DURATION (s per point, 10),
# WARMUP (s, 3), KEYS (100000), PROFILE_CLIENTS (64) and PROFILE_WORKLOADS (raw-put,ycsb-c,
# txn-rmw): flamegraphs of the stores, taken in a separate pass,
# OUT (docs), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/setup.sh

CLIENTS=${CLIENTS:-1,16,64,256}
WORKLOADS=${WORKLOADS:-raw-put,raw-get,ycsb-a,ycsb-b,ycsb-c,ycsb-e,txn-rmw}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-100000}
PROFILE_CLIENTS=${PROFILE_CLIENTS:-64}
PROFILE_WORKLOADS=${PROFILE_WORKLOADS:-raw-put,ycsb-c,txn-rmw}
OUT=${OUT:-docs}

need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "bench-compare: installing ${need_pkgs[*]}" >&2
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

cargo build --locked --bin flotilla
FLOTILLA="$CARGO_TARGET_DIR/debug/flotilla"
WORK=$(mktemp -d /tmp/flotilla-bench.XXXXXX)
RESULTS="$WORK/results.jsonl"
COMMANDS="$WORK/commands.txt"
SHAPES="$WORK/shapes.txt"
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

# profile LABEL ARGS...: flamegraphs of every store under a few workloads at PROFILE_CLIENTS
# clients, in a pass of its own after the measured one (sampling costs the stores CPU, so the
# profiled figures go to their own file, not into the tables).
profile() {
    local label=$1; shift
    echo "flotilla bench --pd $PD --label $label $* --workload $PROFILE_WORKLOADS --concurrency $PROFILE_CLIENTS --profile $OUT/bench/profiles" \
        | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    "$FLOTILLA" bench --pd "$PD" --label "$label" "$@" --workload "$PROFILE_WORKLOADS" \
        --concurrency "$PROFILE_CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --keys "$KEYS" --profile "$OUT/bench/profiles" --json "$WORK/profiled.jsonl" --seed 1
}

# A port nothing listens on (checked by connecting), from a random start.
free_port() {
    local p=$((20000 + RANDOM % 30000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

# start_playground NAME ARGS...: starts a playground, sets PG_PID and PD.
start_playground() {
    local name=$1; shift
    "$FLOTILLA" playground --data-dir "$WORK/$name" --pd-port "$(free_port)" "$@" \
        >"$WORK/$name.out" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    for _ in $(seq 1 120); do
        PD=$(sed -n 's/^PD address: //p' "$WORK/$name.out")
        if [ -n "$PD" ] && [ "$("$FLOTILLA" ctl --pd "$PD" stores 2>/dev/null | grep -c ' up ')" = 3 ]; then
            return 0
        fi
        sleep 1
    done
    echo "playground $name did not come up; see $WORK/$name.out" >&2
    exit 1
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

rm -rf "$OUT/bench/profiles"

echo "== disk: fsync latency" >&2
bench --target disk --label disk-fsync --fsync-dir "$WORK/fsync" --concurrency 1 \
    --duration-secs "$DURATION" --warmup-secs 1

common=(--concurrency "$CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --keys "$KEYS")
txn_load=""
case ",$WORKLOADS," in *,txn-rmw,*) txn_load=",load-txn" ;; esac

echo "== flotilla, one region" >&2
start_playground one --single-region
bench --target flotilla --pd "$PD" --label flotilla-1region --server-pids-file "$WORK/one/pids" \
    --workload "load$txn_load,$WORKLOADS" "${common[@]}"
profile flotilla-1region --server-pids-file "$WORK/one/pids"
"$FLOTILLA" ctl --pd "$PD" regions >"$WORK/one-regions.txt"
"$FLOTILLA" ctl --pd "$PD" stores >"$WORK/one-stores.txt"
echo "flotilla-1region at the end: $(head -1 "$WORK/one-regions.txt")" >>"$SHAPES"
stop_pid "$PG_PID"

echo "== flotilla, many regions" >&2
start_playground many
bench --target flotilla --pd "$PD" --label flotilla-many --server-pids-file "$WORK/many/pids" \
    --workload "load$txn_load,$WORKLOADS" "${common[@]}" --min-regions 32
profile flotilla-many --server-pids-file "$WORK/many/pids"
"$FLOTILLA" ctl --pd "$PD" regions >"$WORK/many-regions.txt"
"$FLOTILLA" ctl --pd "$PD" stores >"$WORK/many-stores.txt"
echo "flotilla-many at the end: $(head -1 "$WORK/many-regions.txt")" >>"$SHAPES"
stop_pid "$PG_PID"

echo "== etcd, three members" >&2
cluster="" ; endpoints="" ; declare -a cports pports
for i in 1 2 3; do
    cports[$i]=$(free_port); pports[$i]=$(free_port)
    while [ "${pports[$i]}" = "${cports[$i]}" ]; do pports[$i]=$(free_port); done
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
    endpoints+="${endpoints:+,}127.0.0.1:${cports[$i]}"
done
etcd_pids=()
for i in 1 2 3; do
    etcd --name "m$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token flotilla-bench \
        --quota-backend-bytes 8589934592 \
        --auto-compaction-mode revision --auto-compaction-retention 100000 \
        >"$WORK/etcd$i.log" 2>&1 &
    etcd_pids+=($!); PIDS+=($!)
done
for _ in $(seq 1 60); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
    sleep 1
done
etcd_pid_list=$(IFS=,; echo "${etcd_pids[*]}")
bench --target etcd --endpoints "$endpoints" --etcd-serializable --label etcd \
    --server-pids "$etcd_pid_list" --workload "load,$WORKLOADS" "${common[@]}"
for pid in "${etcd_pids[@]}"; do stop_pid "$pid"; done

echo "== report" >&2
mkdir -p "$OUT/bench"
cp "$RESULTS" "$OUT/bench/results.jsonl"
"$FLOTILLA" bench-report --plots "$OUT/bench" "$RESULTS" >"$WORK/tables.md"

{
    echo "<!-- bench-compare:begin (generated by scripts/bench-compare.sh; edits here are overwritten) -->"
    echo
    echo "Run of $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)."
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)),"
    echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) memory, Linux $(uname -r),"
    echo "$(etcd --version 2>/dev/null | head -1 | tr -d '\n'); Flotilla built with the dev profile (dependencies opt-level 3, own crates opt-level 1)."
    echo "Everything (servers and load generator) shares these cores; fsync on, three replicas."
    echo
    echo "Commands (\$WORK is a fresh temporary directory):"
    echo
    echo '```sh'
    echo "CLIENTS=$CLIENTS WORKLOADS=$WORKLOADS DURATION=$DURATION WARMUP=$WARMUP KEYS=$KEYS ./scripts/bench-compare.sh"
    cat "$COMMANDS"
    echo '```'
    echo
    sed 's/$/;/' "$SHAPES"
    echo
    sed "s/^## /### /" "$WORK/tables.md"
    echo
    echo "Plots: \`$OUT/bench/<workload>-throughput.png\` and \`$OUT/bench/<workload>-p99.png\`;"
    echo "flamegraphs of the stores ($PROFILE_WORKLOADS at $PROFILE_CLIENTS clients, a separate pass"
    echo "after the measured one): \`$OUT/bench/profiles/\`."
    echo
    echo "<!-- bench-compare:end -->"
} >"$WORK/section.md"

perf="$OUT/perf.md"
touch "$perf"
if grep -q '<!-- bench-compare:begin' "$perf"; then
    awk -v section="$WORK/section.md" '
        /<!-- bench-compare:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
        /<!-- bench-compare:end -->/ { skip = 0; next }
        !skip { print }' "$perf" >"$WORK/perf.md"
    cp "$WORK/perf.md" "$perf"
else
    { echo; echo "## Side by side: one region, many regions, etcd"; echo; cat "$WORK/section.md"; } >>"$perf"
fi
echo "wrote $perf and $OUT/bench/" >&2
