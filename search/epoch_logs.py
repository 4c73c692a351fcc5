"""Tune's per-trial records (result.json, progress.csv, TensorBoard events) with every epoch once.

A resumed trial restarts from its last checkpoint and reports the epochs after it again; Tune's own
loggers append those reports a second time (a 200-epoch trial with 205 rows). These loggers are Tune's,
told to skip a result whose training_iteration a trial's records already hold. The re-run of an epoch
from the same checkpoint and RNG state reproduces it, so the first record stands."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE, TRAINING_ITERATION

from search.tensorboard_log import TensorBoardLogger


def last_logged_iteration(trial_folder: Path) -> int:
    """The highest training_iteration in a trial folder's result.json (0 when it has none); a line cut
    short by a killed driver is ignored."""
    path = trial_folder / EXPR_RESULT_FILE
    if not path.exists():
        return 0
    last = 0
    for line in path.read_text().splitlines():
        try:
            last = max(last, int(json.loads(line).get(TRAINING_ITERATION, 0)))
        except (ValueError, AttributeError):
            continue
    return last


class EarlierRecords:
    """The last epoch each trial's records held before this driver logged any result of it, read once
    and shared by the three loggers.

    Read at the trial's first result in this driver, not when it starts: a resumed driver with a new Ray
    instance has empty staging folders, and Tune's JSON logger copies a trial's result.json back into its
    own only as it starts the trial (after the CSV logger's start). Every logger's start comes before any
    result, and the first logger to see the first result reads before the JSON logger appends it."""

    def __init__(self) -> None:
        self._last: dict[Any, int] = {}

    def last(self, trial: Any) -> int:
        if trial not in self._last:
            self._last[trial] = last_logged_iteration(Path(trial.local_path))
        return self._last[trial]


class _EachEpochOnce:
    """Mixin for a Tune LoggerCallback: forwards a trial's result only if it is a new epoch."""

    def __init__(self, earlier: EarlierRecords) -> None:
        super().__init__()
        self._earlier = earlier
        self._logged: dict[Any, int] = {}  # trial -> the last training_iteration in its records

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        step = int(result.get(TRAINING_ITERATION, 0))
        if step <= self._logged.setdefault(trial, self._earlier.last(trial)):
            return
        self._logged[trial] = step
        super().log_trial_result(iteration, trial, result)  # type: ignore[misc]


class EpochJsonLogger(_EachEpochOnce, JsonLoggerCallback):
    pass


class EpochTBXLogger(_EachEpochOnce, TensorBoardLogger):
    """Clean tags and the HPARAMS tab (search/tensorboard_log.py)."""


class EpochCSVLogger(_EachEpochOnce, CSVLoggerCallback):
    """Also keeps the columns of a progress.csv an earlier driver began: Tune's logger takes the
    resumed result's key order, which need not match the header already in the file."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if trial not in self._trial_files:
            # Sets the file up first: in a new Ray instance's empty staging folder, that is what copies
            # the earlier progress.csv back from storage.
            self._setup_trial(trial)
            if self._trial_continue[trial]:
                with (Path(trial.local_path) / EXPR_PROGRESS_FILE).open(newline="") as f:
                    header = next(csv.reader(f), None)
                if header:
                    self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header)
        super().log_trial_result(iteration, trial, result)


def epoch_loggers() -> list[Any]:
    """Replace Tune's default CSV, JSON and TensorBoard loggers (Tune adds a default only for a kind
    the callbacks lack)."""
    earlier = EarlierRecords()
    return [EpochCSVLogger(earlier), EpochJsonLogger(earlier), EpochTBXLogger(earlier)]
