"""The open-set task's trial runner (protocol.md): train on the known classes of each split, validate
every epoch on the balanced known/unknown validation sets (and each post-hoc cell of a method that has
them), test once at the end; and its final re-run on every known training image (protocol.md §7)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from methods.base import InvalidCellError
from methods.posthoc_selection import GRID_SELECTION_METRIC, posthoc_records, select_posthoc_cell
from results_analysis.catalogue import is_threshold_free
from results_analysis.trial_files import ALL_KNOWN_TRAIN_FRACTION, PRIMARY_SCORE_KEY, TRAIN_FRACTION_KEY
from trainables.device_data import DataBundle
from trainables.open_set_scoring import (
    cell_auroc,
    cell_metrics,
    final_test_metrics,
    metric_names,
    open_set_metrics,
)
from trainables.split_run import SplitRun
from trainables.trial_runner import TestOutcome, TrialRunner, mean_over_runs, run_records

# The validation metric post-hoc cells are compared by every epoch, and the objective it replaces under
# ``posthoc_objective: grid_best``.
GRID_OBJECTIVE = f"val_{GRID_SELECTION_METRIC}"
BEST_CELL_KEY = f"posthoc_best_{GRID_OBJECTIVE}"


class OpenSetRunner(TrialRunner):
    """The runs of an open-set trial on the standard known/unknown class splits."""

    has_train_fraction = True

    def final_document(self, trial_id: str, status: str) -> dict[str, Any]:
        # Which score the unsuffixed metrics are of: the analysis names each row by its score.
        return {**super().final_document(trial_id, status), PRIMARY_SCORE_KEY: self.runs[0].method.primary_score}

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train every run for one epoch and validate; returns the metrics a trial reports."""
        per_run: dict[str, dict[str, float]] = {}
        grid: dict[str, list[float]] = {}
        unscorable: dict[str, str] = {}  # run key -> why OpenMax could not score it
        for run in self.runs:
            logs = run.train_epoch(self.batch_size, epoch)
            try:
                val, outputs = open_set_metrics(run, "val")
            except InvalidCellError as err:
                # A half-trained model OpenMax cannot fit (e.g. a class with no correctly classified
                # training image yet). The final evaluation raises this error; mid-search the epoch is
                # reported as NaN with the reason, which ASHA and Optuna take as "no information".
                unscorable[run.key] = str(err)
                # Every validation metric stays in the report, NaN: Tune refuses a result without the
                # objective, and a curve with holes reads as a metric that was never measured.
                per_run[run.key] = {**logs, **dict.fromkeys(metric_names(run, "val"), math.nan)}
                for cell in run.method.posthoc_cells():
                    grid.setdefault(cell.key, []).append(math.nan)
                continue
            per_run[run.key] = {**logs, **val}
            for cell in run.method.posthoc_cells():
                grid.setdefault(cell.key, []).append(cell_auroc(run, outputs, cell))
        result: dict[str, Any] = {**mean_over_runs(per_run), "epoch": epoch + 1, "runs": per_run,
                                  "val_unscorable_runs": len(unscorable)}
        if unscorable:
            result["unscorable_reason"] = "; ".join(f"{key}: {why}" for key, why in unscorable.items())
        if grid:
            result.update(self.grid_report(grid, result[GRID_OBJECTIVE]))
        return result

    def validation_names(self) -> list[str]:
        """``val_*`` and the post-hoc grid's names, from the current weights' stand-in outputs where they
        cannot be scored (``TrialRunner.validation_names``)."""
        names: set[str] = set()
        for run in self.runs:
            names.update(metric_names(run, "val"))
        cells = self.runs[0].method.posthoc_cells()
        if cells:
            names.update(self.grid_report({cell.key: [math.nan] for cell in cells}, math.nan))
        return sorted(names)

    def grid_report(self, grid: Mapping[str, list[float]], sampled_auroc: float) -> dict[str, Any]:
        """Validation AUROC of every post-hoc cell (mean over runs; NaN where any run's fit was
        invalid), the best cell, and — for ``posthoc_objective = grid_best`` — the objective."""
        means = {key: float(np.mean(values)) for key, values in grid.items()}
        report: dict[str, Any] = {f"posthoc/{key}/{GRID_OBJECTIVE}": v for key, v in means.items()}
        valid = {k: v for k, v in means.items() if math.isfinite(v)}
        report["posthoc_invalid_cells"] = len(means) - len(valid)
        report[BEST_CELL_KEY] = math.nan  # no cell valid: present all the same, like every metric
        if valid:
            best = max(valid, key=lambda k: valid[k])
            report["posthoc_best_cell"] = best
            report[BEST_CELL_KEY] = valid[best]
        if getattr(self.config, "posthoc_objective", "sampled") == "grid_best":
            report[f"{GRID_OBJECTIVE}_sampled"] = sampled_auroc
            report[GRID_OBJECTIVE] = report.get(BEST_CELL_KEY, math.nan)
        return report

    def test(self) -> TestOutcome:
        """Test metrics per run (balanced sets, plus accuracy on every known test image), the per-sample
        test scores and the post-hoc grid. Never reported to the searcher; thresholds and the grid
        cell are chosen on validation outputs of the same final models."""
        records: list[dict[str, Any]] = []
        frames = []
        grid_rows: list[dict[str, Any]] = []
        for run in self.runs:
            val = run.outputs("val")
            metrics, outputs = final_test_metrics(run, val["known"])
            records += run_records(run, "test", metrics)
            frames.append(score_frame(run, outputs))
            for cell in run.method.posthoc_cells():
                for phase, out in (("val", val), ("test", outputs)):
                    row = {"split": run.split.id, "seed": run.seed, "phase": phase, "cell": cell.key,
                           **dataclasses.asdict(cell), "invalid_reason": ""}
                    try:
                        row.update(cell_metrics(run, phase, out, cell, reference=val["known"]))
                    except InvalidCellError as err:
                        row["invalid_reason"] = str(err)
                    grid_rows.append(row)
        outcome = TestOutcome(records, pd.concat(frames, ignore_index=True))
        if grid_rows:
            outcome.grid = pd.DataFrame(grid_rows)
            sampled = getattr(self.runs[0].method, "sampled_cell", None)
            outcome.posthoc = select_posthoc_cell(outcome.grid, sampled().key if sampled else None)
            if "selected" in outcome.posthoc:
                records += posthoc_records(outcome.grid, outcome.posthoc["selected"])
        return outcome


