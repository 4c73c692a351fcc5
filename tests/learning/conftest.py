"""Each MNIST training of the learning tier runs once per test session, and every check that needs it
reads the same result (session fixtures below, keyed by method, config and data: trainings.JOBS).

Once collection is done, the jobs the selected checks need are started in two worker processes (one
torch thread per job unless it needs two: trainings.py), longest first, so they train while the rest of
the suite runs; the root conftest orders this tier last. A fixture waits for its job's result."""

from __future__ import annotations

import multiprocessing
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

import pytest
import trainings
from trainings import JOBS, MNIST_PRESENT

HERE = Path(__file__).resolve().parent
WORKERS = 2
# The fixture that hands each job's result to the checks (open_set_training is parametrized by method).
FIXTURE_OF_JOB = {**{m: "open_set_training" for m in trainings.OPEN_SET}, "clustnet": "clustnet_training",
                  "adversarial": "adversarial_training", "cd": "cd_training"}


class Trainings:
    """The session's jobs: started together in a worker pool, each trained once, keyed by config and data."""

    def __init__(self) -> None:
        self._pool: Pool | None = None
        self._started: dict[str, AsyncResult] = {}  # job key -> its result

    def start(self, names: list[str]) -> None:
        todo = [n for n in sorted(names, key=lambda n: -JOBS[n].minutes) if JOBS[n].key not in self._started]
        if not todo:
            return
        if self._pool is None:
            # spawn: a forked copy of this process would inherit its torch thread pool and its Ray state.
            self._pool = multiprocessing.get_context("spawn").Pool(WORKERS)
        for name in todo:
            self._started[JOBS[name].key] = self._pool.apply_async(trainings.run_job, (name,))

    def result(self, name: str) -> Any:
        self.start([name])
        return self._started[JOBS[name].key].get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()  # jobs nobody waited for (a failed or interrupted session)
            self._pool.join()
            self._pool = None


TRAININGS = Trainings()


def jobs_needed(items: list[pytest.Item]) -> list[str]:
    needed = set()
    for item in items:
        if HERE not in item.path.parents:
            continue
        for name, fixture in FIXTURE_OF_JOB.items():
            if fixture in getattr(item, "fixturenames", ()):
                param = getattr(getattr(item, "callspec", None), "params", {}).get(fixture)
                if param is None or param == name:
                    needed.add(name)
    return sorted(needed)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not MNIST_PRESENT:
        return
    TRAININGS.start(jobs_needed(session.items))


def pytest_sessionfinish(session: pytest.Session) -> None:
    TRAININGS.close()


@pytest.fixture(scope="session")
def trained():
    if not MNIST_PRESENT:
        pytest.skip("real MNIST not present under ../shared/datasets")
    return TRAININGS


@pytest.fixture(scope="session", params=list(trainings.OPEN_SET))
def open_set_training(request, trained) -> trainings.OpenSetTraining:
    return trained.result(request.param)


@pytest.fixture(scope="session")
def clustnet_training(trained):
    """ClustNet's test metrics, one row per seed."""
    return trained.result("clustnet")


@pytest.fixture(scope="session")
def adversarial_training(trained) -> trainings.AdversarialTraining:
    return trained.result("adversarial")


@pytest.fixture(scope="session")
def cd_training(trained) -> trainings.CdTraining:
    return trained.result("cd")
