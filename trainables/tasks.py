"""What a method's task needs from a trial: its runner and its data splits (methods/base.py ``task``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from data import ImagePool, Split, make_split, transductive_split, whole_dataset_split
from methods import get_method
from results_analysis.tables import ALL_KNOWN_TRAIN_FRACTION, TRAIN_FRACTION_KEY
from trainables.clustering import ClusteringRuns
from trainables.gate_clustering import GateClusteringRuns
from trainables.runs import AllKnownTrialRuns, DataBundle, TrialRuns

TASK_RUNS: dict[str, type[TrialRuns]] = {"osr": TrialRuns, "gate_clustering": GateClusteringRuns,
                                         "clustering": ClusteringRuns}


def trial_runs(config: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> TrialRuns:
    """The runs of one trial config, by the task of its method (an open-set final re-run on all known
    training images has its own, protocol.md §7)."""
    task = get_method(config["method"]).task
    if task == "osr" and config.get(TRAIN_FRACTION_KEY) == ALL_KNOWN_TRAIN_FRACTION:
        return AllKnownTrialRuns(config, bundle, device)
    return TASK_RUNS[task](config, bundle, device)


def task_splits(pool: ImagePool, method: str, split_ids: Iterable[int]) -> dict[int, Split]:
    """The standard known/unknown class splits for open-set methods; the one whole-dataset split
    (every class, a stratified 20% validation hold-out) for ClustNet; for unsupervised clustering the
    same split with the hold-out also among the (unlabelled) training images."""
    task = get_method(method).task
    if task == "osr":
        return {s: make_split(pool, s) for s in split_ids}
    if task == "clustering":
        return {0: transductive_split(pool)}
    return {0: whole_dataset_split(pool)}
