"""The one Ray Tune trainable: a config in, metrics and checkpoints out. The work is in the task's
runner (trainables/tasks.py: runs.py for open-set methods, gate_clustering.py for ClustNet)."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from methods import DivergedError
from trainables.runs import DataBundle
from trainables.tasks import trial_runs

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_EVERY = 5
# Written when a trial's loss diverges: Tune retries failed trials (to survive lost workers and nodes),
# and a retry of a diverged config would diverge again, so a retry on the same node ends at once.
DIVERGED_FILE = "diverged.txt"


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
    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    diverged = trial_dir / DIVERGED_FILE
    if diverged.exists():
        raise DivergedError(f"{diverged.read_text().strip()} (an earlier attempt; not retried)")
    # Which node ran each epoch: on a cluster, a trial that moves after a node loss shows it.
    node = {"node_id": ray.get_runtime_context().get_node_id()}
    runs = trial_runs(config, bundle, pick_device(ctx.get_trial_resources().required_resources))
    first_epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True)
        first_epoch = runs.load_state_dict(state) + 1

    try:
        if first_epoch == 0:
            runs.write_epoch(trial_dir, 0)  # the initial weights, where the task keeps per-epoch files
        for epoch in range(first_epoch, runs.epochs):
            try:
                metrics = {**runs.train_epoch(epoch), **node}
            except DivergedError as err:
                diverged.write_text(str(err))
                raise
            runs.write_epoch(trial_dir, epoch + 1)
            last = epoch == runs.epochs - 1
            if last:
                # Test before the final report: once it is in, Tune may end this function at any time.
                runs.write_final(trial_dir, ctx.get_trial_id(), metrics)
            if last or (epoch + 1) % checkpoint_every == 0:
                with tempfile.TemporaryDirectory() as folder:
                    torch.save(runs.state_dict(epoch), Path(folder) / CHECKPOINT_FILE)
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            else:
                tune.report(metrics)
    finally:
        # reuse_actors keeps this process for the next trial: free the model and optimiser now.
        del runs
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
