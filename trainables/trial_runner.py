"""What every task's trial runner shares: the (split, seed) runs of one trial config built from a data
bundle, advanced together one epoch at a time, checkpointed, and written up in the trial folder's end
files (results_analysis/trial_files.py). Each task's runner (trainables/tasks.py) says what an epoch
measures and what the test holds."""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from methods.base import InvalidCellError
from methods.presets import describe_setting
from results_analysis.trial_files import (
    FINISHED,
    GRID_FILE,
    PROTOCOL_TRAIN_FRACTION,
    SCORES_FILE,
    TRAIN_FRACTION_KEY,
    UNSCORABLE,
    metric_records,
    write_final_file,
)
from trainables.device_data import DataBundle
from trainables.split_run import SplitRun, build_split_run

# Trial attributes a published setting may pin beyond the method config (methods/presets.py Preset.run).
RUN_SETTING_KEYS = (TRAIN_FRACTION_KEY,)
# Keys of a trial config that describe the experiment rather than the method's hyperparameters.
META_KEYS = ("method", "dataset", "splits", "seeds", "search", TRAIN_FRACTION_KEY, "posthoc_cell")


def separate_meta(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(experiment meta keys, method hyperparameters) of a trial config."""
    meta = {k: config[k] for k in META_KEYS if k in config}
    hparams = {k: v for k, v in config.items() if k not in META_KEYS}
    return meta, hparams


@dataclass
class TestOutcome:
    """What a runner's test produced: the records of final_metrics.json, the per-sample table of
    test_scores.parquet and, for methods with post-hoc cells, the grid and the cell chosen on it."""

    records: list[dict[str, Any]]
    scores: pd.DataFrame
    grid: pd.DataFrame | None = None
    posthoc: dict[str, Any] = field(default_factory=dict)


class TrialRunner(abc.ABC):
    """All (split, seed) runs of one trial config, advanced together one epoch at a time so that the
    reported validation metric is the mean over splits at equal fidelity (what ASHA compares)."""

    # Whether protocol.md §7's final_train_fraction applies (the open-set class splits); None otherwise.
    has_train_fraction: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> None:
        self.meta, self.hparams = separate_meta(config)
        self.method_name = self.meta["method"]
        self.dataset = self.meta["dataset"]
        fraction = float(self.meta.get(TRAIN_FRACTION_KEY, PROTOCOL_TRAIN_FRACTION))
        self.final_train_fraction: float | None = fraction if self.has_train_fraction else None
        self.runs = self.build_runs(self.hparams, bundle, device)
        self.config = self.runs[0].method.config
        self.epochs: int = self.config.epochs
        self.batch_size: int = self.config.batch_size

    def build_runs(self, hparams: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> list[SplitRun]:
        fraction = self.final_train_fraction or PROTOCOL_TRAIN_FRACTION
        return [build_split_run(self.method_name, hparams, bundle, int(s), int(seed), device, fraction)
                for s in self.meta["splits"] for seed in self.meta.get("seeds", [0])]

    @abc.abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train every run for one epoch and validate; returns the metrics a trial reports."""

    @abc.abstractmethod
    def validation_names(self) -> list[str]:
        """The names of the validation metrics an epoch report carries, without scoring the current
        weights where they cannot be scored: what a trial reports as NaN when its own code fails before
        it reported an epoch (trainables/trial.py)."""

    @abc.abstractmethod
    def test(self) -> TestOutcome:
        """Test metrics per run and the per-sample outputs of the final models. Never reported to the
        searcher."""

    def write_epoch(self, trial_dir: Path, epoch: int) -> None:
        """Per-epoch files of the task in the trial folder (epoch 0 = the initial weights). Default: none."""
        return None

    def write_final(self, trial_dir: Path, trial_id: str, last_epoch: Mapping[str, Any]) -> dict[str, Any]:
        """Writes final_metrics.json, test_scores.parquet and, for methods with post-hoc parameters,
        posthoc_grid.parquet (val and test metrics of every cell and run) into the trial folder. A final
        model the method cannot score (OpenMax without a valid Weibull fit) is a result too: only
        final_metrics.json, with status "unscorable" and the reason."""
        try:
            outcome = self.test()
        except InvalidCellError as err:
            return self.write_unscorable(trial_dir, trial_id, str(err))
        return self.write_outcome(trial_dir, trial_id, last_epoch, outcome)

    def final_document(self, trial_id: str, status: str) -> dict[str, Any]:
        """What every final_metrics.json holds beside its records."""
        final = {
            "trial_id": trial_id,
            "method": self.method_name,
            "dataset": self.dataset,
            "config": self.config.to_dict(),
            # With how the networks ran, for every task (methods/execution.py): the precision ``auto``
            # resolved to on this device, and whether they were compiled.
            "derived": {**self.derived(), **self.runs[0].method.execution.describe()},
            "setting": self.setting(),
            "conventions": self.runs[0].split.convention,
            "status": status,
        }
        if self.final_train_fraction is not None:
            final[TRAIN_FRACTION_KEY] = self.final_train_fraction
        return final

    def write_outcome(self, trial_dir: Path, trial_id: str, last_epoch: Mapping[str, Any],
                      outcome: TestOutcome) -> dict[str, Any]:
        """The trial's end files from its test outcome and last validation; final_metrics.json last and
        atomically, since its presence is what marks the trial ended."""
        records = outcome.records
        for key, values in last_epoch["runs"].items():
            run = next(r for r in self.runs if r.key == key)
            records += run_records(run, "val", {k: v for k, v in values.items() if k.startswith("val_")})
        final = {**self.final_document(trial_id, FINISHED), "records": records}
        if outcome.posthoc:
            final["posthoc"] = outcome.posthoc
        trial_dir.mkdir(parents=True, exist_ok=True)
        outcome.scores.to_parquet(trial_dir / SCORES_FILE, index=False)
        if outcome.grid is not None:
            outcome.grid.to_parquet(trial_dir / GRID_FILE, index=False)
        write_final_file(trial_dir, final)
        return final

    def write_unscorable(self, trial_dir: Path, trial_id: str, reason: str) -> dict[str, Any]:
        """final_metrics.json of a final model that cannot be scored: the reason and no metric (no
        scores, no grid), so nothing downstream averages it in."""
        final = {**self.final_document(trial_id, UNSCORABLE), "reason": reason, "records": []}
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_final_file(trial_dir, final)
        return final

    def setting(self) -> dict[str, Any]:
        """"reference setting" or "reduced setting" and what differs (methods/presets.py). Run-level
        values a preset pins (``final_train_fraction``) count only where this trial records them."""
        method = self.runs[0].method
        run = {k: getattr(self, k) for k in RUN_SETTING_KEYS if getattr(self, k, None) is not None}
        return describe_setting(type(method), method.config, method.info, run)

    def derived(self) -> dict[str, Any]:
        """Values that follow from the config, written beside it in final_metrics.json."""
        return self.runs[0].method.derived()

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            # cuda_rng: dropout on a GPU draws from the CUDA RNG, not the CPU one (None on a CPU run).
            "runs": {r.key: {"method": r.method.state_dict(), "generator": r.generator.get_state(),
                             "rng": r.rng_state, "cuda_rng": r.cuda_rng_state,
                             # fp16's loss scale (methods/execution.py); nothing at fp32 and bf16.
                             **({"execution": r.method.execution.state_dict()}
                                if r.method.execution.state_dict() else {})} for r in self.runs},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Restores every run; returns the last completed epoch."""
        for run in self.runs:
            saved = state["runs"][run.key]
            run.method.load_state_dict(saved["method"])
            run.weights_changed()
            run.generator.set_state(saved["generator"])
            run.rng_state = saved["rng"]
            run.cuda_rng_state = saved.get("cuda_rng")  # absent from checkpoints written before it was kept
            run.method.execution.load_state_dict(saved.get("execution", {}))
        return int(state["epoch"])


def run_records(run: SplitRun, phase: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """final_metrics.json records of one run's ``<phase>_<metric>`` values."""
    return metric_records(run.split.id, run.seed, phase, metrics)


def mean_over_runs(per_run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean over runs of every metric any run reports; NaN where some run lacks it (as where some
    run's value is NaN), so no metric vanishes from a report because one run could not be scored."""
    names = set().union(*(set(v) for v in per_run.values()))
    return {n: float(np.mean([v.get(n, math.nan) for v in per_run.values()])) for n in sorted(names)}
