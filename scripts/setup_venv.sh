#!/usr/bin/env bash
# Creates ./.venv (once) with the CPU build of torch 2.13.0 first, then parapolicy and its extras.
# Idempotent: a second run only checks. Override the interpreter with PYTHON=python3.x.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # A pinned torch takes the CPU build; an unpinned one would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
if [ ! -f .venv/.parapolicy-installed ] || [ pyproject.toml -nt .venv/.parapolicy-installed ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch .venv/.parapolicy-installed
fi
