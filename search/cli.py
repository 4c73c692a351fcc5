"""Command-line flags of ``python search/run.py`` and their validation.

Everything a user can get wrong is checked here, before anything is written: a bad flag ends in one
line naming the problem and the fix, and exit status 2 (UsageError)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from data import CLUSTERING_ONLY, DATASETS, DataMissingError, check_available, default_data_root, split_ids
from methods import Method, get_method, method_names
from methods.presets import PresetError, get_preset, preset_config
from results_analysis import catalogue
from results_analysis.trial_files import (
    ALL_KNOWN_TRAIN_FRACTION,
    FINAL_TRAIN_FRACTIONS,
    PROTOCOL_TRAIN_FRACTION,
    TRAIN_FRACTION_KEY,
)
from search import storage
from search.experiment_file import read_experiment_file
from trainables.tasks import objective_of, task_of


class UsageError(Exception):
    """A user mistake: reported as one line, exit status 2, nothing written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message over several lines
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python search/run.py",
        description="Search the hyperparameters of an open-set recognition method with Ray Tune, "
        "Optuna (TPE) and ASHA, choosing on validation data and reporting test metrics over class splits.",
    )
    p.add_argument("--method", help=f"method to search: {', '.join(method_names())}")
    p.add_argument("--dataset", help=f"dataset: {', '.join(DATASETS)} (default digits)")
    p.add_argument("--data-root", help="where datasets live (default ./data, or $OSRTUNE_DATA)")
    p.add_argument("--download", action="store_true", help="download the dataset into --data-root if missing")
    p.add_argument("--splits", default="all", help="class splits to train in every trial: 'all' or a list like 0,1 "
                   "(open-set methods; clustnet trains on every class at once)")
    p.add_argument("--seeds", type=int, help="seeds per split (search default 1, clustnet 3; --config re-runs: "
                   "3 on digits, else 1; clustnet 5)")
    p.add_argument("--num-samples", type=int, default=20, help="number of trials (default 20)")
    p.add_argument("--max-epochs", type=int, help="epochs per trial, ASHA's max_t (default 30; with --config: the file's)")
    p.add_argument("--searcher", choices=["optuna", "random"], default="optuna",
                   help="optuna: TPE; random: Optuna's random sampler (default optuna)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha", help="early stopping (default asha)")
    p.add_argument("--metric", help="validation metric to optimise (default: val_auroc; clustnet: val_mean_cluster_acc)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=str, default="0",
                   help="GPUs per trial: a whole number or a fraction 1/k such as 0.5 or 1/4 (default 0)")
    p.add_argument("--max-concurrent", type=int, help="most trials at once (default: as resources allow)")
    p.add_argument("--storage-path", help="experiment folders go here: a local or NFS folder, or an s3:// or gs:// "
                   f"URI every node reaches (default ${storage.STORAGE_ENV}, else ./results)")
    p.add_argument("--name", help="experiment name (default <method>-<dataset>-<time>); needed with --resume")
    p.add_argument("--optuna-storage", help="Optuna database URL (default: sqlite file optuna.db in the experiment)")
    p.add_argument("--address", help="Ray cluster to join: 'auto', HOST:PORT or ray://HOST:PORT; the project folder "
                   "is shipped to its workers (default: start Ray here)")
    p.add_argument("--max-failures", type=int, default=2, help="times a trial whose worker or node died is restarted "
                   "from its last checkpoint (default 2; a diverged trial is not retried)")
    p.add_argument("--checkpoint-every", type=int, default=5,
                   help="epochs between a trial's checkpoints; the last epoch always has one (default 5)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of the first training seed (default 0)")
    p.add_argument("--config", help="re-train the config of an exported YAML on every split (no search)")
    p.add_argument("--preset", help="re-train the spec's published setting of --method on --dataset on every split "
                   "(no search): 'reference', or a named variant such as softmax's 'vaze'")
    p.add_argument("--final-train-fraction", type=float, choices=FINAL_TRAIN_FRACTIONS,
                   help="re-runs only (--config, --preset): 0.8 trains on the protocol's 80%% partition, 1.0 on all "
                   "known training images as the papers do, reporting threshold-free test metrics only with the "
                   "post-hoc cell the 80%% runs selected (default: the --config file's final_train_fraction, else 0.8)")
    p.add_argument("--verbose", action="store_true", help="Ray Tune's own progress tables instead of one line per "
                   "trial event and a status line every 30 s")
    p.add_argument("--export", help="also write the best config YAML here (always written as best.yaml in the experiment)")
    return p


