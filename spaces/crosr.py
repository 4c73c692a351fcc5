"""CROSR search space (crosr_openmax.md §11). Objective: validation AUROC of OpenMax's unknown
probability at the sampled post-hoc cell (mean over splits)."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default, suggest_openmax


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    trial.suggest_float("lr", 0.01, 0.2, log=True)
    # λ = 0 (a plain CNN) is the matched baseline run, not part of this search (baselines.md §2).
    trial.suggest_float("recon_weight", 0.01, 10.0, log=True)
    trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    suggest_openmax(trial, num_known)
    # Fixed per §11: momentum 0.9, weight decay 5e-4, StepLR(30, 0.5), AV = logits + max-pooled latents.
    return {"epochs": max_epochs}


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
