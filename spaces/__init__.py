"""Search spaces, one module per method (``spaces/<method>.py``), found by name.

A space module defines ``define(trial, max_epochs, num_known) -> dict`` (Optuna define-by-run:
suggested values are captured from the trial, the returned dict holds the fixed ones; ``num_known`` is
K, which bounds e.g. OpenMax's alpha rank) and ``asha(max_epochs) -> dict``
(its early-stopping settings). Parameters that only steer the search, such as an on/off switch, are
named ``search/...`` so they land under the config's ``search`` key, which the trainable ignores."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def get_space(method: str) -> ModuleType:
    try:
        module = importlib.import_module(f"spaces.{method}")
    except ModuleNotFoundError as err:
        raise KeyError(f"no search space for method {method!r} (expected spaces/{method}.py)") from err
    for name in ("define", "asha"):
        if not callable(getattr(module, name, None)):
            raise TypeError(f"spaces/{method}.py must define {name}()")
    return module


def recipe_fixed(max_epochs: int) -> dict[str, int]:
    """Settings of the shared SGD recipe that follow from the budget rather than being searched.

    The spec's 10 warm-up epochs assume 600; with ASHA deciding after the first epochs, a warm-up
    longer than a tenth of the budget would judge barely trained models, so it shrinks with the
    budget (10 at 100 epochs and more)."""
    return {"epochs": max_epochs, "warmup_epochs": min(10, max_epochs // 10)}


def asha_default(max_epochs: int) -> dict[str, int]:
    """Rungs at grace·3^k epochs: a tenth of the budget first, at least one epoch."""
    return {"grace_period": max(1, max_epochs // 10), "reduction_factor": 3}


def suggest_openmax(trial: Any, num_known: int) -> None:
    """OpenMax's post-hoc parameters (crosr_openmax.md §11). Every checkpoint is also scored over the
    whole grid of them, so sampling them lets the searcher model their interaction with training."""
    trial.suggest_categorical("tailsize", [10, 20, 50, 100, 200])
    trial.suggest_int("alpha_rank", 1, num_known)
    trial.suggest_categorical("distance", ["euclidean", "eucos", "cosine"])


def config_from_trial(method: str, trial: Any, max_epochs: int, num_known: int) -> dict[str, Any]:
    """The hyperparameters a search hands the trainable for ``trial``: the space's suggested values and
    its fixed ones, with ``search/...`` parameters nested under ``search`` as Ray's OptunaSearch nests
    them (search/experiment.py; the search adds the experiment's method, dataset, splits and seeds).
    ``trial`` is an Optuna trial (a ``FixedTrial`` replays a study trial's parameters)."""
    fixed = get_space(method).define(trial, max_epochs, num_known)
    flat = {**trial.params, **fixed}
    config: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return config
