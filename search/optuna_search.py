"""Ray's OptunaSearch, telling Optuna the truth about early-stopped and errored trials.

Stock OptunaSearch reports a trial that ASHA stopped as COMPLETE with its low-fidelity value, and an
errored trial that reported anything as COMPLETE too; TPE then learns from both as if they were final.
This subclass tells them as PRUNED and FAIL (also a trial whose own code failed, which ends with a last
report carrying ``trial_error`` rather than as a Tune error, trainables/trial.py, and one whose final
value is NaN, which Optuna refuses), and keeps the study one-to-one with Tune's trials when a killed
driver is resumed. It reads OptunaSearch's private ``_ot_trials``, ``_ot_study`` (and its
``_storage``) and ``_completed_trials``: Ray is pinned in requirements.txt and tests/test_optuna_search.py
checks the behaviour against the real study."""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from results_analysis.trial_files import TRIAL_ERROR_KEY


class PruningAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, max_t: int, study_attributes: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        self._study_attributes = dict(study_attributes or {})  # before OptunaSearch sets the study up
        super().__init__(*args, **kwargs)
        self._max_t = max_t
        self._orphans: list[int] = []  # study trial ids to hand out before asking for new ones

    def _setup_study(self, mode: str | list) -> None:
        """Also names the objective after the metric (optuna-dashboard shows "Objective 0" otherwise) and
        stores what the study is of (method, dataset, the command) as study attributes."""
        super()._setup_study(mode)
        with warnings.catch_warnings():
            # set_metric_names has been "experimental" since Optuna 3.2; the warning would reach the console.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names([self._metric])
        for key, value in self._study_attributes.items():
            self._ot_study.set_user_attr(key, value)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            # Optuna returns a trial's stored value for a parameter it already holds, so the space
            # function rebuilds the orphan's config exactly.
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, self._orphans.pop(0))
        return super().suggest(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        """After a driver was killed, the study may hold RUNNING trials that Tune's last saved state
        never saw (asked for after it was written); they are adopted by the next suggestions instead
        of being left RUNNING for ever beside new ones."""
        super().restore(checkpoint_path)
        known = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self._orphans = [t._trial_id for t in running if t._trial_id not in known]
        if self._orphans:
            # The sampler's random state was saved before the orphans were sampled: left as is it would
            # draw their parameters again for the next new trials.
            self._ot_study.sampler.reseed_rng()

    def _finished_in_study(self, trial_id: str) -> bool:
        """A trial re-run after a driver kill may already be told in the study (the study is written
        at once, Tune's state a moment later); telling or reporting to it again would raise."""
        ot_trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and self._finished_in_study(trial_id):
            return
        if result.get(TRIAL_ERROR_KEY):
            return  # the report of a failure, not of an epoch: no intermediate value
        with warnings.catch_warnings():
            # A trial restored from a checkpoint reports the epochs after it again; Optuna keeps the
            # first value (the re-run reproduces it) and would warn on the console at each.
            warnings.filterwarnings("ignore", message="The reported value is ignored", category=UserWarning)
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if self._finished_in_study(trial_id):
            self._completed_trials.add(trial_id)
            return
        value = result.get(self.metric) if result is not None else None
        if error or (result is not None and result.get(TRIAL_ERROR_KEY)):
            state = TrialState.FAIL
        elif result is not None and result.get("training_iteration", self._max_t) < self._max_t:
            state = TrialState.PRUNED
        elif isinstance(value, float) and math.isnan(value):
            # A final model that could not be scored. Optuna refuses a NaN value and Ray only logs that,
            # which left the study trial RUNNING for ever.
            state = TrialState.FAIL
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
