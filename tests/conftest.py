"""Applies to every tier folder under tests/ (unit, integration, learning). Makes the helper modules
here (trial_files, repo_paths, cli_refusal) importable from any of them, and holds the one Ray instance
per session (per worker process under pytest-xdist, as `make test` runs tests/integration), started only
when a test asks for it and stopped only if we started it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Ray workers import the project's folders (trainables, methods, …) from the repository root.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
for path in (ROOT, TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

UNIT = TESTS / "unit"
LEARNING = TESTS / "learning"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Unit tests first (the quickest to fail), then integration, the learning tier last.
    def tier(item: pytest.Item) -> int:
        return 0 if UNIT in item.path.parents else 2 if LEARNING in item.path.parents else 1

    items.sort(key=tier)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # The unit tier (make test-fast) promises no Ray: a test that starts it belongs in integration/.
    if UNIT in item.path.parents and ("ray_session" in item.fixturenames or item.get_closest_marker("ray")):
        pytest.fail(f"{item.nodeid} starts Ray: it belongs in tests/integration/", pytrace=False)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        # "local": a new instance even when another one on this machine (a test's 3-node cluster, a
        # user's `ray start`) is registered as the current cluster.
        from search.experiment import worker_env

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": worker_env()})
    yield ray
    if started:
        ray.shutdown()
