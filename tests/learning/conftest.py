"""Each MNIST training of the learning tier runs once per test session, and every check that needs it
reads the same result (session fixtures below; the jobs, keyed by config and data, in trainings.py).

When the first check asks for a training, every job the session's selected checks need starts in a pool
of two worker processes. A job takes as many of the two cores as it has torch threads (trainings.py):
two one-thread jobs side by side, a two-thread job alone. A fixture waits for its job's result.

The jobs do not start earlier, to train while the other tiers run. Tried on this 2-core machine on
2026-12-02: at normal priority beside the other tiers (machine shared), both got slower than one after
the other; at the lowest priority (SCHED_IDLE, nothing else running) the whole suite took 16:13 against
14:06 one tier after the other: the Ray tests slowed and the trainings still waited 5.4 min at the end."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import trainings
from trainings import JOBS, MNIST_PRESENT

HERE = Path(__file__).resolve().parent
CORES = 2
# The fixture that hands each job's result to the checks (open_set_training is parametrized by method).
FIXTURE_OF_JOB = {**{m: "open_set_training" for m in trainings.OPEN_SET}, "clustnet": "clustnet_training",
                  "adversarial": "adversarial_training", "cd": "cd_training"}


class Trainings:
    """The session's jobs, each trained once (by key: config and data) in a pool of worker processes and
    started as cores come free: the two-thread jobs first, each alone, then the one-thread jobs two at a
    time, longest first."""

    def __init__(self) -> None:
        self._pool: Pool | None = None
        self._futures: dict[str, Future] = {}  # job key -> its result
        self._queue: list[str] = []
        self._free = CORES
        self._lock = threading.Lock()

    def start(self, names: list[str]) -> None:
        with self._lock:
            for name in sorted(names, key=lambda n: (-JOBS[n].threads, -JOBS[n].minutes)):
                if JOBS[name].key not in self._futures:
                    self._futures[JOBS[name].key] = Future()
                    self._queue.append(name)
            self._dispatch()

    def _dispatch(self) -> None:
        """Starts queued jobs, in order, while their threads fit the free cores."""
        while self._queue and JOBS[self._queue[0]].threads <= self._free:
            name = self._queue.pop(0)
            self._free -= JOBS[name].threads
            if self._pool is None:
                # spawn: a forked copy of this process would share its torch thread pool and Ray state.
                self._pool = multiprocessing.get_context("spawn").Pool(CORES)
            self._pool.apply_async(trainings.run_job, (name,), callback=lambda r, n=name: self._done(n, r),
                                   error_callback=lambda e, n=name: self._done(n, error=e))

    def _done(self, name: str, result: Any = None, error: BaseException | None = None) -> None:
        """Called in the pool's result thread when a job ends."""
        future = self._futures[JOBS[name].key]
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
        with self._lock:
            self._free += JOBS[name].threads
            self._dispatch()

    def result(self, name: str) -> Any:
        self.start([name])
        return self._futures[JOBS[name].key].result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()  # jobs nobody waited for (a failed or interrupted session)
            self._pool.join()
            self._pool = None


TRAININGS = Trainings()
NEEDED: list[str] = []  # the jobs of the session's selected checks


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
    NEEDED[:] = jobs_needed(session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    TRAININGS.close()


@pytest.fixture(scope="session")
def trained() -> Trainings:
    if not MNIST_PRESENT:
        pytest.skip("real MNIST not present under ../shared/datasets")
    TRAININGS.start(NEEDED)
    return TRAININGS


@pytest.fixture(scope="session", params=list(trainings.OPEN_SET))
def open_set_training(request, trained) -> trainings.OpenSetTraining:
    return trained.result(request.param)


@pytest.fixture(scope="session")
def clustnet_training(trained) -> pd.DataFrame:
    """ClustNet's test metrics, one row per seed."""
    return trained.result("clustnet")


@pytest.fixture(scope="session")
def adversarial_training(trained) -> trainings.AdversarialTraining:
    return trained.result("adversarial")


@pytest.fixture(scope="session")
def cd_training(trained) -> trainings.CdTraining:
    return trained.result("cd")
