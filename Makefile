# The README's two commands. Each sets up ./.venv first if it is missing or out of date.
PY := .venv/bin/python

.PHONY: demo test test-fast env lint bench lock

env:
	@bash scripts/setup_env.sh

demo: env
	$(PY) search/run.py --method difair --dataset digits --num-samples 16 --max-epochs 30

# Every tier: tests/unit, tests/integration (Ray, search drivers), tests/learning (trains on real MNIST).
test: env
	$(PY) -m ruff check .
	$(PY) -m pytest

# The unit tier without Ray or MNIST: pure functions, methods, data, specs. 92 s on this 2-core machine,
# nothing else running (2026-12-03); many times that while another run trains beside it.
test-fast: env
	$(PY) -m ruff check .
	$(PY) -m pytest tests/unit -m "not mnist and not ray and not slow"

bench: env
	$(PY) bench/overhead.py

# requirements.lock from what .venv has installed. To upgrade: change requirements.txt,
# `.venv/bin/python -m pip install -U -r requirements.txt`, make test, then make lock and commit both files.
lock:
	$(PY) scripts/lock.py write > requirements.lock.new && mv requirements.lock.new requirements.lock
