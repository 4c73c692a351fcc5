"""Adversarial separation search space (adversarial.md §10). Objective: validation AUROC of the
ensemble-MSP score (mean over splits); the diversity metrics and the in-run baseline's numbers are
logged with every report, never optimised.

Fixed per §10: mode alternating, adv_target different, d_steps 1, weight decay 5e-4, balanced pair
weighting, and a cosine schedule over the budget (the reference has none)."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    trial.suggest_float("lr_cls", 1e-3, 1e-1, log=True)
    trial.suggest_float("lr_d", 1e-4, 3e-3, log=True)
    trial.suggest_float("ce_weight", 0.3, 0.95)
    trial.suggest_categorical("d_width", [16, 32, 64, 128])
    trial.suggest_categorical("batch_size", [128, 256, 512])  # total; each classifier sees half
    return {"epochs": max_epochs, "lr_schedule": "cosine"}


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
