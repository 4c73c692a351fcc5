#!/usr/bin/env bash
# Creates ./.venv with exactly the package versions in requirements.lock (the set the suite passed with),
# once. Re-runs when requirements.txt or requirements.lock changes.
# Usage: source scripts/setup_env.sh   (or: bash scripts/setup_env.sh)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OSRTUNE_VENV:-$root/.venv}"
lock="$root/requirements.lock"
stamp="$venv/.osrtune-requirements.sha256"
want="$(cat "$root/requirements.txt" "$lock" | sha256sum | cut -d' ' -f1)"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "osrtune: setting up $venv (first run downloads PyTorch, a few minutes)" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip() { "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  pip install -q --upgrade pip setuptools wheel
  # libMR's setup.py imports Cython and NumPy at build time: install their locked versions first, then
  # build it without isolation.
  # shellcheck disable=SC2046
  pip install -q $(grep -iE '^(cython|numpy)==' "$lock")
  # shellcheck disable=SC2046
  pip install -q --no-build-isolation $(grep -iE '^libmr==' "$lock")
  pip install -q -r "$lock"
  "$venv/bin/python" "$root/scripts/lock.py" check
  echo "$want" > "$stamp"
fi
