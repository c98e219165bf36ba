#!/usr/bin/env bash
# Two variants of Flotilla side by side in one run: the playground (3 stores, many small
# regions) started with variant A, measured, stopped, then the same with variant B, each driven
# by the same `flotilla bench`. A variant is a binary and lines added to the playground's store
# settings. The default compares reads through a ReadIndex round (A: `local_reads_enabled =
# false`) with leader-lease local reads (B). Prints the table and the commands; the figures go
# to docs/perf.md by hand, with the command.
#
#   ./scripts/bench-ab.sh                                    # local reads off / on
#   A_LABEL=opt1 A_BIN=/tmp/f1 A_STORE= B_LABEL=opt3 B_BIN=/tmp/f3 B_STORE= ./scripts/bench-ab.sh
#
# Knobs (environment): A_LABEL, A_BIN, A_STORE, B_LABEL, B_BIN, B_STORE (binaries default to
# FLOTILLA, or the debug build), CLIENTS (1,64), WORKLOADS (raw-get,ycsb-c,raw-put), DURATION
# (10 s per point), WARMUP (3), KEYS (100000), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

CLIENTS=${CLIENTS:-1,64}
WORKLOADS=${WORKLOADS:-raw-get,ycsb-c,raw-put}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-100000}

source scripts/bench-lib.sh
bench_flotilla
A_LABEL=${A_LABEL:-local-reads-off}
A_BIN=${A_BIN:-$FLOTILLA}
A_STORE=${A_STORE-local_reads_enabled = false}
B_LABEL=${B_LABEL:-local-reads-on}
B_BIN=${B_BIN:-$FLOTILLA}
B_STORE=${B_STORE-local_reads_enabled = true}
BENCH_BIN=$FLOTILLA
bench_init ab

for v in A B; do
    label_var=${v}_LABEL bin_var=${v}_BIN store_var=${v}_STORE
    label=${!label_var}
    extra=${!store_var}
    FLOTILLA=${!bin_var}
    conf="$WORK/store-$label.toml"
    # The playground's own store settings (small regions), plus the variant's lines.
    printf '[raftstore]\nregion_max_size_bytes = 4194304\nregion_split_size_bytes = 3145728\nregion_max_keys = 3000\nregion_split_keys = 2000\n%s\n' \
        "$extra" >"$conf"
    echo "== $v: $label ($FLOTILLA; ${extra:-no extra settings})" >&2
    echo "# $v: $label, binary $FLOTILLA, store settings: ${extra:-none}" >>"$COMMANDS"
    start_playground "pg-$label" 3 --store-config "$conf"
    # The load generator is the same binary for both.
    FLOTILLA=$BENCH_BIN bench --target flotilla --pd "$PD" --label "$label" \
        --server-pids-file "$WORK/pg-$label/pids" --workload "load,$WORKLOADS" \
        --concurrency "$CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --keys "$KEYS"
    stop_pid "$PG_PID"
done

echo
echo "| workload | clients | $A_LABEL: ops/s, p50, p99, server CPU ms/op | $B_LABEL: ops/s, p50, p99, server CPU ms/op | throughput B/A | CPU/op B/A |"
echo "|---|---|---|---|---|---|"
python3 - "$RESULTS" "$A_LABEL" "$B_LABEL" <<'PY'
import json, sys
a_label, b_label = sys.argv[2], sys.argv[3]
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["workload"] == "load":
        continue
    rows.setdefault((r["workload"], r["clients"]), {})[r["label"]] = r
def cpu(r):
    return r.get("server_cpu_s_per_kop") or float("nan")
def cell(r):
    l = r["latency_ms"]
    return f'{r["ops_per_sec"]:,.0f}, {l["p50"]:.2f} ms, {l["p99"]:.2f} ms, {cpu(r):.3f}'
for (w, c), by in sorted(rows.items()):
    a, b = by.get(a_label), by.get(b_label)
    if a and b:
        print(f'| {w} | {c} | {cell(a)} | {cell(b)} | {b["ops_per_sec"] / a["ops_per_sec"]:.2f}x | {cpu(b) / cpu(a):.2f}x |')
PY
echo
echo "commands:"
cat "$COMMANDS"
