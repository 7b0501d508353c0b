#!/usr/bin/env bash
# Creates .venv with Python 3.12 (or newer) if it is missing and installs exsnn into it
# (editable, with test extras). Re-installs only when pyproject.toml changed. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

find_python() {
    local candidate
    for candidate in "${EXSNN_PYTHON:-}" python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    if ! py=$(find_python); then
        echo "bootstrap: exsnn needs Python >= 3.12 (SchNetPack 2.2 requires it)." >&2
        echo "bootstrap: put python3.12 on PATH, or set EXSNN_PYTHON=/path/to/python3.12." >&2
        exit 1
    fi
    echo "bootstrap: creating .venv with $("$py" --version)" >&2
    "$py" -m venv .venv
fi

stamp=.venv/.exsnn-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing exsnn and its dependencies into .venv (first time: several minutes, PyTorch is large)" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$want" > "$stamp"
fi
