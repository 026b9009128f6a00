#!/bin/sh
# Builds a Python stage into a component: componentize.sh STAGE_DIR OUT.wasm
# STAGE_DIR holds its app.py; the modules here (sluice_json.py) go in beside it.
#
# Needs python3 with the venv module. The first run creates a venv with a
# pinned componentize-py in $SLUICE_TOOLCHAINS/python-venv (default: the
# repo's target/toolchains) from PyPI; later runs reuse it.
set -eu

COMPONENTIZE_PY_VERSION=0.25.1

if [ $# -ne 2 ]; then
    echo "usage: $0 STAGE_DIR OUT.wasm" >&2
    exit 2
fi
stage=$(cd "$1" && pwd)
mkdir -p "$(dirname "$2")"
out=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")

here=$(cd "$(dirname "$0")" && pwd)
toolchains=${SLUICE_TOOLCHAINS:-$here/../../target/toolchains}
venv=$toolchains/python-venv
componentize=$venv/bin/componentize-py

# (Re)install only when the pinned version is not already there.
if [ "$("$componentize" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    mkdir -p "$toolchains"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
fi

# componentize-py writes __pycache__ next to the modules it imports, so build
# from a scratch copy of the modules rather than from the source tree. Its
# progress output is shown only if the build fails.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$stage/app.py" "$here"/*.py "$work/"
if ! RUST_BACKTRACE=0 "$componentize" -d "$here/../../wit" -w plugin \
    componentize -p "$work" app -o "$out" >"$work/log" 2>&1; then
    cat "$work/log" >&2
    echo "$0: componentize-py failed" >&2
    exit 1
fi
echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
