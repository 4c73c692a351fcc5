"""Assembles and runs one experiment: a search (Optuna + ASHA) or the re-run of an exported config."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import warnings
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from sqlalchemy.engine import make_url

from data import DataMissingError, load_pool
from results_analysis.trial_files import ALL_KNOWN_TRAIN_FRACTION, TRAIN_FRACTION_KEY
from search import saved_state, storage
from search.cli import Request, UsageError
from search.epoch_logs import epoch_loggers
from search.experiment_file import write_experiment_file
from search.optuna_search import PruningAwareOptunaSearch, make_sampler, make_storage
from search.progress import SearchProgress
from spaces import get_space
from trainables.device_data import DataBundle
from trainables.tasks import task_splits
from trainables.trial import train_trial

ROOT = Path(__file__).resolve().parents[1]
# What the workers of a joined cluster need of the project: its code and the split files, not the
# environment, downloaded data or results (.gitignore already keeps most of those out).
SHIPPED_EXCLUDES = [".git", ".venv", "results", "bench/out", "*.db"]
# The Ray session folders of the local instances this experiment's drivers started, one per line.
RAY_SESSIONS_FILE = "ray_sessions.txt"
# The driver's autoscaler config on a `ray up` head: the node types the cluster can still add.
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml").expanduser()


def worker_env() -> dict[str, str]:
    """Environment for the trial workers. A reused actor waits this long for the previous trial's
    function to return; Ray's 2 s is exceeded on a loaded machine, and Ray 2.60 then ends the next trial
    as errored without telling the searcher, so a --max-concurrent search waits for ever."""
    return {"TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")}


def start_ray(request: Request) -> Any:
    """Joins the given cluster or starts a local Ray; Ray's context when this process connected it
    (it then shuts it down), None when Ray was already running in this process."""
    if ray.is_initialized():
        return None
    if request.address:
        # Workers on other nodes do not see this process's PYTHONPATH: ship the project to them.
        runtime_env = {"working_dir": str(ROOT), "excludes": SHIPPED_EXCLUDES, "env_vars": worker_env()}
        try:
            return ray.init(address=request.address, log_to_driver=True, runtime_env=runtime_env)
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(f"--address {request.address}: cannot join that Ray cluster ({first})") from None
    # "local": not a `ray start` cluster that may run on this machine.
    return ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": worker_env()},
                    logging_level=logging.INFO if request.verbose else logging.WARNING)


def quiet_console(request: Request) -> None:
    """Without --verbose the driver prints SearchProgress's lines, not Tune's and Optuna's logs. Tune's
    new output engine prints its start block (and a TensorBoard hint naming Ray's temporary session
    folder) at every verbosity; its legacy engine at verbosity 0 prints nothing."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if request.verbose else "0"
    level = logging.INFO if request.verbose else logging.WARNING
    logging.getLogger("ray.tune").setLevel(level)
    # A resumed experiment's trials that never started have no results yet: Tune warns of each.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(level if request.verbose else logging.ERROR)
    optuna.logging.set_verbosity(level)
    if not request.verbose:
        # ASHA's cutoff over a rung where every trial reported NaN (unscorable models): numpy warns, the
        # scheduler then keeps them, and the summary says why each is unscorable.
        warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)


def node_capacities(autoscaler_config: Path = AUTOSCALER_CONFIG) -> list[dict[str, float]]:
    """CPU and GPU of every live node, and of every node type the autoscaler may still start (on a
    `ray up` head; a type whose resources the launcher did not fill in is taken as unbounded)."""
    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    if autoscaler_config.is_file():
        doc = yaml.safe_load(autoscaler_config.read_text()) or {}
        for node_type in (doc.get("available_node_types") or {}).values():
            if node_type.get("max_workers", 0) > 0 or node_type.get("min_workers", 0) > 0:
                resources = node_type.get("resources")
                nodes.append(dict(resources) if resources else {"CPU": float("inf"), "GPU": float("inf")})
    return nodes


