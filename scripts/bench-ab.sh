#!/usr/bin/env bash
# Two variants of Flotilla side by side in one run: the playground (STORES stores, 3 by
# default, many small regions) started with variant A, measured, stopped, then the same with variant B, each driven
# by the same `flotilla bench`. A variant is a binary, lines added to the playground's store
# settings and arguments of the playground (e.g. --tls, which the load generator then follows
# with the playground's client certificate). The default compares reads through a ReadIndex
# round (A: `local_reads_enabled = false`) with leader-lease local reads (B). With ROUNDS > 1
# the pair is measured again (A B A B ...) on fresh playgrounds, one table row per round. The
# run sits in a cgroup with the largest cpu.shares where one can be made (`bench_priority`), so
# that other jobs on the machine take only what it leaves idle. Prints the table and the
# commands; the figures go to docs/perf.md by hand, with the command.
#
#   ./scripts/bench-ab.sh                                    # local reads off / on
#   A_LABEL=opt1 A_BIN=/tmp/f1 A_STORE= B_LABEL=opt3 B_BIN=/tmp/f3 B_STORE= ./scripts/bench-ab.sh
#   A_LABEL=plaintext A_STORE= B_LABEL=tls B_STORE= B_PG=--tls ROUNDS=3 CLIENTS=64 \
#     WORKLOADS=raw-put,raw-get ./scripts/bench-ab.sh       # the cost of TLS
#
# Knobs (environment): A_LABEL, A_BIN, A_STORE, A_PG, B_LABEL, B_BIN, B_STORE, B_PG (binaries
# default to FLOTILLA, or the debug build), ROUNDS (1), CLIENTS (1,64), WORKLOADS
# (raw-get,ycsb-c,raw-put), DURATION (10 s per point), WARMUP (3), KEYS (100000), STORES (3),
# KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

CLIENTS=${CLIENTS:-1,64}
WORKLOADS=${WORKLOADS:-raw-get,ycsb-c,raw-put}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-100000}
ROUNDS=${ROUNDS:-1}
STORES=${STORES:-3}

source scripts/bench-lib.sh
bench_flotilla
A_LABEL=${A_LABEL:-local-reads-off}
A_BIN=${A_BIN:-$FLOTILLA}
A_STORE=${A_STORE-local_reads_enabled = false}
B_LABEL=${B_LABEL:-local-reads-on}
B_BIN=${B_BIN:-$FLOTILLA}
B_STORE=${B_STORE-local_reads_enabled = true}
A_PG=${A_PG:-}
B_PG=${B_PG:-}
BENCH_BIN=$FLOTILLA
bench_init ab
bench_priority bench-ab

for round in $(seq 1 "$ROUNDS"); do
for v in A B; do
    label_var=${v}_LABEL bin_var=${v}_BIN store_var=${v}_STORE pg_var=${v}_PG
    label=${!label_var}
    extra=${!store_var}
    read -r -a pg_args <<<"${!pg_var}"
    FLOTILLA=${!bin_var}
    name="pg-$label-r$round"
    conf="$WORK/store-$label.toml"
    # The playground's own store settings (small regions), plus the variant's lines.
    printf '[raftstore]\nregion_max_size_bytes = 4194304\nregion_split_size_bytes = 3145728\nregion_max_keys = 3000\nregion_split_keys = 2000\n%s\n' \
        "$extra" >"$conf"
    echo "== round $round, $v: $label ($FLOTILLA; ${extra:-no extra settings}; playground ${pg_args[*]:-defaults})" >&2
    echo "# round $round, $v: $label, binary $FLOTILLA, store settings: ${extra:-none}" >>"$COMMANDS"
    start_playground "$name" "$STORES" --store-config "$conf" "${pg_args[@]}"
    # The load generator is the same binary for both.
    FLOTILLA=$BENCH_BIN bench "${PG_TLS[@]}" --target flotilla --pd "$PD" --label "$label" \
        --server-pids-file "$WORK/$name/pids" --workload "load,$WORKLOADS" \
        --concurrency "$CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --keys "$KEYS"
    stop_pid "$PG_PID"
done
done

echo
echo "| round | workload | clients | $A_LABEL: ops/s, p50, p99, server CPU ms/op | $B_LABEL: ops/s, p50, p99, server CPU ms/op | throughput B/A | CPU/op B/A |"
echo "|---|---|---|---|---|---|---|"
python3 - "$RESULTS" "$A_LABEL" "$B_LABEL" <<'PY'
import json, sys
a_label, b_label = sys.argv[2], sys.argv[3]
# The k-th result of a (workload, clients, label) is round k's.
rows, seen = {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["workload"] == "load":
        continue
    key = (r["workload"], r["clients"], r["label"])
    seen[key] = seen.get(key, 0) + 1
    rows.setdefault((seen[key], r["workload"], r["clients"]), {})[r["label"]] = r
def cpu(r):
    return r.get("server_cpu_s_per_kop") or float("nan")
def cell(r):
    l = r["latency_ms"]
    return f'{r["ops_per_sec"]:,.0f}, {l["p50"]:.2f} ms, {l["p99"]:.2f} ms, {cpu(r):.3f}'
for (n, w, c), by in sorted(rows.items()):
    a, b = by.get(a_label), by.get(b_label)
    if a and b:
        print(f'| {n} | {w} | {c} | {cell(a)} | {cell(b)} | {b["ops_per_sec"] / a["ops_per_sec"]:.2f}x | {cpu(b) / cpu(a):.2f}x |')
PY
echo
echo "commands:"
cat "$COMMANDS"
