#!/usr/bin/env bash
# The long form of the fault campaigns: runs `flotilla chaos` for each workload, one after the
# other, and prints each verdict. Every run keeps its history, fault timeline and verdict under
# data/chaos/<workload>-<seed>/ (a failing run also keeps its data directories and logs).
#
#   ./scripts/chaos.sh                      # 30 minutes each of register, bank, list-append
#   DURATION=5m ./scripts/chaos.sh          # shorter
#   WORKLOADS="bank" SEEDS="7 8" ./scripts/chaos.sh
#   STORES=5 ./scripts/chaos.sh             # five stores instead of three
#   PD_MEMBERS=1 ./scripts/chaos.sh         # PD alone instead of a group of three
#
# Exits non-zero if any run fails; replay a run with the seed it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

DURATION="${DURATION:-30m}"
WORKLOADS="${WORKLOADS:-register bank list-append}"
SEEDS="${SEEDS:-$RANDOM}"
STORES="${STORES:-3}"
PD_MEMBERS="${PD_MEMBERS:-3}"
DIR="${DIR:-data/chaos}"

cargo build --locked --bin flotilla
bin="$CARGO_TARGET_DIR/debug/flotilla"
# The campaign restarts stores from its own executable: run a copy, so that a rebuild during a
# long campaign does not swap the binary under it.
copy="$(mktemp -d)/flotilla"
cp "$bin" "$copy"

failed=0
for seed in $SEEDS; do
    for w in $WORKLOADS; do
        echo "== $w, seed $seed, $DURATION, $STORES stores, $PD_MEMBERS PD members" >&2
        if ! "$copy" chaos --workload "$w" --seed "$seed" --duration "$DURATION" \
            --stores "$STORES" --pd-members "$PD_MEMBERS" --dir "$DIR"; then
            failed=1
        fi
        # Re-check the recorded history with the checker alone.
        "$copy" check --workload "$w" "$DIR/$w-$seed/history.jsonl" | tail -1
    done
done
rm -rf "$(dirname "$copy")"
exit $failed
