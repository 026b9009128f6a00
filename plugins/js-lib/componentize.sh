#!/bin/sh
# Builds a JavaScript stage into a WebAssembly component of sluice's `plugin`
# world (../../wit) with componentize-js:
#
#   componentize.sh STAGE_DIR OUT_WASM
#
# STAGE_DIR holds the stage's app.js and its package.json / package-lock.json.
# Idempotent: installs the pinned toolchain into STAGE_DIR/node_modules only
# when it is missing; needs npm registry access the first time. `jco` is not
# used (jco 1.35 as installed here is broken).
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 STAGE_DIR OUT_WASM" >&2
    exit 2
fi

out=$2
case $out in
    /*) ;;
    *) out=$(pwd)/$out ;;
esac

wit=$(cd "$(dirname "$0")/../../wit" && pwd)
cd "$1"

if [ ! -x node_modules/.bin/componentize-js ]; then
    npm ci --no-audit --no-fund
fi

mkdir -p "$(dirname "$out")"
# Default features (stdio, random, clocks, http, fetch-event): the component
# imports WASI 0.2, which sluice links; `http` gives the stage `fetch()`.
node_modules/.bin/componentize-js app.js --wit "$wit" --world-name plugin --out "$out"
echo "built $out"
