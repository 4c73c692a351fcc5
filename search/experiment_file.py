"""experiment.yaml: what --resume needs to rebuild the same experiment, beside Ray's own state. Written
when an experiment starts (search/experiment.py), read by --resume (search/cli.py); its keys are those
of the command line's Request."""

from __future__ import annotations

import typing
from typing import Any

import yaml

from results_analysis.trial_files import EXPERIMENT_FILE, TRAIN_FRACTION_KEY
from search import storage

if typing.TYPE_CHECKING:
    from search.cli import Request


def write_experiment_file(request: Request) -> None:
    """experiment.yaml of ``request`` in its experiment folder; raises storage.StorageError."""
    doc = {
        "method": request.method, "dataset": request.dataset, "splits": request.splits, "seeds": request.seeds,
        "max_epochs": request.max_epochs, "metric": request.metric, "num_samples": request.num_samples,
        "searcher": request.searcher, "scheduler": request.scheduler, "data_root": str(request.data_root),
        "rerun": request.fixed_config is not None, "checkpoint_every": request.checkpoint_every,
        TRAIN_FRACTION_KEY: request.final_train_fraction,
        # Also fixed for a resume (search/cli.py RESUME_FIXED): Tune restores them from its own state.
        "cpus_per_trial": request.cpus_per_trial, "gpus_per_trial": request.gpus_per_trial,
        "max_concurrent": request.max_concurrent, "max_failures": request.max_failures,
        "optuna_storage": request.optuna_storage, "fixed_config": request.fixed_config,
        "command": request.command,
    }
    storage.write_text(storage.join(request.experiment_path, EXPERIMENT_FILE), yaml.safe_dump(doc, sort_keys=False))


def read_experiment_file(experiment: str) -> dict[str, Any]:
    """The experiment.yaml of the experiment folder ``experiment``; raises storage.StorageError or
    yaml.YAMLError when there is none to read."""
    return yaml.safe_load(storage.read_text(storage.join(experiment, EXPERIMENT_FILE)))
