#!/usr/bin/env bash
# Hot spots on emulated machines: zipfian YCSB-A (theta 0.99; DIST zipfian, YCSB's scrambled
# one, or zipfian-range, the hottest keys neighbours: a hot range) against a playground of STORES
# stores, each in a CPU cgroup of QUOTA cores, once with load-based split and hot-region
# scheduling off and once with them on, one after the other in one run, with the same
# `flotilla bench`.
#
# For each mode: the playground (its small regions), KEYS keys loaded uniformly, the wait until
# PD reports MIN_REGIONS regions with balanced leaders and replicas; then SETTLE seconds of the
# zipfian load that are not measured (what load split and the hot-region scheduler need to act
# on: detect_times windows of a region's traffic, and PD's view of it from the leaders'
# heartbeats), then DURATION seconds measured, with each store's CPU sampled around them.
# Prints the table (ops/s, p50, p99, the busiest store's cores against the mean, regions) and
# writes the section of docs/perf.md between the bench-hot-$DIST markers.
#
# The thresholds are scaled to the emulated machines (QUOTA cores serve a few thousand
# requests per second in all, so the defaults meant for whole machines, 3,000 requests per
# second per region and 512 KiB/s, are never reached): SPLIT_QPS (requests per second that
# make a region hot for load split, 200), HOT_BYTES (bytes per second that make a region hot
# for PD, 16384).
#
# Knobs (environment): DIST (zipfian), STORES (6), QUOTA (0.2), CLIENTS (64), KEYS (50000), SETTLE (90),
# DURATION (30), MIN_REGIONS (24), BALANCE_WAIT (300), SPLIT_QPS, HOT_BYTES, OUT (docs),
# KEEP=1 keeps the work directory, FLOTILLA (a built binary instead of the debug one).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

STORES=${STORES:-6}
QUOTA=${QUOTA:-0.2}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-50000}
SETTLE=${SETTLE:-90}
DURATION=${DURATION:-30}
MIN_REGIONS=${MIN_REGIONS:-24}
BALANCE_WAIT=${BALANCE_WAIT:-300}
SPLIT_QPS=${SPLIT_QPS:-200}
HOT_BYTES=${HOT_BYTES:-16384}
DIST=${DIST:-zipfian}
OUT=${OUT:-docs}

source scripts/bench-lib.sh
bench_need_tools
bench_flotilla
bench_init hot
bench_priority bench-hot
CPU="$WORK/cpu.jsonl"
SHAPE_LOG="$WORK/shapes.txt"

for mode in off on; do
    on=false
    [ "$mode" = on ] && on=true
    label="hot-$DIST-$mode"
    # The playground's own settings (small regions, PD told of them), plus the mode's.
    store_conf="$WORK/store-$mode.toml"
    pd_conf="$WORK/pd-$mode.toml"
    cat >"$store_conf" <<EOF
[raftstore]
region_max_size_bytes = 4194304
region_split_size_bytes = 3145728
region_max_keys = 3000
region_split_keys = 2000

[split]
enabled = $on
qps_threshold = $SPLIT_QPS
EOF
    cat >"$pd_conf" <<EOF
region_max_size_bytes = 4194304
region_max_keys = 3000
max_merge_region_size_bytes = 1048576
max_merge_region_keys = 750
hot_region_schedule = $on
hot_region_byte_rate_min_per_sec = $HOT_BYTES
EOF
    echo "== $label" >&2
    echo "# $label: store settings $(tail -3 "$store_conf" | paste -sd' '); PD: $(tail -2 "$pd_conf" | paste -sd' ')" >>"$COMMANDS"
    start_playground "$label" "$STORES" --store-cpu "$QUOTA" --store-config "$store_conf" \
        --pd-config "$pd_conf"
    target=(--target flotilla --pd "$PD" --server-pids-file "$WORK/$label/pids")
    bench "${target[@]}" --label "$label-load" --workload load --concurrency "$CLIENTS" --keys "$KEYS"
    echo "flotilla bench --pd \$PD --workload raw-get --ops 1 --min-regions $MIN_REGIONS --wait-secs 300 (waits for the shape)" >>"$COMMANDS"
    "$FLOTILLA" bench --pd "$PD" --workload raw-get --ops 1 --concurrency 1 --warmup-secs 0 \
        --keys "$KEYS" --min-regions "$MIN_REGIONS" --wait-secs 300 --seed 1 \
        | grep '^cluster:' | sed "s/^/$label /" >>"$SHAPE_LOG"
    wait_balanced "$label"
    shape "$label" before "before the zipfian load"
    zipf=(--workload ycsb-a --distribution "$DIST" --concurrency "$CLIENTS" --keys "$KEYS")
    bench "${target[@]}" --label "$label-settle" "${zipf[@]}" --duration-secs "$SETTLE" --warmup-secs 0
    shape "$label" settled "after ${SETTLE} s of it"
    pids=$(paste -sd' ' "$WORK/$label/pids")
    cpu_snapshot $pids >"$WORK/before"
    t0=$(date +%s.%N)
    bench "${target[@]}" --label "$label" "${zipf[@]}" --duration-secs "$DURATION" --warmup-secs 0
    t1=$(date +%s.%N)
    cpu_snapshot $pids >"$WORK/after"
    cpu_point "$label" ycsb-a "$CLIENTS" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$WORK/before" "$WORK/after"
    shape "$label" end "at the end"
    stop_pid "$PG_PID"
