#!/usr/bin/env bash
# Builds the C stage c-json-filter into a WebAssembly component.
#
#   plugins/c-json-filter/build.sh OUT_WASM
#
# Idempotent. Installs clang-16, lld-16, the wasm32 compiler runtime and wasi-libc from
# Debian when missing; builds tools/wasm-c (bindings + component encoding, instead of the
# wit-bindgen and wasm-tools CLIs) into $CARGO_TARGET_DIR (default: the workspace target);
# generates the C bindings of the `plugin` world into a temporary directory; compiles
# stage.c with clang-16 and wraps the core module into a component at OUT_WASM.
#
# The stage uses no stdio, so its core module imports nothing from WASI and needs no
# preview1 adapter. If you change that, set WASI_ADAPTER to the reactor adapter
# (wasi_snapshot_preview1.reactor.wasm from the crate wasi-preview1-component-adapter-provider).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_WASM" >&2
  exit 2
fi
out=$1
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# 1. Debian packages.
packages=(clang-16 lld-16 libclang-rt-16-dev-wasm32 wasi-libc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "c-json-filter: installing Debian packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The wasm-c tool (cargo resolves a relative CARGO_TARGET_DIR against its working directory).
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
cargo build --release -p wasm-c --target-dir "$target_dir"
wasm_c="$target_dir/release/wasm-c"

# 3. Bindings, compile, componentise.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/c-json-filter.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

"$wasm_c" bindings "$root/wit" plugin "$tmp/gen" >/dev/null

clang-16 --target=wasm32-wasi --sysroot=/usr -O2 -msimd128 -mexec-model=reactor \
  -Wall -Wextra -I "$tmp/gen" -Wl,--strip-all \
  -o "$tmp/core.wasm" \
  "$here/stage.c" "$tmp/gen/plugin.c" "$tmp/gen/plugin_component_type.o"

adapter=()
[ -n "${WASI_ADAPTER:-}" ] && adapter=(--adapter "$WASI_ADAPTER")
mkdir -p "$(dirname "$out")"
"$wasm_c" component "$tmp/core.wasm" "$out" "${adapter[@]}"
