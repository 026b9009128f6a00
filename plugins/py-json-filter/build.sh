#!/bin/sh
# Builds the Python `py-json-filter` stage into a component: ./build.sh OUT.wasm
# (../python-lib/componentize.sh does the work, for every Python stage).
exec "$(dirname "$0")/../python-lib/componentize.sh" "$(dirname "$0")" "$@"
