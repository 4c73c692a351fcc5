"""The one Ray Tune trainable: a config in, metrics and checkpoints out. The work is in the task's
runner (trainables/tasks.py: runs.py for open-set methods, gate_clustering.py for ClustNet)."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.runs import DataBundle
from trainables.tasks import trial_runs

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_EVERY = 5


def pick_device() -> torch.device:
    """The GPU Ray assigned to this trial, capped to the trial's share when the share is fractional;
    on the CPU, as many threads as the trial holds CPUs (reused actors keep the last trial's setting)."""
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    share = resources.get("GPU", 0)
    if share <= 0 or not torch.cuda.is_available():
        return torch.device("cpu")
    if share < 1:
        # Fractional GPUs are logical in Ray: without this cap co-located trials can starve each other.
        torch.cuda.set_per_process_memory_fraction(share)
    return torch.device("cuda")


def train_trial(config: dict[str, Any], bundle: DataBundle) -> None:
    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    runs = trial_runs(config, bundle, pick_device())
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
            metrics = runs.train_epoch(epoch)
            runs.write_epoch(trial_dir, epoch + 1)
            last = epoch == runs.epochs - 1
            if last:
                # Test before the final report: once it is in, Tune may end this function at any time.
                runs.write_final(trial_dir, ctx.get_trial_id(), metrics)
            if last or (epoch + 1) % CHECKPOINT_EVERY == 0:
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
