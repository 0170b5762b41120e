#!/usr/bin/env bash
# Builds the example plugins in plugins/ (with the SDK in sdk-wasm/) to wasm32-unknown-unknown and
# copies the modules to plugins/dist/<name>.wasm, where the tests load them.
#
# Route 1: a rustup toolchain with the wasm32-unknown-unknown target installed.
# Route 2 (no rustup target to be had): Debian's rustc-web + lld-22, building core and alloc from
#          source (installed with apt-get when missing; needs root).
# Env: PLUGINS_TARGET_DIR (default ~/.cache/firescroll/plugins-target).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${PLUGINS_TARGET_DIR:-$HOME/.cache/firescroll/plugins-target}"
OUT=plugins/dist
mkdir -p "$OUT"

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "building plugins with rustup's wasm32-unknown-unknown target"
    (cd plugins && cargo build --release --locked --target wasm32-unknown-unknown)
else
    if [ ! -x /usr/bin/wasm-ld-22 ] || [ ! -d /usr/lib/rustlib/src ]; then
        echo "installing Debian's rustc-web, rust-web-src and lld-22 (the wasm32 route without rustup)"
        if [ "$(id -u)" != 0 ]; then
            echo "need root to apt-get install rustc-web cargo-web rust-web-src lld-22" >&2; exit 1
        fi
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            rustc-web cargo-web rust-web-src lld-22 >/dev/null
    fi
    echo "building plugins with Debian's rustc-web ($(/usr/bin/rustc --version)) and -Z build-std"
    (cd plugins && env PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 \
        /usr/bin/cargo build -Z build-std=core,alloc --target wasm32-unknown-unknown --release --locked)
fi
for wasm in "$CARGO_TARGET_DIR"/wasm32-unknown-unknown/release/*.wasm; do
    name=$(basename "$wasm" .wasm)
    cp "$wasm" "$OUT/${name//_/-}.wasm"
done
ls -l "$OUT"