def check_placement(request: Request, nodes: list[dict[str, float]] | None = None) -> None:
    """A trial no node can hold would stay pending forever: refuse it before any trial starts."""
    nodes = node_capacities() if nodes is None else nodes
    want = {"CPU": request.cpus_per_trial, "GPU": request.gpus_per_trial}
    if any(all(node.get(k, 0.0) >= v for k, v in want.items() if v > 0) for node in nodes):
        return
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    raise UsageError(
        f"no node of this Ray cluster can hold a trial of {request.cpus_per_trial:g} CPUs and "
        f"{request.gpus_per_trial:g} GPUs (largest node: {cpus:g} CPUs, {gpus:g} GPUs); lower "
        "--cpus-per-trial/--gpus-per-trial or join a cluster with such nodes via --address"
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
    trainable = tune.with_parameters(train_trial, bundle=bundle, checkpoint_every=request.checkpoint_every)
    return tune.with_resources(trainable, resources)


def console_lines(request: Request, rungs: list[int]) -> list[str]:
    """What the console says as an experiment starts: what runs, where its results go and the commands
    that show them (Ray's own TensorBoard hint names its temporary session folder)."""
    if request.fixed_config is None:
        sampler = {"optuna": "Optuna TPE", "random": "random sampling"}[request.searcher]
        early = f"ASHA (rungs at epochs {', '.join(map(str, rungs))})" if rungs else "no early stopping"
        what = (f"search of {request.num_samples} trials × up to {request.max_epochs} epochs, {sampler}, {early}; "
                f"objective {request.metric} ({request.mode})")
    else:
        what = (f"re-run of a fixed config on {len(request.splits)} split(s) × {len(request.seeds)} seed(s), "
                f"{request.max_epochs} epochs")
    lines = [f"{request.method} on {request.dataset}: {what}",
             f"Results:          {request.experiment_path}",
             f"TensorBoard:      tensorboard --logdir {shlex.quote(request.experiment_path)}"]
    if request.fixed_config is None:
        url = make_url(optuna_storage_url(request)).render_as_string(hide_password=True)
        lines.append(f"Optuna dashboard: optuna-dashboard {shlex.quote(url)}")
    return lines


def scheduler_rungs(scheduler: Any, max_epochs: int) -> list[int]:
    """The epochs below the last where the scheduler compares trials. Read from Ray's ASHA bracket (its
    private _rungs: (milestone, recorded) pairs) rather than recomputed, so the console names the rungs
    Ray uses; none for FIFO or a Ray whose internals moved."""
    rungs = getattr(next(iter(getattr(scheduler, "_brackets", [])), None), "_rungs", [])
    return sorted(int(rung[0]) for rung in rungs if int(rung[0]) < max_epochs)


def callbacks(request: Request, rungs: list[int]) -> list[Any]:
    """Each epoch once in a trial's records (across resumes) and, unless --verbose, the compact console
    in place of Tune's tables."""
    if request.verbose:
        return epoch_loggers()
    num_trials = request.num_samples if request.fixed_config is None else len(request.splits) * len(request.seeds)
    progress = SearchProgress(metric=request.metric, mode=request.mode, max_epochs=request.max_epochs,
                              num_trials=num_trials, rungs=rungs, header=console_lines(request, rungs))
    return [*epoch_loggers(), progress]


def _run_config(request: Request, rungs: list[int]) -> tune.RunConfig:
    return tune.RunConfig(
        name=request.name,
        storage_path=request.storage_path,
        # num_to_keep=1 with frequent checkpoints floods warnings (DESIGN.md): keep two.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # A trial whose worker or node dies restarts from its last checkpoint (trainables/trial.py).
        failure_config=tune.FailureConfig(max_failures=request.max_failures),
        # Trials write final_metrics.json and test_scores.parquet in their working folder; without
        # artifact syncing Ray would leave them in the node's session folder, not in storage_path.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        callbacks=callbacks(request, rungs),
        verbose=1 if request.verbose else 0,
    )


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default packs every parameter into the name)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def _define(trial: Any, *, method: str, max_epochs: int, num_known: int, fixed: dict[str, Any]) -> dict[str, Any]:
    return {**get_space(method).define(trial, max_epochs, num_known), **fixed}