@dataclass
class Request:
    """A validated command line."""

    method: str
    dataset: str
    data_root: Path
    download: bool
    splits: list[int]
    seeds: list[int]
    num_samples: int
    max_epochs: int
    searcher: str
    scheduler: str
    metric: str
    mode: str
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int | None
    storage_path: str
    name: str
    optuna_storage: str | None
    address: str | None
    max_failures: int
    checkpoint_every: int
    resume: bool
    seed: int
    export: Path | None
    fixed_config: dict[str, Any] | None = None  # --config: the hyperparameters to re-train
    argv: list[str] = field(default_factory=list)
    # protocol.md §7 (open-set methods; None for the others), and the post-hoc cell a 1.0 re-run is fixed to.
    final_train_fraction: float | None = None
    posthoc_cell: str | None = None
    verbose: bool = False  # Tune's progress tables instead of the compact console

    @property
    def command(self) -> str:
        """The command line as it ran, quoted so that it pastes back into a shell."""
        return shlex.join(["python", "search/run.py", *self.argv])

    @property
    def is_remote_storage(self) -> bool:
        return storage.is_remote(self.storage_path)

    @property
    def experiment_path(self) -> str:
        return storage.join(self.storage_path, self.name)


ADDRESS = re.compile(r"auto|(ray://)?[\w.-]+:\d{1,5}")


def check_address(address: str) -> None:
    if not ADDRESS.fullmatch(address):
        raise UsageError(f"--address {address!r}: give 'auto' (the cluster this machine belongs to), HOST:PORT or "
                         "ray://HOST:PORT")
    if address != "auto" and not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise UsageError(f"--address {address}: a port is 1-65535 (Ray's default head port is 6379)")


