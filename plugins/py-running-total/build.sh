#!/bin/sh
# Builds the Python `py-running-total` stage into a component: ./build.sh OUT.wasm
#
# Needs python3 with the venv module. The first run creates a venv with a
# pinned componentize-py in $SLUICE_TOOLCHAINS/python-venv (default: the
# repo's target/toolchains) from PyPI; later runs reuse it.
set -eu

COMPONENTIZE_PY_VERSION=0.25.1

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.wasm" >&2
    exit 2
fi
mkdir -p "$(dirname "$1")"
out=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")

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
# from a scratch copy of app.py rather than from the source tree. Its
# progress output is shown only if the build fails.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/app.py" "$work/"
if ! RUST_BACKTRACE=0 "$componentize" -d "$here/../../wit" -w plugin \
    componentize -p "$work" app -o "$out" >"$work/log" 2>&1; then
    cat "$work/log" >&2
    echo "$0: componentize-py failed" >&2
    exit 1
fi
echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
