#!/usr/bin/env bash
# Creates ./.venv with everything osrtune needs, once. Re-runs only when requirements.txt changes.
# Usage: source scripts/setup_env.sh   (or: bash scripts/setup_env.sh)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OSRTUNE_VENV:-$root/.venv}"
stamp="$venv/.osrtune-requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "osrtune: setting up $venv (first run downloads PyTorch, a few minutes)" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip() { "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  pip install -q --upgrade pip setuptools wheel
  # libMR's setup.py imports Cython and NumPy at build time: install them first, build without isolation.
  pip install -q Cython numpy
  pip install -q --no-build-isolation libmr
  pip install -q -r "$root/requirements.txt"
  echo "$want" > "$stamp"
fi
