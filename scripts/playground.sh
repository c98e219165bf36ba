#!/usr/bin/env bash
# Starts the playground cluster (PD and three stores on 127.0.0.1, data under ./data/playground)
# on a fresh machine: installs what is missing, builds, runs. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --locked --bin flotilla
exec "$CARGO_TARGET_DIR/debug/flotilla" playground "$@"
