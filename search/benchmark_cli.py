"""The benchmark command line: which methods on which dataset, the budget each search gets, how the
chosen configs are re-run, and where it all goes. A mistake ends in one line and exit status 2 before
anything is trained or written."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from data.pools import DATASETS
from methods import get_method, method_names
from methods.presets import REFERENCE, PresetError, get_preset
from results_analysis.benchmark import DEFAULT_BASELINE
from results_analysis.trial_files import FINAL_TRAIN_FRACTIONS
from search import storage
from search.cli import UsageError, parse_splits, storage_path
from trainables.tasks import task_of

REDUCED = "reduced"
PRESETS = (REDUCED, REFERENCE)
# The open-set methods a benchmark runs when --methods is not given.
DEFAULT_METHODS = ("softmax", "openmax", "crosr", "difair", "adversarial")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python search/benchmark.py",
        description="Search every method, re-run each winner on every split x seed, and set the results beside "
                    "the published numbers. Run the same command again to continue an interrupted benchmark.")
    p.add_argument("--dataset", default="digits", help=f"dataset: {', '.join(DATASETS)} (default digits)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)}; all: {', '.join(method_names())})")
    p.add_argument("--preset", choices=PRESETS, default=REDUCED,
                   help="reduced (default): search each method at this budget, then re-run the winner; reference: "
                        "re-run each method's published setting (its spec's preset) without a search")
    p.add_argument("--num-samples", type=int, default=20, help="trials per method's search (default 20)")
    p.add_argument("--max-epochs", type=int, default=30, help="epochs per trial, also of the re-runs (default 30)")
    p.add_argument("--splits", default="all", help="class splits every search trial trains on (default all); the "
                   "re-runs always use every split")
    p.add_argument("--seeds", type=int, help="seeds per split in the re-runs (default: each method's own)")
    p.add_argument("--final-train-fraction", type=float, choices=FINAL_TRAIN_FRACTIONS,
                   help="re-runs: 0.8 (the protocol's partition, default) or 1.0 (every known training image)")
    p.add_argument("--searcher", choices=["optuna", "random"], default="optuna", help="(default optuna)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha", help="(default asha)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samplers and the first training seed")
    p.add_argument("--baseline", default=DEFAULT_BASELINE,
                   help=f"the method every row is paired with in the table (default {DEFAULT_BASELINE})")
    p.add_argument("--storage-path", help="where the benchmark folder goes (default ./results)")
    p.add_argument("--name", help="benchmark folder name (default benchmark-<dataset>-<time>); run the same "
                   "command with the same --name to continue")
    p.add_argument("--data-root", help="where datasets live (default ./data, or $OSRTUNE_DATA)")
    p.add_argument("--address", help="Ray cluster to join (as search/run.py)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", default="0", help="GPUs per trial, e.g. 0.25 or 1/4 (default 0)")
    p.add_argument("--max-concurrent", type=int, help="most trials at once (default: as resources allow)")
    p.add_argument("--checkpoint-every", type=int, default=5, help="epochs between checkpoints (default 5)")
    p.add_argument("--max-failures", type=int, default=2, help="restarts of a trial whose worker died (default 2)")
    return p


# What a benchmark is (a continuation must not change it); the rest says where and how it runs.
PLAN_KEYS = ("dataset", "methods", "preset", "num_samples", "max_epochs", "splits", "seeds", "final_train_fraction",
             "searcher", "scheduler", "seed", "baseline")


@dataclass
class BenchmarkRequest:
    dataset: str
    methods: list[str]
    preset: str
    num_samples: int
    max_epochs: int
    splits: str
    seeds: int | None
    final_train_fraction: float | None
    searcher: str
    scheduler: str
    seed: int
    baseline: str
    storage_path: str
    name: str
    data_root: str | None
    address: str | None
    cpus_per_trial: float
    gpus_per_trial: str
    max_concurrent: int | None
    checkpoint_every: int
    max_failures: int
    argv: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.storage_path) / self.name

    def plan(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PLAN_KEYS}

    @property
    def command(self) -> str:
        """The command that continues this benchmark: the one given, with its --name."""
        argv = list(self.argv)
        if "--name" not in argv and not any(a.startswith("--name=") for a in argv):
            argv += ["--name", self.name]
        return shlex.join(["python", "search/benchmark.py", *argv])

    def resource_flags(self) -> list[str]:
        """Flags every stage passes on to search/run.py."""
        flags = ["--cpus-per-trial", str(self.cpus_per_trial), "--gpus-per-trial", self.gpus_per_trial,
                 "--checkpoint-every", str(self.checkpoint_every), "--max-failures", str(self.max_failures)]
        if self.max_concurrent is not None:
            flags += ["--max-concurrent", str(self.max_concurrent)]
        return flags + self.where_flags()

    def where_flags(self) -> list[str]:
        """Flags a resumed stage may still take: where Ray and the data are."""
        flags = []
        if self.address:
            flags += ["--address", self.address]
        if self.data_root:
            flags += ["--data-root", self.data_root]
        return flags


def _methods(text: str, dataset: str, preset: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise UsageError("--methods is empty: name at least one method")
    unknown = [m for m in names if m not in method_names()]
    if unknown:
        raise UsageError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(method_names())}")
    if len(set(names)) != len(names):
        raise UsageError(f"--methods names a method twice: {text}")
    refused = []
    for name in names:
        cls = get_method(name)
        if cls.datasets is not None and dataset not in cls.datasets:
            refused.append(f"{name} runs on {', '.join(cls.datasets)}")
        elif preset == REFERENCE:
            try:
                get_preset(cls, REFERENCE, dataset)
            except PresetError as err:
                refused.append(str(err))
    if refused:
        raise UsageError(f"--methods on {dataset}: {'; '.join(refused)}")
    return names


def validate(args: argparse.Namespace, argv: list[str]) -> BenchmarkRequest:
    if args.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}: choose one of {', '.join(DATASETS)}")
    methods = _methods(args.methods, args.dataset, args.preset)
    for flag, value in (("--num-samples", args.num_samples), ("--max-epochs", args.max_epochs),
                        ("--seeds", args.seeds), ("--cpus-per-trial", args.cpus_per_trial),
                        ("--max-concurrent", args.max_concurrent), ("--checkpoint-every", args.checkpoint_every)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.baseline not in method_names():
        raise UsageError(f"--baseline: unknown method {args.baseline!r}; choose from {', '.join(method_names())}")
    for name in methods:  # the search splits must exist for every method with class splits
        if task_of(get_method(name)).class_splits:
            parse_splits(args.splits, args.dataset, get_method(name))
    name = args.name or f"benchmark-{args.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    if "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain folder name")
    where = storage_path(args.storage_path)
    if storage.is_remote(where):
        raise UsageError(f"--storage-path {where}: a benchmark keeps its folder on this machine's disk (a local or "
                         "NFS folder); searches alone can write to s3:// or gs://")
    request = BenchmarkRequest(
        dataset=args.dataset, methods=methods, preset=args.preset, num_samples=args.num_samples,
        max_epochs=args.max_epochs, splits=args.splits, seeds=args.seeds,
        final_train_fraction=args.final_train_fraction, searcher=args.searcher, scheduler=args.scheduler,
        seed=args.seed, baseline=args.baseline, storage_path=where, name=name, data_root=args.data_root,
        address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, checkpoint_every=args.checkpoint_every,
        max_failures=args.max_failures, argv=argv)
    try:
        storage.check_writable(str(request.folder))
    except storage.StorageError as err:
        raise UsageError(f"--storage-path {where}: {err}") from None
    return request
