#!/usr/bin/env bash
# Runs a matrix of `flotilla chaos` campaigns and prints one line per run as a markdown table
# row (the table in docs/reliability.md is made of these lines).
#
#   WORKLOADS="list-append bank" SEEDS="4471 5001 5002" NEMESIS=kill-pd,pause,transfer-leader,split \
#   DURATION=2m JOBS=1 ./scripts/chaos-matrix.sh
#
# NEMESIS=all uses every fault kind. JOBS runs that many campaigns at once (each is 3 PD members
# and 3 stores; on two cores, 1 keeps the timing closest to a quiet machine). Runs keep their
# files under ${DIR:-./data/chaos-matrix}; the summary goes to stdout and to $DIR/summary.md.
# Exits non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

WORKLOADS="${WORKLOADS:-list-append bank}"
SEEDS="${SEEDS:-4471}"
NEMESIS="${NEMESIS:-kill-pd,pause,transfer-leader,split}"
DURATION="${DURATION:-2m}"
JOBS="${JOBS:-1}"
DIR="${DIR:-./data/chaos-matrix}"

# BIN names a flotilla binary to use as it is (no build), e.g. one copied aside while the tree
# changes.
if [ -z "${BIN:-}" ]; then
    cargo build --locked --bin flotilla >&2
    BIN="$CARGO_TARGET_DIR/debug/flotilla"
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

nemesis_args=()
if [ "$NEMESIS" != all ]; then
    nemesis_args=(--nemesis "$NEMESIS")
fi

one() {
    local workload=$1 seed=$2
    local log="$DIR/$workload-$seed.log"
    "$BIN" chaos --workload "$workload" --seed "$seed" --duration "$DURATION" \
        "${nemesis_args[@]}" --dir "$DIR" >"$log" 2>&1
    local rc=$?
    python3 - "$DIR/$workload-$seed/verdict.json" "$workload" "$seed" "$rc" <<'EOF'
import json, sys
path, workload, seed, rc = sys.argv[1:]
try:
    v = json.load(open(path))
except Exception as e:
    print(f"| {workload} | {seed} | FAIL (no verdict: exit {rc}) | | | | | |")
    sys.exit(0)
f = v["faults"]
pd = v.get("pd_lookups") or {}
changes = pd.get("leader_changes") or []
causes = {}
for c in changes:
    causes[c.get("cause") or "other"] = causes.get(c.get("cause") or "other", 0) + 1
why = ", ".join(f"{k} {n}" for k, n in sorted(causes.items()))
ok = "pass" if v["passed"] else "FAIL: " + "; ".join(v.get("findings") or [])
kinds = ", ".join(f"{k} {n}" for k, n in sorted(f.items()) if k != "mix")
print(f"| {workload} | {seed} | {ok} | {v['ops']:,} ({v['ops_unknown_outcome']} unknown) "
      f"| {v['faults_injected']} ({kinds}) | {len(changes)} ({why}) "
      f"| {pd.get('rounds', 0):,} / {pd.get('lookup_failed', '-')} "
      f"| {v['recovery_ms']['p99']} ms |")
EOF
}

header="| workload | seed | verdict | transactions | faults | PD leader changes | lookup rounds / failed | recovery p99 |
|---|---|---|---|---|---|---|---|"
echo "$header" | tee "$DIR/summary.md"
running=0
for workload in $WORKLOADS; do
    for seed in $SEEDS; do
        one "$workload" "$seed" | tee -a "$DIR/summary.md" &
        running=$((running + 1))
        if [ "$running" -ge "$JOBS" ]; then
            wait -n
            running=$((running - 1))
        fi
    done
done
wait
! grep -q "FAIL" "$DIR/summary.md"
