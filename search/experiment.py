"""Assembles and runs one experiment: a search (Optuna + ASHA) or the re-run of an exported config."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from data import DataMissingError, load_pool
from search.cli import Request, UsageError
from search.optuna_search import PruningAwareOptunaSearch, make_sampler, make_storage
from spaces import get_space
from trainables.runs import DataBundle
from trainables.tasks import task_splits
from trainables.trial import train_trial

EXPERIMENT_FILE = "experiment.yaml"


def start_ray(request: Request) -> bool:
    """Joins the given cluster or starts a local Ray; True when this process started it."""
    if ray.is_initialized():
        return False
    if request.address:
        try:
            ray.init(address=request.address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(f"--address {request.address}: cannot join that Ray cluster ({first})") from None
        return True
    ray.init(include_dashboard=False)
    return True


def check_placement(request: Request) -> None:
    """A GPU share no node can hold would leave every trial pending forever: refuse it up front."""
    if request.gpus_per_trial <= 0:
        return
    per_node = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    most = max(per_node, default=0.0)
    if request.gpus_per_trial > most:
        raise UsageError(
            f"--gpus-per-trial {request.gpus_per_trial:g}: no node of this Ray cluster has that many GPUs "
            f"(largest: {most:g}); lower it or join a cluster with GPUs via --address"
        )


def optuna_storage_url(request: Request) -> str:
    if request.optuna_storage:
        return request.optuna_storage
    if request.is_remote_storage:
        raise UsageError("--storage-path is remote: give --optuna-storage (e.g. postgresql://…) for the study")
    return f"sqlite:///{request.experiment_path}/optuna.db"


def load_bundle(request: Request) -> DataBundle:
    try:
        pool = load_pool(request.dataset, request.data_root, download=request.download)
    except DataMissingError as err:
        raise UsageError(str(err)) from None
    return DataBundle.from_pool(pool, task_splits(pool, request.method, request.splits))


def _trainable(request: Request, bundle: DataBundle):
    resources = {"cpu": request.cpus_per_trial, "gpu": request.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_trial, bundle=bundle), resources)


def _run_config(request: Request) -> tune.RunConfig:
    return tune.RunConfig(
        name=request.name,
        storage_path=request.storage_path,
        # num_to_keep=1 with frequent checkpoints floods warnings (DESIGN.md): keep two.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=0),
        # Trials write final_metrics.json and test_scores.parquet in their working folder; without
        # artifact syncing Ray would leave them in the node's session folder, not in storage_path.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        verbose=1,
    )


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default packs every parameter into the name)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def _define(trial: Any, *, method: str, max_epochs: int, num_known: int, fixed: dict[str, Any]) -> dict[str, Any]:
    return {**get_space(method).define(trial, max_epochs, num_known), **fixed}


def search_tuner(request: Request, bundle: DataBundle) -> tune.Tuner:
    space = get_space(request.method)
    fixed = {"method": request.method, "dataset": request.dataset, "splits": request.splits, "seeds": request.seeds}
    num_known = len(bundle.splits[request.splits[0]].known)
    define = functools.partial(_define, method=request.method, max_epochs=request.max_epochs, num_known=num_known,
                               fixed=fixed)
    searcher = PruningAwareOptunaSearch(
        space=define,
        metric=request.metric,
        mode=request.mode,
        sampler=make_sampler(request.searcher, request.seed),
        storage=make_storage(optuna_storage_url(request)),
        study_name=request.name,
        max_t=request.max_epochs,
    )
    if request.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=request.max_concurrent)
    if request.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=request.max_epochs,
                                  **space.asha(request.max_epochs))
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        _trainable(request, bundle),
        tune_config=tune.TuneConfig(metric=request.metric, mode=request.mode, search_alg=searcher,
                                    scheduler=scheduler, num_samples=request.num_samples, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=_run_config(request),
    )


def rerun_tuner(request: Request, bundle: DataBundle) -> tune.Tuner:
    """One trial per (split, seed) of the fixed config, so they run side by side where resources allow."""
    param_space = {
        "method": request.method,
        "dataset": request.dataset,
        "splits": tune.grid_search([[s] for s in request.splits]),
        "seeds": tune.grid_search([[seed] for seed in request.seeds]),
        **(request.fixed_config or {}),
    }
    return tune.Tuner(
        _trainable(request, bundle),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=request.metric, mode=request.mode, reuse_actors=True,
                                    max_concurrent_trials=request.max_concurrent,
                                    trial_dirname_creator=trial_dirname),
        run_config=_run_config(request),
    )


def write_experiment_file(request: Request) -> None:
    """What --resume needs to rebuild the same experiment, beside Ray's own state."""
    path = Path(request.experiment_path)
    path.mkdir(parents=True, exist_ok=False)
    doc = {
        "method": request.method, "dataset": request.dataset, "splits": request.splits, "seeds": request.seeds,
        "max_epochs": request.max_epochs, "metric": request.metric, "num_samples": request.num_samples,
        "searcher": request.searcher, "scheduler": request.scheduler, "data_root": str(request.data_root),
        "rerun": request.fixed_config is not None, "command": "python search/run.py " + " ".join(request.argv),
    }
    (path / EXPERIMENT_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))


def read_experiment_file(path: str) -> dict[str, Any]:
    try:
        return yaml.safe_load((Path(path) / EXPERIMENT_FILE).read_text())
    except (OSError, yaml.YAMLError):
        raise UsageError(f"--resume: {path} is not an osrtune experiment (no readable {EXPERIMENT_FILE})") from None


def run_experiment(request: Request) -> tune.ResultGrid:
    bundle = load_bundle(request)
    trainable = _trainable(request, bundle)
    if request.resume:
        if not tune.Tuner.can_restore(request.experiment_path):
            raise UsageError(f"--resume: {request.experiment_path} holds no Tune state to resume")
        tuner = tune.Tuner.restore(request.experiment_path, trainable, resume_errored=True)
    else:
        if request.optuna_storage:
            try:  # fail on a bad URL before anything is written
                make_storage(request.optuna_storage)
            except Exception as err:  # SQLAlchemy raises many kinds, all of them a user's URL problem
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise UsageError(f"--optuna-storage {request.optuna_storage}: cannot open it ({first})") from None
        if not request.is_remote_storage:
            write_experiment_file(request)
        tuner = rerun_tuner(request, bundle) if request.fixed_config is not None else search_tuner(request, bundle)
    return tuner.fit()
