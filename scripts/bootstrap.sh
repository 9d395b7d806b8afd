#!/usr/bin/env bash
# Make the locked environment exist: uv (from PyPI into .tools/ when not on PATH), then `uv sync --frozen`.
# Idempotent and quiet when nothing changed; both README commands run it first.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then
  UV=$(command -v uv)
else
  if [ ! -x .tools/bin/uv ]; then
    echo "bootstrap: installing uv into .tools/ (from PyPI)" >&2
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check uv
  fi
  UV=$PWD/.tools/bin/uv
fi
"$UV" sync --frozen --quiet
echo "$UV"
