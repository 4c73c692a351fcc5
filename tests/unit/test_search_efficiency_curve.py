"""The anytime curve and headline arithmetic of bench/search_efficiency.py, on hand-made trial records."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from repo_paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import search_efficiency as se  # noqa: E402


def make_run(curves: dict[str, list[float]]) -> se.Run:
    events = [(t, e + 1) for t, c in curves.items() for e in range(len(c))]
    return se.Run("x", 0, Path("."), curves=curves, events=events)


def test_curve_counts_only_finished_trials_and_never_falls():
    # a: finished at 0.7; b: pruned after 1 epoch at 0.99 (never counted); c: finished lower at 0.6.
    run = make_run({"a": [0.5, 0.6, 0.7], "b": [0.99], "c": [0.4, 0.5, 0.6], "d": [0.8, 0.85, 0.9]})
    curve = se.anytime_curve(run, max_epochs=3, budget=10)
    assert math.isnan(curve[0]) and math.isnan(curve[1])
    assert list(curve[2:7]) == [0.7] * 5 and curve[7] == 0.7 and curve[9] == 0.9
    assert np.all(np.diff(curve[2:]) >= 0)
    assert se.epochs_to_reach(curve, 0.8) == 10
    assert se.finished_within(run, 3, 9) == ["a", "c"]


def test_curve_is_cut_at_the_budget_and_held_when_a_run_consumed_less():
    run = make_run({"a": [0.5, 0.6, 0.7], "b": [0.1, 0.2, 0.9]})
    assert se.anytime_curve(run, 3, 5)[-1] == 0.7  # b's completion falls past the budget
    assert list(se.anytime_curve(run, 3, 8)[5:]) == [0.9, 0.9, 0.9]


def test_grid_has_lrs_times_values_and_covers_every_parameter_the_space_suggests():
    import optuna

    from spaces import get_space

    args = se.parse_args(["--method", "difair", "--trials", "6"])
    space, configs = se.grid_space(args)
    assert len(configs) == 6
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space, seed=0), direction="maximize")
    # define() raises if it suggests a parameter the grid lacks; the sampler stops the study when done.
    study.optimize(lambda trial: [get_space("difair").define(trial, 12, 6), 0.0][1], n_trials=10)
    assert len(study.trials) == 6
    assert sorted((t.params["lr"], t.params["anchor_multiplier"]) for t in study.trials) == \
        sorted((c["lr"], c["anchor_multiplier"]) for c in configs)
