"""What a method's task needs from a trial: its runner and its data splits (methods/base.py ``task``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from data import ImagePool, Split, load_pool, make_split, transductive_split, whole_dataset_split
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


SPLIT_PARTS = ("train", "train_full", "val_known", "val_unknown", "test_known", "test_unknown", "test_known_full")


def reported_metrics(method: str) -> set[str]:
    """The numeric names an epoch of ``method`` reports, found by training one: one epoch of its
    default config on split 0 of a quarter of digits (ships with scikit-learn, seconds on a CPU). Only these can be
    a search's objective: Tune stops the whole search at the first result lacking it."""
    pool = load_pool("digits", ".")
    # Every fourth image of each part: the names do not depend on how much is trained, the seconds do.
    splits = {s: dataclasses.replace(split, **{part: getattr(split, part)[::4] for part in SPLIT_PARTS})
              for s, split in task_splits(pool, method, [0]).items()}
    bundle = DataBundle.from_pool(pool, splits)
    config = {"method": method, "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 1}
    result = trial_runs(config, bundle, torch.device("cpu")).train_epoch(0)
    return {k for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
