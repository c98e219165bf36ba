#!/usr/bin/env bash
# Many regions per store (issue 16): a playground of one PD and three stores whose raw keyspace
# is split into REGIONS regions (every region on every store, PD's merge checker off so that the
# empty regions stay), then idle. Measures, and prints as a markdown section:
#
# 1. how long the split took (`flotilla ctl presplit`) and until every store held every region;
# 2. idle, with hibernation on (the default): each store's and PD's CPU over IDLE seconds
#    (after SETTLE seconds), each store's RSS, and RSS per replica ((RSS - RSS of the store
#    before the split) / regions);
# 3. restart: the playground stopped and started again on the same data; seconds until PD
#    reports the three stores up and until a write to each of PROBES keys spread over the
#    keyspace has succeeded ("restart to serving"), then a cold load: `flotilla bench` raw-put at CLIENTS clients for
#    LOAD seconds over KEYS keys (so over every region), with its p99, max latency and errors
#    ("a write to any region succeeds within 2 s of a cold start of the load");
# 4. the same idle figures with `raftstore.hibernate_regions = false`, after a restart.
#
# Knobs (environment): REGIONS (100000), KEYS (4 x REGIONS), IDLE (30), SETTLE (60),
# CLIENTS (16), LOAD (20), PROBES (20), SPLIT_TIMEOUT (3600), OUT (a file to write the section to, else
# stdout only), KEEP=1 keeps the work directory, FLOTILLA (a built binary instead of the
# debug one).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

REGIONS=${REGIONS:-100000}
KEYS=${KEYS:-$((4 * REGIONS))}
IDLE=${IDLE:-30}
SETTLE=${SETTLE:-60}
CLIENTS=${CLIENTS:-16}
LOAD=${LOAD:-20}
PROBES=${PROBES:-20}
SPLIT_TIMEOUT=${SPLIT_TIMEOUT:-3600}

source scripts/bench-lib.sh
bench_flotilla
bench_init regions
DATA="$WORK/pg"
PD_PORT=$(free_port)
STORE_PORT=$(free_port)
LOG="$WORK/figures.md"

# PD's operators: `ctl presplit` asks one split per region that holds wanted boundaries, and a
# split is carried out on the region's next heartbeat, once a minute for a hibernated region;
# at the defaults (64 operators in flight, each given up after 60 s) a bulk split of 100,000
# regions would proceed at about one operator a second.
cat >"$WORK/pd.toml" <<EOF
merge_schedule_limit = 0
operators_max = 1000000
operator_timeout_secs = 600
EOF
for h in true false; do
    printf '[raftstore]\nhibernate_regions = %s\n' "$h" >"$WORK/store-$h.toml"
done

# pg HIBERNATE: starts the playground on $DATA (the same ports every time) and waits until
# PD reports three stores up; sets PG_PID, PD, and PD_PID/STORE_PIDS from the playground's
# pids file.
pg() {
    local t0=$SECONDS
    "$FLOTILLA" playground --data-dir "$DATA" --pd 1 --pd-port "$PD_PORT" --store-port "$STORE_PORT" \
        --stores 3 --pd-config "$WORK/pd.toml" --store-config "$WORK/store-$1.toml" \
        >>"$WORK/pg.out" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    PD="127.0.0.1:$PD_PORT"
    for _ in $(seq 1 600); do
        if [ "$("$FLOTILLA" ctl --pd "$PD" stores 2>/dev/null | grep -c ' up ')" = 3 ]; then
            break
        fi
        kill -0 "$PG_PID" 2>/dev/null || { tail -20 "$WORK/pg.out" >&2; exit 1; }
        sleep 1
    done
    UP_S=$((SECONDS - t0))
    PD_PID=$(head -1 "$DATA/pids")
    STORE_PIDS=$(for i in 1 2 3; do pgrep -f -- "--data-dir $DATA/store$i( |$)" | head -1; done | xargs)
}

