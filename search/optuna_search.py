"""Ray's OptunaSearch, telling Optuna the truth about early-stopped and errored trials.

Stock OptunaSearch reports a trial that ASHA stopped as COMPLETE with its low-fidelity value, and an
errored trial that reported anything as COMPLETE too; TPE then learns from both as if they were final.
This subclass tells them as PRUNED and FAIL. It reads OptunaSearch's private ``_ot_trials``,
``_ot_study`` and ``_completed_trials``: Ray is pinned in requirements.txt and tests/test_search_optuna.py
checks the behaviour against the real study."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class PruningAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, max_t: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_t = max_t

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if error:
            state = TrialState.FAIL
        elif result is not None and result.get("training_iteration", self._max_t) < self._max_t:
            state = TrialState.PRUNED
        else:
            return super().on_trial_complete(trial_id, result, error)
        # PRUNED keeps the last intermediate value Optuna already holds from on_trial_result.
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage from a URL (``sqlite:///…``, ``postgresql://…``); OptunaSearch wants the object."""
    return optuna.storages.RDBStorage(url)


def make_sampler(searcher: str, seed: int) -> optuna.samplers.BaseSampler:
    if searcher == "optuna":
        return optuna.samplers.TPESampler(seed=seed)
    if searcher == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown searcher {searcher!r}")
