"""ClustNet search space (clustnet.md §11). Objective: validation mean of the P and N clustering
accuracies at the reported epoch, averaged over the trial's seeds (3 by default: the seed variance is
high). Fixed: M = 5 experts, momentum 0.5, batch period 2, decision DE, 2-layer encoder to 100-d.

Beyond the spec's four parameters the load-balancing weight β is searched over the values §11 lists
as a later addition, {0, 0.01, 0.1, 1}: with β = 0 the gate collapsed onto one expert in 2 of 3
MNIST seeds here (every image routed to it, clustering accuracy at chance), so a search without it
would mostly compare collapsed gates."""

from __future__ import annotations

from typing import Any

import optuna

from spaces import asha_default


def define(trial: optuna.Trial, max_epochs: int, num_known: int) -> dict[str, Any]:
    trial.suggest_float("lr", 1e-4, 0.1, log=True)  # lr_gate stays tied to it
    # The README's finding: small batches work much better, so the smallest ones are in the range.
    trial.suggest_categorical("batch_size", [4, 8, 16, 32, 64])
    trial.suggest_int("gate_layers", 1, 5)
    trial.suggest_categorical("dn_capacity", ["linear", "hidden8", "hidden16", "hidden32"])
    trial.suggest_categorical("balance_weight", [0.0, 0.01, 0.1, 1.0])
    return {"epochs": max_epochs}


def asha(max_epochs: int) -> dict[str, int]:
    return asha_default(max_epochs)
