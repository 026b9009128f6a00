#!/bin/sh
# Builds the JavaScript `js-running-total` stage into a component: ./build.sh OUT_WASM
# (../js-lib/componentize.sh does the work, for every JavaScript stage).
exec "$(dirname "$0")/../js-lib/componentize.sh" "$(dirname "$0")" "$@"
