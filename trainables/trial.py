"""The one Ray Tune trainable: a config in, metrics and checkpoints out. The work is in the task's
runner (trainables/tasks.py: runs.py for open-set methods, gate_clustering.py for ClustNet)."""

from __future__ import annotations

import gc
import logging
import math
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from results_analysis.trial_files import TRIAL_ERROR_FILE, TRIAL_ERROR_KEY
from trainables.device_data import DataBundle
from trainables.tasks import trial_runs

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_EVERY = 5
# Ray Train logs every checkpoint it stores at INFO, which Ray forwards to the driver's console: a line
# per checkpoint per trial. The checkpoints are in the trial folders.
logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
# The objective a trial may be searched on besides its validation metrics (search/cli.py check_metric).
TRAIN_OBJECTIVE = "train_loss"


def pick_device(resources: dict[str, float], cuda: Any = torch.cuda) -> torch.device:
    """The device of a trial holding ``resources`` (Ray's CPU/GPU request): the GPU Ray assigned,
    capped to the trial's share of its memory when the share is a fraction; else the CPU with as many
    threads as CPUs held (a reused actor keeps the previous trial's setting, so it is always set)."""
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    share = float(resources.get("GPU", 0))
    if share <= 0 or not cuda.is_available():
        return torch.device("cpu")
    # Fractional GPUs are logical in Ray: co-located trials share one device with no isolation, so
    # each caps its own allocations to its share (1.0 lifts a cap a reused actor may carry).
    cuda.set_per_process_memory_fraction(min(share, 1.0))
    return torch.device("cuda")


def train_trial(config: dict[str, Any], bundle: DataBundle, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
    """Trains, validates every epoch and tests at the end, reporting each epoch to Tune.

    Tune retries a trial that fails (``--max-failures``) to survive lost workers and nodes: only the
    death of the process reaches it. An exception of the trial's own code (a diverged loss, a bug) would
    be raised again by every retry, so it ends the trial here instead: ``trial_error.txt`` holds the
    reason and the traceback, and one last report carries ``trial_error`` with every metric NaN."""
    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    # Which node ran each epoch: on a cluster, a trial that moves after a node loss shows it.
    node = {"node_id": ray.get_runtime_context().get_node_id()}
    device = pick_device(ctx.get_trial_resources().required_resources)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)

    progress = {"epoch": 0 if state is None else int(state["epoch"]) + 1}
    steps = _epochs(config, bundle, device, state, trial_dir, ctx.get_trial_id(), checkpoint_every, progress)
    last: dict[str, Any] | None = None
    try:
        while True:
            # Only the trial's own work is inside this try: a failure to report or to store a
            # checkpoint is Tune's and its storage's, which a retry may well get past.
            try:
                metrics, saved = next(steps)
            except StopIteration:
                return
            except Exception as err:  # every exception of the trial's own code ends it the same way
                error_report = _error_report(err, last, config, bundle, device)
                reason = _write_error(trial_dir, err)
                tune.report({**error_report, "epoch": progress["epoch"], TRIAL_ERROR_KEY: reason, **node})
                return
            metrics = {**metrics, **node}
            if saved is None:
                tune.report(metrics)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    torch.save(saved, Path(folder) / CHECKPOINT_FILE)
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            last = metrics
    finally:
        # reuse_actors keeps this process for the next trial: free the model and optimiser now.
        steps.close()
        del steps
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _epochs(config: Mapping[str, Any], bundle: DataBundle, device: torch.device, state: Mapping[str, Any] | None,
            trial_dir: Path, trial_id: str, checkpoint_every: int, progress: dict[str, int]
            ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The trial's own work, one epoch at a time: (the epoch's report, the state to checkpoint with it
    or None). ``progress["epoch"]`` counts the epochs trained so far."""
    runs = trial_runs(config, bundle, device)
    try:
        if state is not None:
            progress["epoch"] = runs.load_state_dict(state) + 1
        else:
            runs.write_epoch(trial_dir, 0)  # the initial weights, where the task keeps per-epoch files
        for epoch in range(progress["epoch"], runs.epochs):
            metrics = runs.train_epoch(epoch)
            progress["epoch"] = epoch + 1
            runs.write_epoch(trial_dir, epoch + 1)
            last = epoch == runs.epochs - 1
            if last:
                # Test before the final report: once it is in, Tune may end this function at any time.
                runs.write_final(trial_dir, trial_id, metrics)
            yield metrics, runs.state_dict(epoch) if last or (epoch + 1) % checkpoint_every == 0 else None
    finally:
        del runs


def _write_error(trial_dir: Path, err: BaseException) -> str:
    """Writes ``trial_error.txt`` (the one-line reason, then the traceback); returns the reason."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    trial_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(err))
    (trial_dir / TRIAL_ERROR_FILE).write_text(f"{reason}\n\n{text}")
    return reason


def _error_report(err: Exception, last: Mapping[str, Any] | None, config: Mapping[str, Any], bundle: DataBundle,
                  device: torch.device) -> dict[str, float]:
    """The metrics of the report that ends a failed trial, all NaN: Tune refuses a report without the
    objective, and only the trial's metric names say which it is. They are the last report's; before
    any report, those a freshly built trial validates (initial weights: the failed ones may be NaN).
    If even these cannot be had, ``err`` is raised after all (Tune's retries, the old behaviour)."""
    if last is not None:
        names = [k for k, v in last.items() if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"]
    else:
        # The failed runs stay referenced from the traceback's frames: free them before a new build.
        traceback.clear_frames(err.__traceback__)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            fresh = trial_runs(config, bundle, device)
            names = fresh.validation_names()
            del fresh
        except Exception:
            raise err from None
    return dict.fromkeys([*names, TRAIN_OBJECTIVE], math.nan)
