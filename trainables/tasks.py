"""The tasks a method can solve, as objects: each owns its trial runner, its class splits, the metrics
its epochs report and its default objective. Shared code asks a method's task (``task_of``) and never
branches on a task's or a method's name; a method names its task with ``Method.task``."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from data import ImagePool, Split, load_pool, make_split, transductive_split, whole_dataset_split
from methods import Method, get_method
from results_analysis.catalogue import OSR_METRICS
from results_analysis.metrics import CLUSTERING_METRICS, GATE_CLUSTERING_METRICS
from results_analysis.trial_files import ALL_KNOWN_TRAIN_FRACTION, TRAIN_FRACTION_KEY
from trainables.clustering import ClusteringRunner
from trainables.device_data import DataBundle
from trainables.gate_clustering import GateClusteringRunner
from trainables.open_set import AllKnownRunner, OpenSetRunner
from trainables.trial_runner import TrialRunner


@dataclass(frozen=True)
class Task:
    """One kind of problem: how its trials run, on which splits, judged by which validation metrics."""

    name: str
    # What kind of metric its validation reports, in messages ("an open-set metric").
    kind: str
    runner: type[TrialRunner]
    # The splits of a pool it trains on, for the split ids a user chose.
    make_splits: Callable[[ImagePool, Iterable[int]], dict[int, Split]]
    # Whether it uses the standard known/unknown class splits (protocol.md): --splits chooses among them
    # and protocol.md §7's final_train_fraction applies. Otherwise there is one split, 0.
    class_splits: bool
    objective: str  # the search objective unless the method or --metric says otherwise
    # The validation metrics (without ``val_``) every method of the task reports; ``headline``: the ones
    # named when a user asks for another task's.
    core_metrics: tuple[str, ...]
    headline: tuple[str, ...]
    # Further names every method reports (e.g. one per expert), as a regular expression.
    metric_pattern: str | None = None
    # Whether a method may report validation metrics beyond ``core_metrics`` (its own scores and
    # diagnostics), found by training one epoch (``reported_metrics``).
    open_metric_list: bool = False

    def runner_for(self, config: Mapping[str, Any]) -> type[TrialRunner]:
        """The runner of one trial config (an open-set final re-run on all known training images has its
        own, protocol.md §7)."""
        if self.class_splits and config.get(TRAIN_FRACTION_KEY) == ALL_KNOWN_TRAIN_FRACTION:
            return AllKnownRunner
        return self.runner

    def reports(self, name: str) -> bool:
        """Whether every method of this task reports validation metric ``val_<name>``."""
        return name in self.core_metrics or (self.metric_pattern is not None
                                             and re.fullmatch(self.metric_pattern, name) is not None)

    def metric_problem(self, metric: str, method: type[Method]) -> str | None:
        """Why ``metric`` (a ``val_`` name) cannot be ``method``'s objective, in one line; None if it can."""
        name = metric.removeprefix("val_")
        if self.reports(name):
            return None
        if not self.open_metric_list:
            return f"--metric {metric}: {method.name} reports val_ metrics {', '.join(self.core_metrics)}"
        other = next((t for t in TASKS.values() if t is not self and t.reports(name)), None)
        if other is not None:
            return (f"--metric {metric} is {other.kind} metric; {method.name} is judged by "
                    f"{', '.join(f'val_{m}' for m in self.headline)}, …")
        reported = sorted(m for m in reported_metrics(method.name) if m.startswith("val_"))
        if metric not in reported:
            return f"--metric {metric}: {method.name} does not report it; its validation metrics are {', '.join(reported)}"
        return None


def _open_set_splits(pool: ImagePool, split_ids: Iterable[int]) -> dict[int, Split]:
    return {s: make_split(pool, s) for s in split_ids}


OPEN_SET = Task(
    name="osr", kind="an open-set", runner=OpenSetRunner, make_splits=_open_set_splits, class_splits=True,
    objective="val_auroc", core_metrics=OSR_METRICS, headline=("auroc", "acc", "oscr"), open_metric_list=True,
)
# ClustNet: every class at once, a stratified 20% validation hold-out; the gate clusters the hidden classes.
GATE_CLUSTERING = Task(
    name="gate_clustering", kind="a clustering", runner=GateClusteringRunner,
    make_splits=lambda pool, _ids: {0: whole_dataset_split(pool)}, class_splits=False,
    objective="val_mean_cluster_acc", core_metrics=GATE_CLUSTERING_METRICS, headline=GATE_CLUSTERING_METRICS,
    metric_pattern=r"usage_e\d+",
)
# Unsupervised clustering: the same split with the hold-out also among the (unlabelled) training images.
CLUSTERING = Task(
    name="clustering", kind="a clustering", runner=ClusteringRunner,
    make_splits=lambda pool, _ids: {0: transductive_split(pool)}, class_splits=False,
    objective="val_backbone_nmi", core_metrics=CLUSTERING_METRICS, headline=CLUSTERING_METRICS,
)
TASKS: dict[str, Task] = {t.name: t for t in (OPEN_SET, GATE_CLUSTERING, CLUSTERING)}


def task_of(method: str | type[Method]) -> Task:
    """The task of a method (its class or registered name)."""
    method_cls = get_method(method) if isinstance(method, str) else method
    return TASKS[method_cls.task]


def objective_of(method: type[Method]) -> str:
    """The search objective of ``method`` unless --metric says otherwise: its own, else its task's."""
    return method.objective or task_of(method).objective


def trial_runs(config: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> TrialRunner:
    """The runner of one trial config, by the task of its method."""
    return task_of(config["method"]).runner_for(config)(config, bundle, device)


def task_splits(pool: ImagePool, method: str, split_ids: Iterable[int]) -> dict[int, Split]:
    """The splits ``method``'s task trains on, for the split ids a user chose."""
    return task_of(method).make_splits(pool, split_ids)


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
