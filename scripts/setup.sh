#!/usr/bin/env bash
# Shared set-up for the project's scripts: installs what a fresh machine lacks and points cargo
# at a target directory outside the clone, so that later runs reuse the RocksDB build.
# Sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
mkdir -p "$CARGO_TARGET_DIR"

have_libclang() {
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

have_fonts() {
    [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]
}

if ! have_libclang || ! have_fonts; then
    echo "setup: installing libclang-dev (RocksDB's bindings) and fonts-dejavu-core (bench-report plots)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev clang fonts-dejavu-core >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