# ray.init retries an address nobody answers at for minutes, silently: this bounds the wait instead.
CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Resolve HOST and open a TCP connection to HOST:PORT (Ray's GCS, or its client server for
    ray://) within ``timeout`` seconds; 'auto' is left to Ray, which finds the cluster by itself."""
    if address == "auto":
        return
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    reason = _connect(host, int(port), timeout)
    if reason is not None:
        raise UsageError(f"--address {address}: cannot reach {host}:{port} ({reason}); check the head node's "
                         "address and port, or drop --address to start Ray here")


def _connect(host: str, port: int, timeout: float) -> str | None:
    """None when a connection opened, else why not. The name lookup has no timeout of its own: it runs in
    a daemon thread that is abandoned (never waited for) when it outlasts ``timeout``."""
    deadline = time.monotonic() + timeout
    found: list[Any] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as err:
            found.append(err)

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        return f"no answer to the name lookup of {host} within {timeout:g} s"
    if isinstance(found[0], Exception):
        err = found[0]
        return f"unknown host: {getattr(err, 'strerror', None) or err}"
    reason = f"no answer within {timeout:g} s"
    for family, kind, proto, _, sockaddr in found[0]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(sockaddr)
            return None
        except TimeoutError:
            reason = f"no answer within {timeout:g} s"
        except OSError as err:
            reason = err.strerror or str(err)
    return reason


def storage_path(text: str | None) -> str:
    try:
        return storage.normalize(text or storage.default_storage())
    except storage.StorageError as err:
        raise UsageError(f"--storage-path {err}") from None


def parse_gpus(text: str) -> float:
    """Whole GPUs or a 1/k share: 0, 1, 2, 0.5, 1/4 … (fractions are logical, see DESIGN.md)."""
    try:
        value = Fraction(text).limit_denominator(64)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--gpus-per-trial {text!r} is not a number: use a whole number or 1/k (0.5, 0.25)") from None
    if value < 0 or (value < 1 and value != 0 and value.numerator != 1) or (value > 1 and value.denominator != 1):
        raise UsageError(f"--gpus-per-trial {text} must be a whole number or a fraction 1/k such as 0.5 or 0.25")
    return float(value)


def runs_on(method_cls: type[Method], dataset: str) -> bool:
    """Whether ``method_cls`` can train on ``dataset``: one it lists (all where it lists none), and not a
    clustering benchmark without class splits for a task that needs them."""
    if method_cls.datasets is not None and dataset not in method_cls.datasets:
        return False
    return not (task_of(method_cls).class_splits and dataset in CLUSTERING_ONLY)


def parse_splits(text: str, dataset: str, method_cls: type[Method]) -> list[int]:
    if not task_of(method_cls).class_splits:
        if text.strip() not in ("all", "0"):
            raise UsageError(f"--splits {text}: {method_cls.name} trains on every class at once (one split, 0); "
                             "drop --splits")
        return [0]
    valid = split_ids(dataset)
    if text.strip() == "all":
        return valid
    try:
        chosen = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--splits {text!r}: give 'all' or split ids like 0,1") from None
    missing = [s for s in chosen if s not in valid]
    if missing or not chosen:
        raise UsageError(f"--splits {text}: {dataset} has splits {','.join(map(str, valid))}")
    return sorted(set(chosen))


def load_config_file(path: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(storage.read_text(path))
    except storage.StorageError as err:
        raise UsageError(f"--config {err}; give the path of an exported best.yaml") from None
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not {"method", "dataset", "config"} <= set(doc) or not isinstance(doc["config"], dict):
        raise UsageError(f"--config {path}: expected a mapping with keys method, dataset, config (as written by --export)")
    if not isinstance(doc["method"], str) or not isinstance(doc["dataset"], str):
        raise UsageError(f"--config {path}: method and dataset must be names such as softmax and digits, got "
                         f"{doc['method']!r} and {doc['dataset']!r}")
    return doc


def given_flags(argv: list[str]) -> set[str]:
    """The flags (argparse dests) a command line sets itself, as opposed to their defaults."""
    parser = build_parser()
    for action in parser._actions:  # argparse has no public way to tell a default from a given value
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# What a resumed experiment keeps from its start, by flag: Tune restores its searcher, scheduler,
# trial resources and failure policy from its own saved state, so a changed value would be silently
# ignored. Flags compared as given unless converted to experiment.yaml's form in RESUME_AS_SAVED.
RESUME_FIXED = ("method", "dataset", "splits", "seeds", "seed", "num_samples", "max_epochs", "metric", "searcher",
                "scheduler", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures", "optuna_storage")
RESUME_AS_SAVED: dict[str, Any] = {
    "splits": lambda v, doc: sorted({int(s) for s in v.split(",") if s.strip()}),
    "seeds": lambda v, doc: [doc["seeds"][0] + i for i in range(v)],
    "cpus_per_trial": lambda v, doc: float(v),
    "gpus_per_trial": lambda v, doc: parse_gpus(v),
}
# Flags a resume cannot take at all: a search is not resumed as a re-run or at another fraction.
RESUME_REFUSED = ("config", "preset", "final_train_fraction")


def _saved_value(key: str, doc: dict[str, Any]) -> Any:
    if key == "seed":
        return doc["seeds"][0]
    return doc.get(key, KeyError)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _fill_from_experiment(args: argparse.Namespace, given: set[str]) -> dict[str, Any]:
    """--resume rebuilds the experiment as it was started (experiment.yaml); a flag that would change
    it is refused, all of them in one line. Returns the saved experiment."""
    if not args.name:
        raise UsageError("--resume needs --name: the name of the experiment folder to continue")
    experiment = storage.join(storage_path(args.storage_path), args.name)
    try:
        doc = read_experiment_file(experiment)
    except (storage.StorageError, yaml.YAMLError):
        raise UsageError(f"--resume: no osrtune experiment at {experiment}; check --name and --storage-path") from None
    changed = []
    for key in [k for k in (*RESUME_FIXED, *RESUME_REFUSED) if k in given]:
        if key in RESUME_REFUSED:
            changed.append(_flag(key))
            continue
        if key == "splits" and args.splits.strip() == "all":
            continue  # 'all' names every split of the dataset, which is what any saved list is checked against
        saved, value = _saved_value(key, doc), getattr(args, key)
        if saved is KeyError:  # an experiment.yaml from before the key was recorded
            changed.append(_flag(key))
        elif RESUME_AS_SAVED.get(key, lambda v, doc: v)(value, doc) != saved:
            changed.append(f"{_flag(key)} (it ran with {_shown(key, saved)})")
    if changed:
        raise UsageError(f"--resume continues experiment {args.name} as it was started, and these cannot change: "
                         f"{', '.join(changed)}; drop them, or start a new experiment under another --name")
    args.method, args.dataset = doc["method"], doc["dataset"]
    args.splits = ",".join(map(str, doc["splits"]))
    args.seeds, args.seed = len(doc["seeds"]), doc["seeds"][0]
    args.max_epochs, args.metric, args.num_samples = doc["max_epochs"], doc["metric"], doc["num_samples"]
    for key in ("searcher", "scheduler", "cpus_per_trial", "max_concurrent", "max_failures", "optuna_storage"):
        setattr(args, key, doc.get(key, getattr(args, key)))
    args.gpus_per_trial = str(doc.get("gpus_per_trial", args.gpus_per_trial))
    args.data_root = args.data_root or doc["data_root"]
    args.checkpoint_every = args.checkpoint_every if "checkpoint_every" in given else doc.get(
        "checkpoint_every", args.checkpoint_every)
    return doc


def _shown(key: str, saved: Any) -> str:
    if key == "splits":
        saved = ",".join(map(str, saved))
    elif key == "seeds":
        saved = len(saved)
    return f"{_flag(key)} {saved}"


def objective_mode(metric: str) -> str:
    """Tune's mode for ``metric``: its direction in the one metric table (results_analysis/catalogue.py)."""
    return catalogue.objective_mode(metric)


def check_metric(metric: str, method_cls: type[Method]) -> None:
    """A validation metric the method reports: test metrics are never an objective (protocol.md §7)."""
    objective = objective_of(method_cls)
    if metric.startswith("test_"):
        raise UsageError(f"--metric {metric}: test metrics are never an objective; use a validation metric such as "
                         f"{objective}")
    if not metric.startswith("val_") and metric != "train_loss":
        raise UsageError(f"--metric {metric}: use a validation metric ({objective}, …)")
    if metric == "train_loss":
        return
    problem = task_of(method_cls).metric_problem(metric, method_cls)
    if problem is not None:
        raise UsageError(problem)


def final_train_fraction(flag: float | None, doc: dict[str, Any] | None, rerun: bool,
                         method_cls: type[Method]) -> tuple[float | None, str | None]:
    """(fraction, post-hoc cell to fix) of a command line: the flag, else the --config file's key, else
    the protocol's 0.8; for a 1.0 re-run the cell the file's 80% runs selected on validation (None: the
    config's own cell is used). Only re-runs may train on the validation images (selection reads them)."""
    doc = doc or {}
    given = flag if flag is not None else doc.get(TRAIN_FRACTION_KEY)
    if given is None:
        return (PROTOCOL_TRAIN_FRACTION if task_of(method_cls).class_splits else None), None
    if not rerun:
        raise UsageError("--final-train-fraction is for re-running a chosen config (--config best.yaml): a search "
                         "selects on validation images, which a 1.0 run trains on; drop it")
    if not task_of(method_cls).class_splits:
        raise UsageError(f"--final-train-fraction is protocol.md §7's for open-set splits; {method_cls.name} is a "
                         f"{method_cls.task} method with its own hold-out: drop it (and {TRAIN_FRACTION_KEY} from the file)")
    if isinstance(given, bool) or given not in FINAL_TRAIN_FRACTIONS:
        raise UsageError(f"{TRAIN_FRACTION_KEY} {given!r} in the --config file: use "
                         f"{' or '.join(map(str, FINAL_TRAIN_FRACTIONS))}")
    if float(given) != ALL_KNOWN_TRAIN_FRACTION:
        return float(given), None
    posthoc = doc.get("posthoc") or {}
    cell = posthoc.get("selected") if isinstance(posthoc, dict) else None
    if cell is not None and not isinstance(cell, str):
        raise UsageError(f"--config: posthoc.selected must be a cell name such as 'T=20/alpha=3/dist=euclidean', "
                         f"got {cell!r}")
    return float(given), cell


def validate(args: argparse.Namespace, argv: list[str]) -> Request:
    fixed: dict[str, Any] | None = None
    doc: dict[str, Any] | None = None
    method, dataset = args.method, args.dataset
    saved: dict[str, Any] | None = None
    if args.resume:
        saved = _fill_from_experiment(args, given_flags(argv))
        method, dataset = args.method, args.dataset
    if args.config:
        doc = load_config_file(args.config)
        if method and method != doc["method"] or dataset and dataset != doc["dataset"]:
            raise UsageError(f"--config {args.config} is for {doc['method']} on {doc['dataset']}: drop --method/--dataset")
        method, dataset, fixed = doc["method"], doc["dataset"], dict(doc["config"])
    if saved is not None and saved.get("fixed_config") is not None:
        # A re-run resumes as a re-run: its report averages every (split, seed) run of the fixed config.
        fixed = dict(saved["fixed_config"])
        doc = {TRAIN_FRACTION_KEY: saved[TRAIN_FRACTION_KEY]} if saved.get(TRAIN_FRACTION_KEY) else None
    if args.preset and (args.config or args.resume):
        raise UsageError("--preset re-trains a published setting: drop --config/--resume")
    if not method:
        raise UsageError(f"--method is required: one of {', '.join(method_names())}")
    dataset = dataset or "digits"
    try:
        method_cls = get_method(method)
    except KeyError:
        raise UsageError(f"unknown method {method!r}: choose one of {', '.join(method_names())}") from None
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if method_cls.datasets is not None and dataset not in method_cls.datasets:
        raise UsageError(f"{method} runs on {', '.join(method_cls.datasets)}, not {dataset}")
    if task_of(method_cls).class_splits and dataset in CLUSTERING_ONLY:
        raise UsageError(f"{dataset} has no open-set class splits (a clustering benchmark): use it with "
                         f"{', '.join(n for n in method_names() if runs_on(get_method(n), dataset))}")
    metric = args.metric or objective_of(method_cls)
    try:
        check_metric(metric, method_cls)
    except UsageError as err:
        if args.resume:  # an experiment from before this check: its searcher and scheduler hold the objective
            raise UsageError(f"--resume: experiment {args.name} cannot continue, it was started with {err}; start "
                             "the search again under a new --name") from None
        raise
    if args.num_samples is not None and args.num_samples <= 0:
        raise UsageError(f"--num-samples must be positive, got {args.num_samples}")
    if args.max_epochs is not None and args.max_epochs <= 0:
        raise UsageError(f"--max-epochs must be positive, got {args.max_epochs}")
    if args.seeds is not None and args.seeds <= 0:
        raise UsageError(f"--seeds must be positive, got {args.seeds}")
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be positive, got {args.cpus_per_trial}")
    if args.max_concurrent is not None and args.max_concurrent <= 0:
        raise UsageError(f"--max-concurrent must be positive, got {args.max_concurrent}")
    if args.max_failures < 0:
        raise UsageError(f"--max-failures must be 0 or more, got {args.max_failures}")
    if args.checkpoint_every <= 0:
        raise UsageError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")
    if args.address:
        check_address(args.address)
    gpus = parse_gpus(args.gpus_per_trial)
    splits = parse_splits(args.splits, dataset, method_cls)
    source = f"--config {args.config}"
    if args.preset:
        try:
            fixed = preset_config(method_cls, args.preset, dataset)
        except PresetError as err:
            raise UsageError(f"--preset {args.preset}: {err}") from None
        source = f"--preset {args.preset}"
        # The published numbers trained on every known training image: the preset's fraction is the default.
        doc = {k: v for k, v in get_preset(method_cls, args.preset, dataset).run.items() if k == TRAIN_FRACTION_KEY}

    if fixed is not None:
        if args.max_epochs:
            fixed["epochs"] = args.max_epochs
        try:
            parsed = method_cls.Config.from_dict(fixed).to_dict()
        except (ValueError, TypeError) as err:
            raise UsageError(f"{source}: {err}") from None
        fixed = {k: parsed[k] for k in fixed}  # as the method reads them: PyYAML leaves 1e-3 a string
        if parsed["precision"] == "fp16" and gpus <= 0:  # refused here rather than by every trial
            raise UsageError(f"{source}: precision fp16 needs a GPU (loss scaling, tensor cores) and "
                             "--gpus-per-trial is 0; set precision: bf16 or fp32, or give --gpus-per-trial")
        max_epochs = int(fixed.get("epochs", method_cls.Config().epochs))
        n_seeds = args.seeds or method_cls.rerun_seeds(dataset)
    else:
        max_epochs = args.max_epochs or 30
        n_seeds = args.seeds or method_cls.search_seeds
    fraction, posthoc_cell = final_train_fraction(args.final_train_fraction, doc, fixed is not None, method_cls)

    data_root = Path(args.data_root or default_data_root()).expanduser().absolute()
    try:
        check_available(dataset, data_root, args.download)
    except DataMissingError as err:
        raise UsageError(str(err)) from None

    where = storage_path(args.storage_path)
    if args.resume and args.config:
        raise UsageError("--resume continues a search: drop --config")
    name = args.name or f"{method}-{dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    if "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain folder name")
    request = Request(
        method=method, dataset=dataset, data_root=data_root, download=args.download, splits=splits,
        seeds=[args.seed + i for i in range(n_seeds)], num_samples=args.num_samples, max_epochs=max_epochs,
        searcher=args.searcher, scheduler=args.scheduler, metric=metric, mode=objective_mode(metric),
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus, max_concurrent=args.max_concurrent,
        storage_path=where, name=name, optuna_storage=args.optuna_storage, address=args.address,
        max_failures=args.max_failures, checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed,
        export=Path(args.export).absolute() if args.export else None, fixed_config=fixed, argv=argv,
        final_train_fraction=fraction, posthoc_cell=posthoc_cell,
        verbose=args.verbose,
    )
    try:
        exists = storage.exists(request.experiment_path)
    except storage.StorageError as err:
        raise UsageError(f"--storage-path {err}") from None
    if request.resume and not exists:
        raise UsageError(f"--resume: no experiment {request.experiment_path}; check --name and --storage-path")
    if exists and not request.resume:
        raise UsageError(f"experiment {request.experiment_path} exists: pass --resume to continue it, or another --name")
    if request.export is not None:
        check_export(request.export)
    try:
        storage.check_writable(request.experiment_path)
    except storage.StorageError as err:
        raise UsageError(f"--storage-path {where}: {err}") from None
    if request.address:
        check_reachable(request.address)
    return request


def check_export(path: Path) -> None:
    """The export is written after the whole search: a target that cannot take it must fail now."""
    if path.is_dir():
        raise UsageError(f"--export {path}: is a folder; give a file name such as {path / 'best.yaml'}")
    if not path.parent.is_dir():
        raise UsageError(f"--export {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):  # it is written beside and renamed over the target
        raise UsageError(f"--export {path}: no permission to write it; give a file in a folder you can write to")
