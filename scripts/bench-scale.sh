#!/usr/bin/env bash
# Scale-out on emulated machines: every store (and every etcd member) runs in a CPU cgroup of
# its own with the same quota, so that adding stores adds CPU, as adding machines would. PD and
# the load generator are not limited; the load generator's own CPU is reported for each point
# (near 1 core, it and not the cluster set the pace).
#
# For each "QUOTA:N1,N2,..." of SHAPES (default "0.2:3,6 0.15:3,9") and each system of SYSTEMS
# (default "many single etcd"), one after another, with the same `flotilla bench`:
#   many   Flotilla, N stores, many regions (the playground's small regions; at least
#          MIN_REGIONS regions with leaders balanced over the stores before measuring);
#   single Flotilla, N stores kept to one data region (`playground --single-region`);
#   etcd   etcd 3.4 with ETCD_MEMBERS members (default "3 5"), each under the same quota
#          (`flotilla cpu-limit`), measured once per quota.
# Every point (workload x clients) is its own `flotilla bench`; around each, the CPU time of
# every store, PD member and etcd member (/proc) and the throttled share of each cgroup's CFS
# periods (cpu.stat) are sampled, so that the report shows where the CPU went.
# The script runs at nice 0 (it renices itself if started niced) and, where v1's cpu hierarchy
# is writable, in a cgroup of its own with the largest cpu.shares, under which the stores' and
# etcd members' cgroups are made: the measured processes and the load generator take the CPU
# they want before other jobs on the machine (compiles, tests) get any.
# Writes the results (JSON lines), the section of docs/perf.md between the bench-scale markers,
# and a throughput-vs-machines plot per workload, client count and quota under
# docs/bench/scale/.
#
# Knobs (environment): SHAPES, SYSTEMS, ETCD_MEMBERS, WORKLOADS (raw-put,raw-get,ycsb-a,
# txn-rmw), CLIENTS (64,256), DURATION (s per point, 10), WARMUP (s, 3), KEYS (50000),
# MIN_REGIONS (24; the playground's regions split at 2,000 keys, so 50,000 keys make ~29),
# BALANCE_WAIT (s, 300: the longest wait, for many regions, until every store holds within 25%
# of the mean region count), RESULTS_FROM (a directory with an earlier run's files, as this
# script leaves them under OUT/bench/scale: its points for the labels this run does not
# measure are reported along with this run's),
# OUT (docs), KEEP=1 keeps the work directory, FLOTILLA (a built binary to use instead of
# building the debug one), NOTE (a paragraph put into the generated section).
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
MIN_REGIONS=${MIN_REGIONS:-24}
BALANCE_WAIT=${BALANCE_WAIT:-300}
OUT=${OUT:-docs}

source scripts/bench-lib.sh
case " $SYSTEMS " in *" etcd "*) bench_need_tools etcd ;; *) bench_need_tools ;; esac

bench_flotilla
bench_init scale
CPU="$WORK/cpu.jsonl"
SHAPE_LOG="$WORK/shapes.txt"
bench_priority bench-scale