def search_tuner(request: Request, bundle: DataBundle) -> tune.Tuner:
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
        study_attributes={"method": request.method, "dataset": request.dataset,
                          "command": request.command},
    )
    if request.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=request.max_concurrent)
    scheduler = make_scheduler(request)
    return tune.Tuner(
        _trainable(request, bundle),
        tune_config=tune.TuneConfig(metric=request.metric, mode=request.mode, search_alg=searcher,
                                    scheduler=scheduler, num_samples=request.num_samples, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=_run_config(request, scheduler_rungs(scheduler, request.max_epochs)),
    )


def restore_console(tuner: tune.Tuner, request: Request) -> None:
    """A restored Tuner takes the RunConfig pickled when the experiment started, and Tuner.restore
    cannot replace it: set this driver's console (its --verbose, fresh callbacks) on the restored one
    (Ray's TunerInternal keeps it in _run_config, which its get_run_config returns)."""
    rungs = [] if request.fixed_config is not None else scheduler_rungs(make_scheduler(request), request.max_epochs)
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = callbacks(request, rungs)
    run_config.verbose = 1 if request.verbose else 0


def make_scheduler(request: Request) -> ASHAScheduler | FIFOScheduler:
    if request.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=request.max_epochs,
                             **get_space(request.method).asha(request.max_epochs))
    return FIFOScheduler()


def rerun_tuner(request: Request, bundle: DataBundle) -> tune.Tuner:
    """One trial per (split, seed) of the fixed config, so they run side by side where resources allow."""
    param_space = {
        "method": request.method,
        "dataset": request.dataset,
        "splits": tune.grid_search([[s] for s in request.splits]),
        "seeds": tune.grid_search([[seed] for seed in request.seeds]),
        **(request.fixed_config or {}),
        **final_training(request),
    }
    return tune.Tuner(
        _trainable(request, bundle),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=request.metric, mode=request.mode, reuse_actors=True,
                                    max_concurrent_trials=request.max_concurrent,
                                    trial_dirname_creator=trial_dirname),
        run_config=_run_config(request, []),
    )


def final_training(request: Request) -> dict[str, Any]:
    """The trial-config keys of a re-run on all known training images (protocol.md §7); none at the
    default 80% partition, so such trials are configured exactly as before the option existed."""
    if request.final_train_fraction != ALL_KNOWN_TRAIN_FRACTION:
        return {}
    keys: dict[str, Any] = {TRAIN_FRACTION_KEY: request.final_train_fraction}
    if request.posthoc_cell is not None:
        keys["posthoc_cell"] = request.posthoc_cell
    return keys


def record_ray_session(request: Request, session_dir: str) -> None:
    """Appends the session folder of the Ray instance this driver started to RAY_SESSIONS_FILE: a driver
    killed with SIGKILL leaves a few of its processes behind, and this names them (README)."""
    path = storage.join(request.experiment_path, RAY_SESSIONS_FILE)
    try:
        before = storage.read_text(path) if storage.exists(path) else ""
        storage.write_text(path, before + session_dir + "\n")
    except storage.StorageError as err:
        raise UsageError(f"--storage-path {err}") from None


def run_experiment(request: Request, ray_session: str | None = None) -> tune.ResultGrid:
    # Save Tune's experiment state after every event rather than every ≥10 s: a driver killed at any
    # moment then resumes without re-running a trial that had already finished.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    quiet_console(request)
    bundle = load_bundle(request)
    trainable = _trainable(request, bundle)
    if request.resume:
        if not tune.Tuner.can_restore(request.experiment_path):
            raise UsageError(f"--resume: {request.experiment_path} holds no Tune state to resume")
        if not request.is_remote_storage:
            try:
                saved_state.make_whole(Path(request.experiment_path))
            except saved_state.SavedStateError as err:
                raise UsageError(f"--resume: {err}; start the search again under a new --name") from None
        tuner = tune.Tuner.restore(request.experiment_path, trainable, resume_errored=True)
        restore_console(tuner, request)
    else:
        if request.optuna_storage:
            try:  # fail on a bad URL before anything is written
                make_storage(request.optuna_storage)
            except Exception as err:  # SQLAlchemy raises many kinds, all of them a user's URL problem
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise UsageError(f"--optuna-storage {request.optuna_storage}: cannot open it ({first})") from None
        try:
            write_experiment_file(request)
        except storage.StorageError as err:
            raise UsageError(f"--storage-path {err}") from None
        tuner = rerun_tuner(request, bundle) if request.fixed_config is not None else search_tuner(request, bundle)
    if ray_session is not None:
        record_ray_session(request, ray_session)
    return tuner.fit()
