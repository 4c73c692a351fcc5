"""DIFAIR search space (difair.md §12). Objective: validation AUROC of the min-distance score."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default, recipe_fixed


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    trial.suggest_float("lr", 0.01, 1.0, log=True)
    trial.suggest_float("anchor_multiplier", 1.0, 20.0, log=True)
    trial.suggest_float("radius_ratio", 0.3, 0.9)
    features = trial.suggest_categorical("features_per_class", [1, 2, 5, 10, 20])
    trial.suggest_float("smooth_coef", 0.0, 1.0)
    trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    fixed: dict[str, Any] = recipe_fixed(max_epochs)
    # The penalty is a switch plus a log-uniform weight; with F = 1 it is identically 0, so not searched.
    if features > 1 and trial.suggest_categorical("search/corr_penalty", [True, False]):
        trial.suggest_float("corr_penalty_weight", 0.01, 10.0, log=True)
    else:
        fixed["corr_penalty_weight"] = 0.0
    return fixed


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
