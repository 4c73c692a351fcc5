"""The work of one clustering trial (task ``clustering``, Contrastive Disentangling) without Ray: train
without labels, then read the representation out by k-means with k = the number of classes on the
backbone output h and on the feature predictor f, scored by NMI, ARI and Hungarian ACC
(contrastive_disentangling.md §6).

Search (``transductive: false``, §6.2): the model trains on the whole train split; every epoch it is
judged on the stratified 20% validation subset of that split (images it also trains on, without their
labels, mirroring the transductive protocol); the test readout clusters the test split, images it never
saw. ``transductive: true`` is the published protocol: train on train+test, cluster all of them. Test
numbers are never reported to the searcher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from results_analysis.metrics import kmeans_readout
from trainables.split_run import SplitRun
from trainables.trial_runner import TestOutcome, TrialRunner, mean_over_runs, run_records


class ClusteringRunner(TrialRunner):
    """The (seed) runs of one clustering config on the whole-dataset split, one epoch at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transductive = bool(getattr(self.config, "transductive", False))
        if self.transductive:
            for run in self.runs:
                run.x["train"] = torch.cat([run.x["train"], run.x["test_known"]])
                run.y["train"] = torch.cat([run.y["train"], run.y["test_known"]])
                run.targets = run.method.training_targets(run.y["train"])

    @property
    def num_clusters(self) -> int:
        return len(self.runs[0].split.known)

    def test_part(self) -> str:
        """The images the test readout clusters: the test split, or every training image (train+test)."""
        return "train" if self.transductive else "test_known"

    def readout(self, run: SplitRun, phase: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(``<phase>_<readout>_<metric>``, the k-means clusters per readout) of one run."""
        part = "val_known" if phase == "val" else self.test_part()
        labels = run.y[part].cpu().numpy()
        return kmeans_readout(run.evaluate(part), labels, self.num_clusters, prefix=f"{phase}_")

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train every run one epoch, then cluster its validation images."""
        per_run = {}
        for run in self.runs:
            logs = run.train_epoch(self.batch_size, epoch)
            per_run[run.key] = {**logs, **self.readout(run, "val")[0]}
        return {**mean_over_runs(per_run), "epoch": epoch + 1, "runs": per_run}

    def validation_names(self) -> list[str]:
        """The validation readout's metric names (``TrialRunner.validation_names``)."""
        return sorted({name for run in self.runs for name in self.readout(run, "val")[0]})

    def test(self) -> TestOutcome:
        records: list[dict[str, Any]] = []
        frames = []
        for run in self.runs:
            metrics, clusters = self.readout(run, "test")
            records += run_records(run, "test", metrics)
            frames.append(self._cluster_frame(run, clusters))
        return TestOutcome(records, pd.concat(frames, ignore_index=True))

    def _cluster_frame(self, run: SplitRun, clusters: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """One row per clustered image: where it comes from (``source`` train/test and its index there),
        its class and its cluster under each readout."""
        split = run.split
        if self.transductive:
            source = np.array(["train"] * len(split.train) + ["test"] * len(split.test_known))
            index = np.concatenate([split.train, split.test_known])
        else:
            source, index = np.full(len(split.test_known), "test"), split.test_known
        frame = pd.DataFrame({"split": split.id, "seed": run.seed, "source": source,
                              "index": np.asarray(index, dtype=np.int64),
                              "label": run.y[self.test_part()].cpu().numpy()})
        for readout, assigned in clusters.items():
            frame[f"cluster_{readout}"] = assigned
        return frame

    def derived(self) -> dict[str, Any]:
        """The setting every CD result is labelled with (backbone, image size, epochs, comparability)."""
        return dict(self.runs[0].method.setting)