# measure LABEL PIDS TARGET_ARGS...: one `flotilla bench` per workload and client count, with
# the CPU of the processes PIDS (comma-separated) sampled around each.
measure() {
    local label=$1 pids=$2 w c t0 t1; shift 2
    echo "flotilla bench --json \$WORK/results.jsonl --seed 1 $* --label $label --workload W --concurrency C --duration-secs $DURATION --warmup-secs $WARMUP --keys $KEYS  # for W in $WORKLOADS, C in $CLIENTS" \
        | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    for w in ${WORKLOADS//,/ }; do
        for c in ${CLIENTS//,/ }; do
            cpu_snapshot ${pids//,/ } >"$WORK/before"
            t0=$(date +%s.%N)
            "$FLOTILLA" bench --json "$RESULTS" --seed 1 "$@" --label "$label" --workload "$w" \
                --concurrency "$c" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --keys "$KEYS"
            t1=$(date +%s.%N)
            cpu_snapshot ${pids//,/ } >"$WORK/after"
            cpu_point "$label" "$w" "$c" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$WORK/before" "$WORK/after"
        done
    done
}

LABELS=()
load_workloads=load
case ",$WORKLOADS," in *,txn-rmw*) load_workloads=load,load-txn ;; esac

for shape in $SHAPES; do
    quota=${shape%%:*}
    counts=${shape#*:}
    for system in $SYSTEMS; do
        case $system in
        many|single)
            for n in ${counts//,/ }; do
                label="$system-q$quota-n$n"
                LABELS+=("$label")
                echo "== flotilla $label" >&2
                extra=()
                [ "$system" = single ] && extra=(--single-region)
                start_playground "$label" "$n" --store-cpu "$quota" "${extra[@]}"
                target=(--target flotilla --pd "$PD" --server-pids-file "$WORK/$label/pids")
                bench "${target[@]}" --label "$label" --workload "$load_workloads" \
                    --concurrency "$CLIENTS" --keys "$KEYS"
                if [ "$system" = many ]; then
                    # One operation, after PD reports the shape (or after 300 s, said so).
                    echo "flotilla bench --pd \$PD --workload raw-get --ops 1 --min-regions $MIN_REGIONS --wait-secs 300 (waits for the shape)" >>"$COMMANDS"
                    "$FLOTILLA" bench --pd "$PD" --workload raw-get --ops 1 --concurrency 1 \
                        --warmup-secs 0 --keys "$KEYS" --min-regions "$MIN_REGIONS" \
                        --wait-secs 300 --seed 1 | grep '^cluster:' | sed "s/^/$label /" >>"$SHAPE_LOG"
                    wait_balanced "$label"
                fi
                shape "$label" before "before measuring"
                measure "$label" "$(paste -sd, "$WORK/$label/pids")" "${target[@]}"
                shape "$label" end "at the end"
                stop_pid "$PG_PID"
            done
            ;;
        etcd)
            for n in $ETCD_MEMBERS; do
                label="etcd-q$quota-n$n"
                LABELS+=("$label")
                echo "== $label" >&2
                start_etcd "$label" "$n" "$quota"
                target=(--target etcd --endpoints "$ETCD_ENDPOINTS" --etcd-serializable
                    --server-pids "$ETCD_SERVER_PIDS")
                bench "${target[@]}" --label "$label" --workload load --concurrency "$CLIENTS" --keys "$KEYS"
                measure "$label" "$ETCD_SERVER_PIDS" "${target[@]}"
                for pid in "${ETCD_PIDS[@]}"; do stop_pid "$pid"; done
            done
            ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
        esac
    done
done

echo "== report" >&2
mkdir -p "$OUT/bench/scale"
{
    echo "SHAPES=\"$SHAPES\" SYSTEMS=\"$SYSTEMS\" ETCD_MEMBERS=\"$ETCD_MEMBERS\" WORKLOADS=$WORKLOADS CLIENTS=$CLIENTS DURATION=$DURATION WARMUP=$WARMUP KEYS=$KEYS MIN_REGIONS=$MIN_REGIONS BALANCE_WAIT=$BALANCE_WAIT ./scripts/bench-scale.sh"
    cat "$COMMANDS"
} >"$WORK/commands.md"
if [ -n "${RESULTS_FROM:-}" ]; then
    # The earlier run's points, shapes and commands, less the labels measured again here.
    drop=()
    for l in "${LABELS[@]}"; do drop+=(-e "\"label\":\"$l\"" -e "^$l "); done
    grep -v "${drop[@]}" "$RESULTS_FROM/results.jsonl" >>"$RESULTS" || true
    grep -v "${drop[@]}" "$RESULTS_FROM/cpu.jsonl" >>"$CPU" || true
    grep -v "${drop[@]}" "$RESULTS_FROM/shapes.txt" >>"$SHAPE_LOG" || true
    {
        echo "# the earlier run, whose points for other labels than ${LABELS[*]} are kept:"
        cat "$RESULTS_FROM/commands.md"
    } >>"$WORK/commands.md"
fi
cp "$RESULTS" "$OUT/bench/scale/results.jsonl"
cp "$CPU" "$OUT/bench/scale/cpu.jsonl"
cp "$SHAPE_LOG" "$OUT/bench/scale/shapes.txt"
cp "$WORK/commands.md" "$OUT/bench/scale/commands.md.tmp"
mv "$OUT/bench/scale/commands.md.tmp" "$OUT/bench/scale/commands.md"
python3 scripts/bench-scale-report.py "$RESULTS" "$OUT/bench/scale" "$CPU" >"$WORK/tables.md"

{
    echo "<!-- bench-scale:begin (generated by scripts/bench-scale.sh; edits here are overwritten) -->"
    echo
    echo "Run of $(date -u +%Y-%m-%dT%H:%MZ)${RESULTS_FROM:+ (with points of an earlier run, see the commands)}, commit $(git rev-parse --short HEAD); the binary: \`$FLOTILLA\`,"
    echo "built $(date -u -r "$FLOTILLA" +%Y-%m-%dT%H:%MZ) with the dev profile ($(grep -A1 '^\[profile.dev\]' Cargo.toml | sed -n 's/^opt-level = /own crates opt-level /p'), dependencies opt-level 3)."
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)),"
    echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(etcd --version 2>/dev/null | head -1 | tr -d '\n')."
    echo "Each store and each etcd member in its own CPU cgroup with the quota shown; PD (a group of"
    echo "three) and the load generator unlimited, at nice 0, on the same cores${BENCH_CG:+; all of them}"
    [ -n "$BENCH_CG" ] && echo "inside one cgroup with cpu.shares 262144, so that other jobs on the machine ran only on what it left idle"
    echo "(the load generator's CPU is in the tables)."
    if [ -n "${NOTE:-}" ]; then echo; echo "$NOTE"; fi
    echo
    echo "Commands (\$WORK is a fresh temporary directory):"
    echo
    echo '```sh'
    cat "$WORK/commands.md"
    echo '```'
    echo
    echo "The clusters' shape (\`flotilla ctl stores\`):"
    echo
    sed 's/^/- /' "$SHAPE_LOG"
    echo
    cat "$WORK/tables.md"
    echo "Plots: \`$OUT/bench/scale/<workload>-c<clients>-q<quota>.svg\`; the points, the CPU samples, the"
    echo "shapes and the commands: \`$OUT/bench/scale/\`."
    echo
    echo "<!-- bench-scale:end -->"
} >"$WORK/section.md"

splice_section bench-scale "Scale-out on emulated machines" "$WORK/section.md" "$OUT/perf.md"
echo "bench-scale: wrote $OUT/perf.md and $OUT/bench/scale/" >&2
