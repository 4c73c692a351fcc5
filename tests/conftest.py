"""One Ray instance per test session, started only when a test asks for it and stopped only if we started it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Ray workers import the project's folders (trainables, methods, …) from the repository root.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MNIST_ROOT = ROOT.parent / "shared" / "datasets"


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