stop_pg() {
    kill "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# probe: writes PROBES keys spread evenly over the bench keys (so over as many regions), each
# retried until it succeeds; one `flotilla ctl put` (a new client) per attempt.
probe() {
    local i key
    for i in $(seq 0 $((PROBES - 1))); do
        key=$(printf 'bench%012d' $((i * KEYS / PROBES)))
        until "$FLOTILLA" ctl --pd "$PD" put "$key" probe >/dev/null 2>>"$WORK/probe.err"; do sleep 0.2; done
    done
}

# idle LABEL: CPU and RSS of PD and the stores over IDLE seconds, as table rows.
idle() {
    local out
    sleep "$SETTLE"
    out=$(scripts/idle-cpu.sh "$IDLE" "$PD_PID" $STORE_PIDS)
    echo "$out" >>"$WORK/idle-$1.txt"
    local i=0 row="| $1 |"
    while read -r pid _ _ cpu rss; do
        cpu=${cpu#cpu=}
        rss=${rss#rss=}
        rss=${rss%kB}
        if [ "$pid" = "$PD_PID" ]; then
            pd_cell="$cpu, $((rss / 1024)) MB"
        else
            i=$((i + 1))
            local base=${BASE_RSS[$i]:-0}
            row="$row $cpu, $((rss / 1024)) MB ($(((rss - base) * 1024 / REGIONS)) B/replica) |"
        fi
    done <<<"$out"
    echo "$row $pd_cell |" >>"$LOG.idle"
}

pg true
declare -a BASE_RSS
i=0
for pid in $STORE_PIDS; do i=$((i + 1)); BASE_RSS[$i]=$(rss_kb "$pid"); done
t0=$SECONDS
"$FLOTILLA" ctl --pd "$PD" presplit --regions "$REGIONS" --keys "$KEYS" --timeout-secs "$SPLIT_TIMEOUT" \
    >"$WORK/presplit.out" 2>&1
SPLIT_S=$((SECONDS - t0))
# Regions in all (the keyspace's own as well), as PD counts them (it may be slow to answer
# while the last splits land).
TOTAL=$(curl -sf --max-time 60 "$PD/pd/api/v1/regions" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["regions"]))')
until "$FLOTILLA" ctl --pd "$PD" stores 2>/dev/null | awk -v n="$TOTAL" 'NR > 1 && NF >= 6 { s++; if ($5 < n) bad = 1 } END { exit bad || s < 3 }'; do
    sleep 2
done
ALL_S=$((SECONDS - t0))
idle "on"

stop_pg
t0=$SECONDS
pg true
RESTART_UP_S=$UP_S
probe
SERVING_S=$((SECONDS - t0))
"$FLOTILLA" bench --pd "$PD" --workload raw-put --concurrency "$CLIENTS" --duration-secs "$LOAD" \
    --warmup-secs 0 --keys "$KEYS" --json "$WORK/load.jsonl" --seed 1 >"$WORK/load.out" 2>&1
LOAD_LINE=$(python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
lat = r["latency_ms"]
ops, p99, mx, errs = r["ops_per_sec"], lat["p99"], lat["max"], r["errors"]
print(f"{ops:,.0f} puts/s, p99 {p99:.1f} ms, max {mx:.1f} ms, {errs} errors")
' "$WORK/load.jsonl")
idle "on, after the restart and the load"

stop_pg
pg false
idle "off"
stop_pg

{
    echo "$REGIONS regions asked ($TOTAL in all, with the keyspace's own), each on all three stores:"
    echo "split in ${SPLIT_S} s, every store held every region ${ALL_S} s after the split began."
    echo "Restart on the same data: stores up after ${RESTART_UP_S} s, a write to each of $PROBES keys spread over the keyspace succeeded ${SERVING_S} s after the start;"
    echo "then a cold raw-put load at $CLIENTS clients over $KEYS keys for $LOAD s: $LOAD_LINE."
    echo
    echo "| hibernate_regions | store 1: CPU %, RSS | store 2 | store 3 | PD |"
    echo "|---|---|---|---|---|"
    cat "$LOG.idle"
} | tee "$LOG"
[ -n "${OUT:-}" ] && cp "$LOG" "$OUT"
exit 0
