#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, builds, lints, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== build" >&2
cargo build --workspace --all-targets --locked

echo "== lint" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p raft_log -p raftstore -p test_cluster --all-targets --locked --features failpoints -- -D warnings

echo "== test" >&2
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo nextest run -p test_cluster --locked --no-fail-fast --features failpoints --test failpoints
else
    cargo test --workspace --locked --no-fail-fast
    cargo test -p test_cluster --locked --no-fail-fast --features failpoints --test failpoints
fi

# One fault campaign with mutual TLS on every connection (certificates made under its dir).
echo "== chaos with TLS" >&2
"$CARGO_TARGET_DIR/debug/flotilla" chaos --tls --workload register --duration 30s --seed 1 \
    --dir "$HOME/.cache/flotilla/chaos-tls"

# The official client's own suites (tikv-client 0.4.0's integration and failpoint tests),
# each against a fresh playground of the binary built above.
echo "== client suites" >&2
scripts/client-suites.sh integration failpoint
