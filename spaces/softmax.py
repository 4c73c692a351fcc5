"""CE baseline search space (baselines.md §4, matched to DIFAIR's ranges). Selection by MLS AUROC."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default, recipe_fixed


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    trial.suggest_float("lr", 0.01, 1.0, log=True)
    trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    trial.suggest_float("label_smoothing", 0.0, 0.9)
    return recipe_fixed(max_epochs)


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
