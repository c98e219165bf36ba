#!/usr/bin/env bash
# Shared set-up for the project's scripts: installs what a fresh machine lacks and points cargo
# at a target directory outside the clone, so that later runs reuse the RocksDB build.
# Sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
mkdir -p "$CARGO_TARGET_DIR"

have_libclang() {
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}

# Debian packages the build and tests need: libclang for RocksDB's bindings, protoc for
# etcd-client's generated code (the benchmark's etcd target), etcd for the benchmark's tests,
# a TrueType font for `flotilla bench-report`'s plots.
missing=()
have_libclang || missing+=(libclang-dev clang)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
