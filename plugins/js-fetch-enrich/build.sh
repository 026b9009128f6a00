#!/bin/sh
# Builds this JavaScript stage into a WebAssembly component of sluice's
# `plugin` world (../../wit) with componentize-js.
#
#   ./build.sh OUT_WASM
#
# Idempotent: installs the pinned toolchain (package-lock.json) into this
# directory's node_modules only when it is missing; needs npm registry access
# the first time. `jco` is not used (jco 1.35 as installed here is broken).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_WASM" >&2
    exit 2
fi

out=$1
case $out in
    /*) ;;
    *) out=$(pwd)/$out ;;
esac

dir=$(cd "$(dirname "$0")" && pwd)
cd "$dir"

if [ ! -x node_modules/.bin/componentize-js ]; then
    npm ci --no-audit --no-fund
fi

mkdir -p "$(dirname "$out")"
# Default features (stdio, random, clocks, http, fetch-event): the component
# imports WASI 0.2, which sluice links; `http` gives the stage `fetch()`.
node_modules/.bin/componentize-js app.js --wit ../../wit --world-name plugin --out "$out"
echo "built $out"