class AllKnownRunner(OpenSetRunner):
    """The runs of a final re-run at ``final_train_fraction = 1.0`` (protocol.md §7): every known-class
    training image is trained on, the validation hold-out included, as the published numbers were.

    Its validation knowns are no longer held out, so no number of it is presented as validation: each
    epoch's ``val_*`` keys are NaN (Tune's metric stays present; ASHA and Optuna take NaN as "no
    information") and their trained-on values move to ``trained_on_val_*``, out of every table and curve;
    the per-epoch post-hoc grid is left out. The test reports only threshold-free metrics, and the
    post-hoc cell is fixed to the one selected on validation in the 80% runs (``posthoc_cell``) rather
    than chosen again."""

    TRAINED_ON = "trained_on_"

    def __init__(self, config: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> None:
        super().__init__(config, bundle, device)
        if self.final_train_fraction != ALL_KNOWN_TRAIN_FRACTION:
            raise ValueError(f"{type(self).__name__} is for {TRAIN_FRACTION_KEY} {ALL_KNOWN_TRAIN_FRACTION} "
                             "on an open-set method")
        self.posthoc = self._fix_posthoc_cell(self.meta.get("posthoc_cell"), bundle, device)

    def _fix_posthoc_cell(self, key: str | None, bundle: DataBundle, device: torch.device) -> dict[str, Any]:
        """Scores with the post-hoc cell ``key`` (the method config's own cell where the re-run names
        none), rebuilding the runs with that cell's values in the config; what final_metrics.json records
        about it. Post-hoc values do not touch training, so the rebuilt runs train the same."""
        method = self.runs[0].method
        cells = {cell.key: cell for cell in method.posthoc_cells()}
        if not cells:
            return {}
        sampled = getattr(method, "sampled_cell", None)
        own = sampled().key if sampled else None
        if key is None:
            if own is None:
                raise ValueError(f"{self.method_name} has post-hoc cells but no configured one: give posthoc_cell")
            return {"selected": own, "fixed": True,
                    "selection": "the config's own cell: the re-run named no cell selected on validation"}
        if key not in cells:
            raise ValueError(f"posthoc_cell {key!r} is not a post-hoc cell of {self.method_name} "
                             f"(e.g. {next(iter(cells))!r})")
        if key != own:
            values = dataclasses.asdict(cells[key])
            unknown = set(values) - {f.name for f in dataclasses.fields(method.config)}
            if unknown:
                raise ValueError(f"{self.method_name}'s post-hoc cells set {sorted(unknown)}, which its config lacks")
            self.hparams = {**self.hparams, **values}
            self.runs = self.build_runs(self.hparams, bundle, device)
            self.config = self.runs[0].method.config
        return {"selected": key, "fixed": True, "selection": "fixed to the cell selected on validation in the 80% runs"}

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        return self.trained_on_validation(super().train_epoch(epoch))

    @classmethod
    def trained_on_validation(cls, result: Mapping[str, Any]) -> dict[str, Any]:
        """An epoch report with every validation number renamed ``trained_on_val_*``; the top-level
        ``val_*`` keys stay, as NaN, for Tune's metric check."""
        out: dict[str, Any] = {}
        for key, value in result.items():
            if key.startswith("posthoc"):
                continue
            if key.startswith("val_"):
                out[key] = math.nan
                out[cls.TRAINED_ON + key] = value
            elif key == "runs":
                out[key] = {run: {(cls.TRAINED_ON + k if k.startswith("val_") else k): v for k, v in values.items()}
                            for run, values in value.items()}
            else:
                out[key] = value
        return out

    def test(self) -> TestOutcome:
        """Threshold-free test metrics per run and the per-sample scores; no validation outputs are
        read (thresholds would come from trained-on images) and no post-hoc grid is scored."""
        records: list[dict[str, Any]] = []
        frames = []
        for run in self.runs:
            metrics, outputs = final_test_metrics(run, None)
            records += run_records(run, "test", {k: v for k, v in metrics.items()
                                              if is_threshold_free(k.removeprefix("test_"))})
            frames.append(score_frame(run, outputs))
        return TestOutcome(records, pd.concat(frames, ignore_index=True), posthoc=dict(self.posthoc))


def score_frame(run: SplitRun, outputs: Mapping[str, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    frames = []
    for part in ("known", "unknown"):
        out = outputs[part]
        idx = getattr(run.split, f"test_{part}")
        frame = pd.DataFrame({
            "split": run.split.id,
            "seed": run.seed,
            "test_index": np.asarray(idx, dtype=np.int64),
            "is_unknown": part == "unknown",
            "label": run.y[f"test_{part}"].cpu().numpy(),
            "pred": out["pred"],
        })
        for name, values in out.items():
            # Every per-image score and prediction (members' and companions' too), not 2-D features.
            if name not in ("pred", "score") and not name.endswith("/score") and np.ndim(values) == 1:
                frame[name] = values
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
