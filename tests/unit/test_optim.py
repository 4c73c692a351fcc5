"""Spec tests for methods/optim.py (shared/specs/difair.md §8): the warm-up + cosine-restarts schedule
against every worked value of the §8.2 table, and SGD with decoupled weight decay stepped by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from methods import method_names
from methods.base import DataInfo
from methods.difair import Difair, DifairConfig
from methods.optim import CycleShape, DecoupledSGD, cycle_shape, lr_at_epoch

EPOCHS = [0, 1, 5, 10, 11, 50, 100, 199, 200, 201, 400, 401, 599]

# difair.md §8.2, E = 600, T = 200, W = 10, copied verbatim (lr₀ = 0.3 and lr₀ = 0.5)
TABLE = {
    ("cosine_restarts_reference", 0.3): [
        3.0e-4, 0.0301, 0.1492, 0.29816, 0.29815, 0.2577, 0.1524, 1.640e-4, 1.085e-4, 0.3, 1.085e-4, 0.3, 1.640e-4,
    ],
    ("cosine_restarts_reference", 0.5): [
        5.0e-4, 0.0501, 0.2487, 0.49693, 0.49692, 0.4296, 0.2541, 3.733e-4, 2.808e-4, 0.5, 2.808e-4, 0.5, 3.733e-4,
    ],
    ("cosine_restarts", 0.3): [
        3.0e-4, 0.0301, 0.1492, 0.29816, 0.29777, 0.25611, 0.15015, 3.185e-4, 0.3, 0.29998, 0.3, 0.29998, 3.185e-4,
    ],
    ("cosine_restarts", 0.5): [
        5.0e-4, 0.0501, 0.2487, 0.49693, 0.49628, 0.42685, 0.25025, 5.308e-4, 0.5, 0.49997, 0.5, 0.49997, 5.308e-4,
    ],
}
CASES = [
    (variant, lr0, epoch, value)
    for (variant, lr0), values in TABLE.items()
    for epoch, value in zip(EPOCHS, values, strict=True)
]


@pytest.mark.parametrize("variant,lr0,epoch,expected", CASES)
def test_schedule_matches_worked_table(variant, lr0, epoch, expected):
    assert lr_at_epoch(epoch, lr0, 600, warmup=10, restarts=2, variant=variant) == pytest.approx(expected, rel=1e-3)


def test_schedule_defaults_are_clean_w10_two_restarts():
    for epoch, value in zip(EPOCHS, TABLE[("cosine_restarts", 0.3)], strict=True):
        assert lr_at_epoch(epoch, 0.3, 600) == pytest.approx(value, rel=1e-3)


def test_schedule_short_budget_period_is_floor_e_over_3():
    # E = 91 → T = ⌊91/3⌋ = 30; e = 45 is half a period after the restart at 30:
    # η_min + (lr₀ − η_min)·½ = 3e-4 + 0.2997/2 = 0.15015; restart at e = 60 gives lr₀ again
    assert lr_at_epoch(45, 0.3, 91) == pytest.approx(0.15015, rel=1e-9)
    assert lr_at_epoch(60, 0.3, 91) == pytest.approx(0.3, rel=1e-9)
    # no warm-up: lr(0) = lr₀ (the cosine at phase 0), not η_min
    assert lr_at_epoch(0, 0.3, 600, warmup=0) == pytest.approx(0.3, rel=1e-9)


@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("restarts", [0, 1, 2, 3])
def test_schedule_never_restarts_in_the_final_epochs(restarts, warmup):
    """Whatever the budget, the scored model has just trained at a decaying rate: the last epoch's rate is
    below the one before it and at most the floor plus half the range; every later cycle starts at lr₀,
    and the requested restarts all happen when the budget holds cycles of at least two epochs."""
    lr0 = 0.3
    eta_min = 1e-3 * lr0
    for epochs in range(2, 201):
        rates = [lr_at_epoch(e, lr0, epochs, warmup=warmup, restarts=restarts) for e in range(epochs)]
        assert rates[-1] < rates[-2], (epochs, rates[-3:])
        assert rates[-1] <= eta_min + 0.5 * (lr0 - eta_min) + 1e-12, (epochs, rates[-1])
        shape = cycle_shape(epochs, warmup, restarts)
        rises = [e for e in range(shape.warmup + 1, epochs) if rates[e] > rates[e - 1]]
        assert all(rates[e] == pytest.approx(lr0, rel=1e-12) for e in rises), (epochs, rises)
        assert len(rises) == shape.restarts, (epochs, rises, shape)
        if epochs >= 2 * (restarts + 1):
            assert shape.restarts == restarts
        lengths = [b - a for a, b in zip([0, *rises], [*rises, epochs], strict=True)]
        assert min(lengths) >= 2, (epochs, lengths)


def test_schedule_shape_keeps_the_spec_at_600_and_cuts_short_budgets():
    assert cycle_shape(600, 10, 2) == CycleShape(cycles=3, period=200, warmup=10)
    # 100 epochs: 33 + 33 + 34, the last cycle absorbs the remainder (the old code restarted at e = 99)
    assert cycle_shape(100, 10, 2) == CycleShape(cycles=3, period=33, warmup=10)
    assert lr_at_epoch(99, 0.3, 100) == pytest.approx(3e-4 + 0.2997 * 0.5 * (1 + math.cos(math.pi * 33 / 34)))
    # 5 epochs cannot hold 3 cycles of 2: one restart (2 + 3), warm-up cut to 0 in a 2-epoch first cycle
    assert cycle_shape(5, 10, 2) == CycleShape(cycles=2, period=2, warmup=0)
    # 30 epochs: three cycles of 10, warm-up 4 (a 10-epoch warm-up would end where the cycle does)
    assert cycle_shape(30, 10, 2) == CycleShape(cycles=3, period=10, warmup=4)


def test_schedule_unknown_variant_rejected():
    with pytest.raises(ValueError):
        lr_at_epoch(50, 0.3, 600, variant="cosine")


def test_method_lr_for_epoch_passes_config_through():
    info = DataInfo(channels=1, image_size=8, num_known=2)
    ref = Difair(DifairConfig(lr=0.5, lr_schedule="cosine_restarts_reference"), info)
    assert ref.lr_for_epoch(200) == pytest.approx(2.808e-4, rel=1e-3)
    assert ref.lr_for_epoch(201) == pytest.approx(0.5, rel=1e-3)
    clean = Difair(DifairConfig(lr=0.5), info)
    assert clean.lr_for_epoch(11) == pytest.approx(0.49628, rel=1e-3)


# --------------------------------------------------------------------------------------------------
# DecoupledSGD by hand: η = 0.1, μ = 0.9, λ = 0.01, θ₀ = [1, −2]
#   step 1, g = [0.5, 1.0]:  θ·(1 − ηλ) = θ·0.999 = [0.999, −1.998];  v = g = [0.5, 1.0]
#                            θ = [0.999 − 0.05, −1.998 − 0.1] = [0.949, −2.098]
#   step 2, g = [−0.2, 0.4]: θ·0.999 = [0.948051, −2.095902];  v = 0.9·[0.5, 1] + g = [0.25, 1.3]
#                            θ = [0.948051 − 0.025, −2.095902 − 0.13] = [0.923051, −2.225902]
# (coupled decay, g + λθ through the momentum buffer, would give [0.922151, −2.224102] at step 2)


def test_decoupled_sgd_two_steps_by_hand():
    theta = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = DecoupledSGD([theta], lr=0.1, momentum=0.9, weight_decay=0.01)
    theta.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
    opt.step()
    assert theta.tolist() == pytest.approx([0.949, -2.098], abs=1e-12)
    theta.grad = torch.tensor([-0.2, 0.4], dtype=torch.float64)
    opt.step()
    assert theta.tolist() == pytest.approx([0.923051, -2.225902], abs=1e-12)


def test_decoupled_sgd_decay_uses_current_lr():
    # after step 1 above, drop lr to 0.05 for step 2: θ·(1 − 0.05·0.01) = θ·0.9995 = [0.9485255, −2.096951]
    # v = [0.25, 1.3] → θ = [0.9485255 − 0.0125, −2.096951 − 0.065] = [0.9360255, −2.161951]
    theta = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = DecoupledSGD([theta], lr=0.1, momentum=0.9, weight_decay=0.01)
    theta.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
    opt.step()
    opt.param_groups[0]["lr"] = 0.05
    theta.grad = torch.tensor([-0.2, 0.4], dtype=torch.float64)
    opt.step()
    assert theta.tolist() == pytest.approx([0.9360255, -2.161951], abs=1e-12)


def test_decoupled_sgd_is_plain_momentum_form():
    opt = DecoupledSGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    group = opt.param_groups[0]
    assert group["momentum"] == 0.9 and group["dampening"] == 0 and group["nesterov"] is False
    assert group["weight_decay"] == 0.0  # no coupled decay on top
    assert group["decoupled_weight_decay"] == 1e-4


def test_batchnorm_parameters_are_decayed_too():
    # zero gradient: only the shrink acts. γ = 1 → 1·(1 − 0.1·0.01) = 0.999, β = 0.5 → 0.4995
    bn = nn.BatchNorm1d(2).double()
    with torch.no_grad():
        bn.bias.fill_(0.5)
    opt = DecoupledSGD(bn.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    (0.0 * (bn.weight.sum() + bn.bias.sum())).backward()
    opt.step()
    assert bn.weight.tolist() == pytest.approx([0.999, 0.999], abs=1e-12)
    assert bn.bias.tolist() == pytest.approx([0.4995, 0.4995], abs=1e-12)


def test_parameter_without_grad_is_untouched():
    used = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    unused = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = DecoupledSGD([used, unused], lr=0.1, momentum=0.9, weight_decay=0.01)
    used.grad = torch.zeros(1, dtype=torch.float64)
    opt.step()
    assert used.item() == pytest.approx(1.998, abs=1e-12)
    assert unused.item() == 2.0


def test_method_optimizer_covers_every_parameter_including_bn():
    method = Difair(DifairConfig(), DataInfo(channels=1, image_size=8, num_known=2))
    opt = method.optimizer
    assert isinstance(opt, DecoupledSGD)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    params = list(method.model.parameters())
    assert {id(p) for p in params} == in_opt
    bn = [m for m in method.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and all(id(m.weight) in in_opt and id(m.bias) in in_opt for m in bn)
    for g in opt.param_groups:
        assert g["decoupled_weight_decay"] == 1e-4 and g["weight_decay"] == 0.0 and g["momentum"] == 0.9


def test_method_logs_the_schedule_it_really_ran():
    info = DataInfo(channels=1, image_size=8, num_known=2)
    derived = Difair(DifairConfig(epochs=5), info).derived()
    assert derived["lr_restarts_used"] == 1 and derived["lr_period"] == 2 and derived["warmup_epochs_used"] == 0
    assert derived["radius"] == pytest.approx(0.6 * 10 * math.sqrt(10))
    assert Difair(DifairConfig(), info).derived()["warmup_epochs_used"] == 10


@pytest.mark.parametrize("method", sorted(method_names()))
def test_every_method_derives_what_final_metrics_json_records(method):
    """``derived`` is written for every trial: it must work for every registered method's defaults
    (CROSR's StepLR recipe has no warm-up or restarts to derive)."""
    from data import load_pool
    from trainables.device_data import DataBundle
    from trainables.tasks import task_splits, trial_runs

    pool = load_pool("digits", "unused")
    bundle = DataBundle.from_pool(pool, task_splits(pool, method, [0]))
    runs = trial_runs({"method": method, "dataset": "digits", "splits": [0], "seeds": [0]}, bundle,
                      torch.device("cpu"))
    derived = runs.derived()
    assert isinstance(derived, dict)
    assert json.loads(json.dumps(derived)) == derived
