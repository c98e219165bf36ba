#!/usr/bin/env bash
# Region merge after a mass delete (issue 13's goal: once 90% of a keyspace's keys are deleted,
# the region count falls to at most a third within 5 minutes, every remaining key readable).
#
# Starts a playground (its small regions: 4 MiB / 3,000 keys, PD told those thresholds and
# merging regions below a quarter of them), loads KEYS keys with `flotilla bench --workload
# load`, waits until the region count has been stable for 30 s, deletes the first 90% of the
# keys with one raw delete-range (`flotilla ctl delete-range`), then counts PD's regions every
# 5 s until at most a third of the count before remain, or TIMEOUT seconds pass. Finally every
# remaining key is read back (`flotilla ctl scan`, counted). Prints one summary line per step
# and appends the summary to OUT (default: stdout only).
#
# Knobs (environment): KEYS (60000), VALUE_SIZE (256), TIMEOUT (420), STORES (3), FLOTILLA
# (a built binary; default: build), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/bench-lib.sh

KEYS=${KEYS:-60000}
VALUE_SIZE=${VALUE_SIZE:-256}
TIMEOUT=${TIMEOUT:-420}
STORES=${STORES:-3}

bench_flotilla
bench_init merge

# The regions PD knows (every keyspace; the few outside the raw keyspace never change).
regions() {
    "$FLOTILLA" ctl --pd "$PD" regions | tail -n +2 | grep -c .
}

start_playground merge "$STORES"
bench --target flotilla --pd "$PD" --workload load --keys "$KEYS" --value-size "$VALUE_SIZE" \
    --concurrency 32 >"$WORK/load.out"
stable=0; last=-1
for _ in $(seq 1 120); do
    n=$(regions)
    if [ "$n" = "$last" ]; then stable=$((stable + 5)); else stable=0; last=$n; fi
    [ "$stable" -ge 30 ] && break
    sleep 5
done
before=$(regions)
echo "loaded $KEYS keys: $before regions"

cut_key=$(printf 'bench%012d' $((KEYS * 9 / 10)))
start_delete=$(date +%s)
"$FLOTILLA" ctl --pd "$PD" delete-range "bench" "$cut_key" >/dev/null
echo "deleted keys [bench, $cut_key) in $(( $(date +%s) - start_delete )) s"

goal=$(( before / 3 ))
t0=$(date +%s); reached=""
while :; do
    n=$(regions)
    elapsed=$(( $(date +%s) - t0 ))
    echo "  t=${elapsed}s regions=$n"
    if [ "$n" -le "$goal" ] && [ -z "$reached" ]; then reached=$elapsed; break; fi
    [ "$elapsed" -ge "$TIMEOUT" ] && break
    sleep 5
done
after=$(regions)
# Pages of 10,000 (the client's largest raw scan); each page after the first starts at the
# previous one's last key.
left=0; from=""
while :; do
    "$FLOTILLA" ctl --pd "$PD" scan "$from" "" --limit 10000 | cut -f1 | grep '^bench' \
        >"$WORK/page" || true
    n=$(grep -c . "$WORK/page" || true)
    if [ -n "$from" ]; then left=$((left + n - 1)); else left=$((left + n)); fi
    [ "$n" -lt 10000 ] && break
    from=$(tail -1 "$WORK/page")
done
want=$(( KEYS - KEYS * 9 / 10 ))
summary="merge after deleting 90% of $KEYS keys ($STORES stores): regions $before -> $after"
if [ -n "$reached" ]; then outcome="reached in $reached s"; else outcome="not reached in $TIMEOUT s"; fi
summary+=" (goal <= $goal: $outcome);"
summary+=" keys read back $left of $want"
echo "$summary"
[ -n "${OUT:-}" ] && echo "$summary" >>"$OUT"
[ "$left" = "$want" ] || { echo "bench-merge: $left keys left, $want expected" >&2; exit 1; }