done

python3 - "$RESULTS" "$CPU" "$DIST" >"$WORK/table.md" <<'EOF'
import json, sys
results = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    results[r["label"]] = r
cpu = {json.loads(l)["label"]: json.loads(l) for l in open(sys.argv[2])}
dist = sys.argv[3]
print("| mode | ops/s | p50 ms | p99 ms | errors | store cores: busiest / mean (each) | PD cores |")
print("|---|---|---|---|---|---|---|")
for mode in ("off", "on"):
    r, c = results[f"hot-{dist}-{mode}"], cpu[f"hot-{dist}-{mode}"]
    cores = sorted((m["cores"] for m in c["machines"]), reverse=True)
    mean = sum(cores) / len(cores)
    each = ", ".join(f"{x:.2f}" for x in cores)
    print(f"| {mode} | {r['ops_per_sec']:.0f} | {r['latency_ms']['p50']:.2f} | {r['latency_ms']['p99']:.2f} | {r['errors']} "
          f"| {cores[0] / mean:.2f}x ({each}) | {c['pd_cores']:.2f} |")
off, on = results[f"hot-{dist}-off"]["ops_per_sec"], results[f"hot-{dist}-on"]["ops_per_sec"]
print()
print(f"Throughput on / off: **{on / off:.2f}x**.")
EOF
cat "$WORK/table.md"

{
    echo "<!-- bench-hot-$DIST:begin (generated by scripts/bench-hot.sh; edits here are overwritten) -->"
    echo
    echo "Run of $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), binary \`$FLOTILLA\`."
    echo "$STORES stores, each in its own CPU cgroup of $QUOTA cores; PD (a group of three) and the"
    echo "load generator unlimited${BENCH_CG:+, all inside one cgroup with cpu.shares 262144}."
    echo "YCSB-A with keys drawn $DIST (theta 0.99, 50% reads, 50% updates, 256-byte values) at $CLIENTS clients over"
    echo "$KEYS keys; ${SETTLE} s of it unmeasured, then ${DURATION} s measured. \"off\": \`[split] enabled ="
    echo "false\` and \`hot_region_schedule = false\`; \"on\": both on, with load split at $SPLIT_QPS requests"
    echo "per second per region and PD's hot threshold at $HOT_BYTES bytes per second."
    echo
    echo "Commands (\$WORK is a fresh temporary directory):"
    echo
    echo '```sh'
    echo "DIST=$DIST STORES=$STORES QUOTA=$QUOTA CLIENTS=$CLIENTS KEYS=$KEYS SETTLE=$SETTLE DURATION=$DURATION SPLIT_QPS=$SPLIT_QPS HOT_BYTES=$HOT_BYTES ./scripts/bench-hot.sh"
    cat "$COMMANDS"
    echo '```'
    echo
    echo "The clusters' shape (\`flotilla ctl stores\`):"
    echo
    sed 's/^/- /' "$SHAPE_LOG"
    echo
    cat "$WORK/table.md"
    echo
    echo "<!-- bench-hot-$DIST:end -->"
} >"$WORK/section.md"
splice_section "bench-hot-$DIST" "Hot spots on emulated machines ($DIST)" "$WORK/section.md" "$OUT/perf.md"
echo "bench-hot: wrote $OUT/perf.md" >&2
