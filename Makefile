# The README's two commands. Each sets up ./.venv first if it is missing or out of date.
PY := .venv/bin/python

.PHONY: demo test env lint bench

env:
	@bash scripts/setup_env.sh

demo: env
	$(PY) search/run.py --method difair --dataset digits --num-samples 16 --max-epochs 30

test: env
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: env
	$(PY) bench/overhead.py
