"""OpenMax on the softmax baseline: the baseline's space (baselines.md §4) plus the head's post-hoc
parameters (crosr_openmax.md §11). Objective: validation AUROC of the unknown probability."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default, softmax, suggest_openmax


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    fixed = softmax.define(trial, max_epochs, num_known)
    suggest_openmax(trial, num_known)
    return fixed


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
