"""The compact console of a search (search/progress.py): one line per trial event, a status line with an
estimate of the time left, fed the calls Tune makes to a callback."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pytest

from search.experiment import scheduler_rungs
from search.progress import SearchProgress, duration_text


@dataclass
class Trial:
    """What the callback reads of Tune's trials."""

    trial_id: str
    status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress(clock: Clock, **kw: Any) -> tuple[SearchProgress, io.StringIO]:
    out = io.StringIO()
    args = {"metric": "val_auroc", "mode": "max", "max_epochs": 9, "num_trials": 3, "rungs": (1, 3),
            "header": ["softmax on digits: …"], "out": out, "clock": clock, "status_every_s": 30.0, **kw}
    return SearchProgress(**args), out


def test_events_promotions_and_the_end_status_are_one_line_each():
    clock = Clock()
    cb, out = progress(clock)
    a, b, c = Trial("a"), Trial("b"), Trial("c")
    trials = [a, b, c]
    cb.setup()
    a.status = "RUNNING"
    cb.on_trial_start(0, trials, a)
    for epoch, value in [(1, 0.6), (2, 0.65), (3, 0.7)]:
        clock.now += 1
        cb.on_trial_result(0, trials, a, {"epoch": epoch, "val_auroc": value})
    b.status = "RUNNING"
    cb.on_trial_start(0, trials, b)
    clock.now += 1
    cb.on_trial_result(0, trials, b, {"epoch": 1, "val_auroc": 0.5})
    b.status = "TERMINATED"
    cb.on_trial_complete(0, trials, b)  # ASHA stopped it at its first rung
    for epoch in range(4, 10):
        clock.now += 1
        cb.on_trial_result(0, trials, a, {"epoch": epoch, "val_auroc": 0.7 + epoch / 100})
    a.status = "TERMINATED"
    cb.on_trial_complete(0, trials, a)
    c.status = "RUNNING"
    cb.on_trial_start(0, trials, c)
    cb.on_trial_result(0, trials, c, {"epoch": 1, "val_auroc": float("nan"), "trial_error": "DivergedError: loss\nnan"})
    c.status = "TERMINATED"
    cb.on_trial_complete(0, trials, c)
    cb.on_experiment_end(trials)
    assert out.getvalue().splitlines() == [
        "softmax on digits: …",
        "[0:00] a                started   epoch   0/9",
        "[0:02] a                promoted  epoch   1/9  val_auroc 0.6  best 0.6",  # once it trains past the rung
        "[0:03] b                started   epoch   0/9",
        "[0:04] b                pruned    epoch   1/9  val_auroc 0.5  best 0.7",  # pruned at its rung: no promotion
        "[0:05] a                promoted  epoch   3/9  val_auroc 0.7  best 0.7",
        "[0:10] a                finished  epoch   9/9  val_auroc 0.79  best 0.79",
        "[0:10] c                started   epoch   0/9",
        "[0:10] c                errored   epoch   0/9  best 0.79  (DivergedError: loss nan)",
        "[0:10] 0 running, 1 finished, 1 pruned, 1 errored, 0 waiting | best reported val_auroc 0.79 (a, epoch 9)",
    ]


def test_a_status_line_comes_every_30_seconds_with_the_time_left_at_the_pace_so_far():
    clock = Clock()
    cb, out = progress(clock, rungs=(), max_epochs=10, num_trials=4)
    trials = [Trial("a", "RUNNING"), Trial("b", "RUNNING"), Trial("c"), Trial("d")]
    cb.setup()
    for t in trials[:2]:
        cb.on_trial_start(0, trials, t)
    clock.now += 29
    cb.on_step_end(0, trials)
    assert "waiting" not in out.getvalue()  # not due yet
    # 30 s, 6 epochs trained (3 each): 0.2 epochs/s. Left: 2 × 7 running + 2 waiting × 10 (none ended
    # yet, so the full budget) = 34 epochs → 170 s.
    for t in trials[:2]:
        cb.on_trial_result(0, trials, t, {"epoch": 3, "val_auroc": 0.8 if t.trial_id == "a" else 0.9})
    clock.now += 1
    cb.on_step_end(0, trials)
    assert out.getvalue().splitlines()[-1] == ("[0:30] 2 running, 0 finished, 0 pruned, 0 errored, 2 waiting | best "
                                               "reported val_auroc 0.9 (b, epoch 3) | about 3 min left (estimate)")
    clock.now += 10
    cb.on_step_end(0, trials)
    assert len(out.getvalue().splitlines()) == 4  # header, 2 started, 1 status: the next is 30 s later


def test_min_mode_ranks_the_lowest_best_and_a_trial_resumed_from_a_checkpoint_says_so():
    clock = Clock()
    cb, out = progress(clock, metric="val_nll", mode="min", rungs=())
    t = Trial("a", "RUNNING", last_result={"epoch": 4})
    cb.setup()
    cb.on_trial_start(0, [t], t)
    cb.on_trial_result(0, [t], t, {"epoch": 5, "val_nll": 0.4})
    cb.on_trial_result(0, [t], t, {"epoch": 6, "val_nll": 0.5})
    lines = out.getvalue().splitlines()
    assert lines[1] == "[0:00] a                resumed   epoch   4/9"
    assert cb.status_line([t], final=True).endswith("best reported val_nll 0.4 (a, epoch 5)")


@pytest.mark.parametrize("seconds, text", [(4, "10 s"), (44, "40 s"), (170, "3 min"), (5400, "1.5 h")])
def test_estimates_are_rounded_to_what_an_estimate_can_say(seconds, text):
    assert duration_text(seconds) == text


def test_the_rungs_named_are_those_of_rays_asha_below_the_last_epoch():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    def rungs(max_t: int, grace: int) -> list[int]:
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=3)
        return scheduler_rungs(scheduler, max_t)

    # Ray puts a rung at max_t when grace·3^k hits it exactly; reaching max_t is finishing, not a rung.
    assert rungs(30, 3) == [3, 9, 27]
    assert rungs(27, 3) == [3, 9]
    assert rungs(2, 1) == [1]
    assert scheduler_rungs(FIFOScheduler(), 30) == []
