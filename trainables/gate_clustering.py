"""The work of one ClustNet trial (task ``gate_clustering``) without Ray: train on the binary weak
label, and judge every epoch by how the gate's choice lines up with the hidden classes (clustnet.md
§7-§8). Data, seeds, checkpoints and the end files are TrialRunner'; what differs is what is measured
and the gate-vs-class confusion matrices written into the trial folder every epoch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results_analysis.metrics import gate_class_counts, gate_clustering_metrics
from trainables.split_run import SplitRun
from trainables.trial_runner import TestOutcome, TrialRunner, mean_over_runs, run_records

# Phase -> the part of the whole-dataset split it reads (data.whole_dataset_split).
PARTS = {"train": "train", "val": "val_known", "test": "test_known"}
CONFUSION_DIR = "gate_confusion"


class GateClusteringRunner(TrialRunner):
    """ClustNet's (seed) runs on the whole-dataset split, advanced one epoch at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (epoch, {run key: {phase: (metrics, counts)}}) of the last evaluation, for write_epoch.
        self._evaluated: tuple[int, dict[str, dict[str, tuple[dict[str, float], np.ndarray]]]] | None = None

    def evaluate_phase(self, run: SplitRun, phase: str) -> tuple[dict[str, float], np.ndarray, dict[str, np.ndarray]]:
        """(metrics named ``<phase>_…``, the expert × class count matrix, the raw outputs) of one run."""
        part = PARTS[phase]
        outputs = run.evaluate(part)
        classes = run.y[part].cpu().numpy()
        c = run.method.config
        metrics = gate_clustering_metrics(outputs["expert"], outputs["gate_probs"], outputs["log_probs"], classes,
                                          c.positive_classes, c.negative_classes, prefix=f"{phase}_")
        counts = gate_class_counts(outputs["expert"], classes, c.n_experts, self.class_order)
        return metrics, counts, outputs

    @property
    def class_order(self) -> list[int]:
        """Heat-map and count columns: the P classes, then the N classes."""
        c = self.config
        return [*c.positive_classes, *c.negative_classes]

    def _evaluate_all(self, epoch: int) -> dict[str, dict[str, tuple[dict[str, float], np.ndarray]]]:
        evaluated = {run.key: {phase: self.evaluate_phase(run, phase)[:2] for phase in ("train", "val")}
                     for run in self.runs}
        self._evaluated = (epoch, evaluated)
        return evaluated

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train every run one epoch, then measure it on its training and validation images."""
        logs = {run.key: run.train_epoch(self.batch_size, epoch) for run in self.runs}
        evaluated = self._evaluate_all(epoch + 1)
        per_run = {key: {**logs[key], **{k: v for phase in evaluated[key].values() for k, v in phase[0].items()}}
                   for key in logs}
        return {**mean_over_runs(per_run), "epoch": epoch + 1, "runs": per_run}

    def validation_names(self) -> list[str]:
        """The training and validation metric names an epoch reports (``TrialRunner.validation_names``)."""
        return sorted({name for run in self.runs for phase in ("train", "val")
                       for name in self.evaluate_phase(run, phase)[0]})

    def write_epoch(self, trial_dir: Path, epoch: int) -> None:
        """``gate_confusion/epoch_<e>.json`` (counts and metrics per run and phase) and ``.png`` (the
        column-normalised heat maps). Epoch 0 evaluates the initial weights here."""
        if self._evaluated is None or self._evaluated[0] != epoch:
            self._evaluate_all(epoch)
        _, evaluated = self._evaluated
        self._write_confusion(trial_dir, f"epoch_{epoch:03d}", f"epoch {epoch}", evaluated)

    def _write_confusion(self, trial_dir: Path, stem: str, title: str,
                         evaluated: Mapping[str, Mapping[str, tuple[Mapping[str, float], np.ndarray]]]) -> None:
        from results_analysis.plots import plot_gate_confusion  # matplotlib only where files are drawn

        c = self.config
        folder = trial_dir / CONFUSION_DIR
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "title": title,
            "classes": self.class_order,
            "positive_classes": list(c.positive_classes),
            "negative_classes": list(c.negative_classes),
            "n_experts": c.n_experts,
            "counts_layout": "counts[expert][column], columns in the order of 'classes'",
            "runs": {key: {phase: {"counts": counts.tolist(), "metrics": dict(metrics)}
                           for phase, (metrics, counts) in phases.items()}
                     for key, phases in evaluated.items()},
        }
        _write_atomic(folder / f"{stem}.json", json.dumps(doc, indent=1).encode())
        panels = [(f"{key} {phase}: P {metrics[f'{phase}_pos_cluster_acc']:.2f}, "
                   f"N {metrics[f'{phase}_neg_cluster_acc']:.2f}", counts)
                  for key, phases in evaluated.items() for phase, (metrics, counts) in phases.items()]
        tmp = folder / f".{stem}.png.tmp"
        plot_gate_confusion(panels, self.class_order, len(c.positive_classes), tmp, title=title)
        tmp.replace(folder / f"{stem}.png")

    def test(self) -> TestOutcome:
        """Test metrics of every run on the whole test split, with the per-image outputs. Never
        reported to the searcher."""
        return self._test_runs()[0]

    def _test_runs(self) -> tuple[TestOutcome, dict[str, dict[str, tuple[dict[str, float], np.ndarray]]]]:
        """The test outcome, and per run the test metrics with the expert × class counts."""
        records: list[dict[str, Any]] = []
        frames = []
        tested = {}
        for run in self.runs:
            metrics, counts, outputs = self.evaluate_phase(run, "test")
            records += run_records(run, "test", metrics)
            frames.append(_score_frame(run, outputs))
            tested[run.key] = {"test": (metrics, counts)}
        return TestOutcome(records, pd.concat(frames, ignore_index=True)), tested

    def write_final(self, trial_dir: Path, trial_id: str, last_epoch: Mapping[str, Any]) -> dict[str, Any]:
        """The OSR end files (final_metrics.json, test_scores.parquet) plus ``gate_confusion/test.*``."""
        outcome, tested = self._test_runs()
        self._write_confusion(trial_dir, "test", "test, final model", tested)
        return self.write_outcome(trial_dir, trial_id, last_epoch, outcome)


def _score_frame(run: SplitRun, outputs: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per test image: its class and binary target, the gated log-probabilities, π and the
    gate's choice (clustnet.md §8)."""
    frame = pd.DataFrame({
        "split": run.split.id,
        "seed": run.seed,
        "test_index": np.asarray(run.split.test_known, dtype=np.int64),
        "label": run.y["test_known"].cpu().numpy(),
        "target": run.method.training_targets(run.y["test_known"]).cpu().numpy(),
        "pred": outputs["pred"],
        "log_prob_n": outputs["log_probs"][:, 0],
        "log_prob_p": outputs["log_probs"][:, 1],
        "expert": outputs["expert"],
    })
    for i in range(outputs["gate_probs"].shape[1]):
        frame[f"gate_prob_e{i}"] = outputs["gate_probs"][:, i]
    return frame


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
