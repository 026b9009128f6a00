#!/usr/bin/env bash
# Builds the Zig stage zig-json-filter into a WebAssembly component.
#
#   plugins/zig-json-filter/build.sh OUT_WASM
#
# The same route as `sluice build` of a Zig stage (host/src/cli/build/zig.rs):
#   1. Zig from PyPI (the ziglang wheel, pinned as in zig.rs) in a venv in
#      $SLUICE_TOOLCHAINS/zig-venv (default: the repo's target/toolchains), once;
#      Zig's global cache beside it. Needs only python3 with venv.
#   2. wit-bindgen's C bindings of the `plugin` world (tools/wasm-c, built into
#      $CARGO_TARGET_DIR), translated into the Zig module `plugin` by
#      `zig translate-c` (Zig 0.17 has no @cImport).
#   3. `zig build-exe` into a reactor core module, linking the bindings' C half.
#   4. tools/wasm-c wraps it into a component at OUT_WASM with the WASI preview 1
#      reactor adapter (Zig's libc imports wasi_snapshot_preview1), taken from the
#      crate wasi-preview1-component-adapter-provider that host/Cargo.toml pins to
#      our wasmtime's release.
set -euo pipefail

ZIGLANG_VERSION=0.17.1

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_WASM" >&2
  exit 2
fi
out=$1
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
toolchains=${SLUICE_TOOLCHAINS:-$root/target/toolchains}
venv=$toolchains/zig-venv
export ZIG_GLOBAL_CACHE_DIR=$toolchains/zig-cache
zig() { "$venv/bin/python" -m ziglang "$@"; }

# 1. Zig, (re)installed only when the pinned version is not already there.
if [ "$(zig version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
  echo "zig-json-filter: installing ziglang $ZIGLANG_VERSION into $venv (once)" >&2
  mkdir -p "$toolchains"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" >&2
fi

# 2. The wasm-c tool (cargo resolves a relative CARGO_TARGET_DIR against its working
#    directory) and the adapter's path in cargo's registry.
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
cargo build --release -p wasm-c --target-dir "$target_dir"
wasm_c="$target_dir/release/wasm-c"
adapter_crate=$(cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in pkgs if p["name"] == "wasi-preview1-component-adapter-provider"))')
adapter="$(dirname "$adapter_crate")/artefacts/wasi_snapshot_preview1.reactor.wasm"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/zig-json-filter.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
gen=$tmp/gen
"$wasm_c" bindings "$root/wit" plugin "$gen" >/dev/null
zig translate-c -target wasm32-wasi -lc "$gen/plugin.h" >"$gen/plugin.zig"

# 3. Compile: stage.zig is the root module and imports the bindings as `plugin`;
#    per-module settings come before each -M.
zig build-exe -target wasm32-wasi -mcpu generic+simd128 -O ReleaseSmall -fstrip -fno-entry -mexec-model=reactor -lc \
  --dep plugin "-Mroot=$here/stage.zig" \
  -I "$gen" "$gen/plugin.c" "$gen/plugin_component_type.o" "-Mplugin=$gen/plugin.zig" \
  --cache-dir "$tmp/zig-cache" "-femit-bin=$tmp/core.wasm"

# 4. The component.
mkdir -p "$(dirname "$out")"
"$wasm_c" component "$tmp/core.wasm" "$out" --adapter "$adapter"
