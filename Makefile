# The README's two commands. Each sets up ./.venv first if it is missing or out of date.
PY := .venv/bin/python

.PHONY: demo test test-fast env lint bench lock

env:
	@bash scripts/setup_env.sh

demo: env
	$(PY) search/run.py --method difair --dataset digits --num-samples 16 --max-epochs 30

# Every tier, one after the other: tests/unit, tests/integration (Ray, search drivers), tests/learning
# (trains on real MNIST). Only the integration tier runs in two pytest-xdist workers (one test file each
# at a time): its tests mostly wait on Ray and subprocesses, so two of them share the 2 cores well (520 s
# -> 368 s, 653 -> 705 core-seconds, 2026-12-03). The unit tier does not (82 s alone, 214 s in two
# workers even with one OpenMP thread each), and the learning tier runs its own pool of trainings.
# Plain `pytest` runs the same tests in one process.
test: env
	$(PY) -m ruff check .
	$(PY) -m pytest tests/unit
	$(PY) -m pytest tests/integration -n 2 --dist loadfile
	$(PY) -m pytest tests/learning

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
