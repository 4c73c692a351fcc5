"""Contrastive Disentangling search space (contrastive_disentangling.md §8). Objective: validation NMI
of k-means on the backbone output h, on a stratified 20% of the train split (§6.2); the feature
predictor's readout, ARI and ACC are logged with every report, never optimised.

Fixed per §8: hidden_dim 128, weight decay 0, feature-loss weight 1, colour strength and blur per
dataset, k-means on raw features, no LR schedule (the reference's)."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    trial.suggest_float("lr", 1e-4, 1e-3, log=True)
    trial.suggest_float("tau_instance", 0.1, 1.0)
    trial.suggest_float("tau_feature", 0.5, 2.0)
    trial.suggest_float("entropy_weight", 0.0, 2.0)  # 0 switches the entropy bonus off (ablation)
    trial.suggest_categorical("feature_dim", [64, 128, 256])
    trial.suggest_categorical("batch_size", [64, 128, 256])  # full batches only (drop_last)
    return {"epochs": max_epochs}


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
