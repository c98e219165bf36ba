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
# OUT (docs), KEEP=1 keeps the work directory, FLOTILLA (a built binary to use instead of
# building the debug one).
#
# QUICK=1: a few minutes, for before and after a performance change: many regions against etcd
# only, 64 clients, raw-put, raw-get, ycsb-c and txn-rmw, 5 s per point, no
# profiles; prints the ratio table (throughput, server CPU per operation, p99) and writes
# nothing under docs/. The knobs above still override its defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/setup.sh

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    CLIENTS=${CLIENTS:-64}
    WORKLOADS=${WORKLOADS:-raw-put,raw-get,ycsb-c,txn-rmw}
    DURATION=${DURATION:-5}
    WARMUP=${WARMUP:-2}
fi
CLIENTS=${CLIENTS:-1,16,64,256}
WORKLOADS=${WORKLOADS:-raw-put,raw-get,ycsb-a,ycsb-b,ycsb-c,ycsb-e,txn-rmw}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-100000}
PROFILE_CLIENTS=${PROFILE_CLIENTS:-64}
PROFILE_WORKLOADS=${PROFILE_WORKLOADS:-raw-put,ycsb-c,txn-rmw}
OUT=${OUT:-docs}

source scripts/bench-lib.sh
bench_need_tools etcd

bench_flotilla
bench_init bench
SHAPES="$WORK/shapes.txt"

# profile LABEL ARGS...: flamegraphs of every store under a few workloads at PROFILE_CLIENTS
# clients, in a pass of its own after the measured one (sampling costs the stores CPU, so the
# profiled figures go to their own file, not into the tables).
profile() {
    [ "$QUICK" = 1 ] && return 0
    local label=$1; shift
    echo "flotilla bench --pd $PD --label $label $* --workload $PROFILE_WORKLOADS --concurrency $PROFILE_CLIENTS --profile $OUT/bench/profiles" \
        | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    "$FLOTILLA" bench --pd "$PD" --label "$label" "$@" --workload "$PROFILE_WORKLOADS" \
        --concurrency "$PROFILE_CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --keys "$KEYS" --profile "$OUT/bench/profiles" --json "$WORK/profiled.jsonl" --seed 1
}

[ "$QUICK" = 1 ] || rm -rf "$OUT/bench/profiles"

echo "== disk: fsync latency" >&2
bench --target disk --label disk-fsync --fsync-dir "$WORK/fsync" --concurrency 1 \
    --duration-secs "$DURATION" --warmup-secs 1

common=(--concurrency "$CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --keys "$KEYS")
txn_load=""
case ",$WORKLOADS," in *,txn-rmw*) txn_load=",load-txn" ;; esac

if [ "$QUICK" != 1 ]; then
echo "== flotilla, one region" >&2
start_playground one 3 --single-region
bench --target flotilla --pd "$PD" --label flotilla-1region --server-pids-file "$WORK/one/pids" \
    --workload "load$txn_load,$WORKLOADS" "${common[@]}"
profile flotilla-1region --server-pids-file "$WORK/one/pids"
"$FLOTILLA" ctl --pd "$PD" regions >"$WORK/one-regions.txt"
"$FLOTILLA" ctl --pd "$PD" stores >"$WORK/one-stores.txt"
echo "flotilla-1region at the end: $(head -1 "$WORK/one-regions.txt")" >>"$SHAPES"
stop_pid "$PG_PID"
fi

echo "== flotilla, many regions" >&2
start_playground many 3
bench --target flotilla --pd "$PD" --label flotilla-many --server-pids-file "$WORK/many/pids" \
    --workload "load$txn_load,$WORKLOADS" "${common[@]}" --min-regions 32
profile flotilla-many --server-pids-file "$WORK/many/pids"
"$FLOTILLA" ctl --pd "$PD" regions >"$WORK/many-regions.txt"
"$FLOTILLA" ctl --pd "$PD" stores >"$WORK/many-stores.txt"
echo "flotilla-many at the end: $(head -1 "$WORK/many-regions.txt")" >>"$SHAPES"
stop_pid "$PG_PID"

echo "== etcd, three members" >&2
start_etcd etcd 3
bench --target etcd --endpoints "$ETCD_ENDPOINTS" --etcd-serializable --label etcd \
    --server-pids "$ETCD_SERVER_PIDS" --workload "load,$WORKLOADS" "${common[@]}"
for pid in "${ETCD_PIDS[@]}"; do stop_pid "$pid"; done

if [ "$QUICK" = 1 ]; then
    echo
    echo "| workload | clients | Flotilla ops/s | etcd ops/s | throughput | server CPU ms/op, Flotilla / etcd | CPU/op | p99 ms, Flotilla / etcd |"
    echo "|---|---|---|---|---|---|---|---|"
    python3 - "$RESULTS" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["workload"], r["clients"]), {})[r["label"]] = r
cpu = lambda r: r.get("server_cpu_s_per_kop") or float("nan")
for (w, c), by in sorted(rows.items()):
    f, e = by.get("flotilla-many"), by.get("etcd")
    if not (f and e) or w.startswith("load"):
        continue
    print(f'| {w} | {c} | {f["ops_per_sec"]:,.0f} | {e["ops_per_sec"]:,.0f} | '
          f'{f["ops_per_sec"] / e["ops_per_sec"]:.2f}x | {cpu(f):.3f} / {cpu(e):.3f} | '
          f'{cpu(f) / cpu(e):.2f}x | {f["latency_ms"]["p99"]:.1f} / {e["latency_ms"]["p99"]:.1f} |')
PY
    echo
    echo "commands:"
    cat "$COMMANDS"
    exit 0
fi

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
    echo "$(etcd --version 2>/dev/null | head -1 | tr -d '\n'); Flotilla built with the dev profile ($(grep -A1 '^\[profile.dev\]' Cargo.toml | sed -n 's/^opt-level = /own crates opt-level /p'), dependencies opt-level 3)."
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
splice_section bench-compare "Side by side: one region, many regions, etcd" "$WORK/section.md" "$perf"
echo "wrote $perf and $OUT/bench/" >&2
