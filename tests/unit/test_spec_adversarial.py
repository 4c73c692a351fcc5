"""Adversarial network separation (adversarial.md): the architecture, targets, losses, scores and
update schemes that define it, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from methods import DataInfo, get_method
from methods.adversarial import (
    AdversarialConfig,
    SiameseDiscriminator,
    ThreeBlockNet,
    adversarial_term,
    classifier_objective,
    discriminator_loss,
    diversity_metrics,
    ensemble_outputs,
    independent_step,
    joint_objective,
    same_class_targets,
)
from methods.base import output_views

LN2, LN3 = math.log(2), math.log(3)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- §3 classifier --------------------------------------------------------------------------------

def test_three_block_net_shapes_and_no_dead_parameters() -> None:
    net = ThreeBlockNet(3, 6, 32, width=32)
    logits, h = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 6) and h.shape == (2, 256, 4, 4)  # the reference's 256×4×4 map
    w, c, k = 32, 3, 6
    convs = [(c, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)]
    expected = sum((a * 9 + 1) * b for a, b in convs)  # 3×3 convs with bias
    expected += 2 * (w + 4 * w + 8 * w)  # the three BatchNorms
    expected += (4096 + 1) * 1024 + (1024 + 1) * 512 + (512 + 1) * k  # 4096 → 1024 → 512 → K
    assert sum(p.numel() for p in net.parameters()) == expected
    # TinyImageNet's 64 px: block 3 gives 8×8, pooled to the 4×4 D expects.
    assert ThreeBlockNet(3, 20, 64, width=8)(torch.randn(2, 3, 64, 64))[1].shape == (2, 64, 4, 4)
    with pytest.raises(ValueError, match="divisible by 8"):
        ThreeBlockNet(1, 6, 28)


# --- §4 discriminator -----------------------------------------------------------------------------

def test_discriminator_shapes_init_and_symmetric_merge() -> None:
    torch.manual_seed(0)
    d = SiameseDiscriminator(256, 64)
    h = torch.randn(2, 256, 4, 4)
    assert d.branch(h).shape == (2, 256, 5, 5)  # 4c × 5 × 5 after the k2/p1 conv
    assert d(h, h.flip(0)).shape == (2,)  # one logit per pair
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.kernel_size for m in convs] == [(2, 2), (3, 3), (3, 3), (4, 4), (2, 2)]
    big = torch.cat([m.weight.detach().flatten() for m in convs[:-1]])
    assert abs(float(big.mean())) < 1e-3 and float(big.std()) == pytest.approx(0.02, rel=0.02)
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    gammas = torch.cat([m.weight for m in bns]).detach()
    assert float(gammas.mean()) == pytest.approx(1.0, abs=0.01) and float(gammas.std()) == pytest.approx(0.02, rel=0.2)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in bns)
    d.eval()  # batch statistics aside, D compares |b(h1) − b(h2)|: symmetric, and blind to h when h1 = h2
    a, b = torch.randn(3, 256, 4, 4), torch.randn(3, 256, 4, 4)
    assert torch.allclose(d(a, b), d(b, a))
    assert torch.allclose(d(a, a), d(b, b))


# --- §5 targets and losses ------------------------------------------------------------------------

def test_same_class_targets_use_equality_not_xor() -> None:
    y1, y2 = torch.tensor([0, 1, 2, 2, 3]), torch.tensor([0, 2, 2, 1, 3])
    assert same_class_targets(y1, y2).tolist() == [1, 0, 1, 0, 1]  # XOR would call (1, 2) and (2, 1) "same"


def test_discriminator_loss_balanced_and_plain_by_hand() -> None:
    logits = torch.tensor([0.0, LN3, -LN3, 2.0])
    same = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # BCE per pair: −log σ(0) = ln 2; −log(1 − σ(ln 3)) = ln 4; −log(1 − σ(−ln 3)) = ln(4/3); ln(1 + e²)
    pos, neg = [LN2], [math.log(4), math.log(4 / 3), math.log(1 + math.e**2)]
    assert float(discriminator_loss(logits, same, "balanced")) == pytest.approx(0.5 * pos[0] + 0.5 * sum(neg) / 3)
    assert float(discriminator_loss(logits, same, "none")) == pytest.approx((pos[0] + sum(neg)) / 4)
    # a batch with one kind of pair only falls back to the plain mean
    only_neg = torch.zeros(4)
    plain = F.binary_cross_entropy_with_logits(logits, only_neg)
    assert float(discriminator_loss(logits, only_neg, "balanced")) == pytest.approx(float(plain))


def test_adversarial_terms_by_hand() -> None:
    logits = torch.tensor([0.0, LN3])
    same = torch.tensor([1.0, 0.0])
    # "different": BCE towards 0 everywhere: −log(1 − σ(l)) = ln 2, ln 4
    assert float(adversarial_term(logits, same, "different")) == pytest.approx((LN2 + math.log(4)) / 2)
    # "flipped": BCE towards 1 − y: pair 0 towards 0 (ln 2), pair 1 towards 1 (−log ¾)
    assert float(adversarial_term(logits, same, "flipped")) == pytest.approx((LN2 + math.log(4 / 3)) / 2)


def test_objectives_count_the_adversarial_term_once_or_twice() -> None:
    ce1, ce2, adv, d = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(0.5)
    assert float(classifier_objective(ce1, ce2, adv, 0.8)) == pytest.approx(0.8 * 3 + 0.2 * 3)
    assert float(joint_objective(d, ce1, ce2, adv, 0.8)) == pytest.approx(0.5 + 0.8 * 3 + 2 * 0.2 * 3)


@pytest.mark.parametrize("w", [0.6, 0.8])
def test_joint_objective_optimum_for_a_same_class_pair(w: float) -> None:
    """§6.2: in the joint step, D's output on a same-class pair settles at p* = 1/(1 + 2(1 − w))."""
    p_star = 1 / (1 + 2 * (1 - w))
    logit = torch.tensor([math.log(p_star / (1 - p_star))], requires_grad=True)
    same = torch.ones(1)
    loss = joint_objective(discriminator_loss(logit, same, "none"), torch.tensor(0.0), torch.tensor(0.0),
                           adversarial_term(logit, same, "different"), w)
    (grad,) = torch.autograd.grad(loss, logit)
    assert abs(float(grad)) < 1e-6
    assert p_star == pytest.approx({0.6: 0.556, 0.8: 0.714}[w], abs=1e-3)


# --- §8 scores and metrics ------------------------------------------------------------------------

def test_ensemble_outputs_by_hand() -> None:
    l1 = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    l2 = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    out = ensemble_outputs(l1, l2)
    assert out["pred_c1"].tolist() == [0, 0] and out["pred_c2"][0] == 1
    assert out["pred"][0] == 1  # the averaged logits (1, 1.5, 0) pick class 1
    mean = np.array([1.0, 1.5, 0.0])
    assert out["score_msp"][0] == pytest.approx(-np.exp(1.5) / np.exp(mean).sum())
    assert out["score_msp"][1] == pytest.approx(-1 / 3)
    assert out["score_msp_c1"][0] == pytest.approx(-np.exp(2) / (np.exp(2) + 2))
    # identical members have no disagreement; the first row's JSD by the formula
    assert out["score_jsd"][1] == pytest.approx(0.0, abs=1e-7)
    p1, p2 = np.exp(l1[0]) / np.exp(l1[0]).sum(), np.exp(l2[0]) / np.exp(l2[0]).sum()

    def entropy(p: np.ndarray) -> float:
        return float(-(p * np.log(p)).sum())

    assert out["score_jsd"][0] == pytest.approx(entropy((p1 + p2) / 2) - (entropy(p1) + entropy(p2)) / 2, rel=1e-5)


def test_diversity_metrics_on_hand_made_predictions() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    pred_c1 = np.array([0, 1, 2, 0, 1, 0, 2, 2])  # right on 0-4
    pred_c2 = np.array([0, 1, 0, 0, 2, 2, 1, 1])  # right on 0, 1, 3, 5, 7
    pred = np.array([0, 1, 2, 0, 1, 2, 2, 1])  # ensemble: right except on 6
    m = diversity_metrics({"pred": pred, "pred_c1": pred_c1, "pred_c2": pred_c2}, labels)
    assert m["acc_c1"] == 5 / 8 and m["acc_c2"] == 5 / 8
    assert m["ensemble_gain"] == pytest.approx(7 / 8 - 5 / 8)
    # both right on 0, 1, 3; one right on 2, 4, 5, 7; none on 6
    assert (m["tpa_0of2"], m["tpa_1of2"], m["tpa_2of2"]) == (1 / 8, 4 / 8, 3 / 8)
    assert m["tpa_indep_1of2"] == pytest.approx(2 * 5 / 8 * 3 / 8)  # 2p(1 − p)
    assert m["disagreement"] == 5 / 8  # differ on 2, 4, 5, 6, 7
    # errors: c1 on 5, 6, 7; c2 on 2, 4, 6 — both on 6 only: n11 = 1, n00 = 3, n10 = n01 = 2
    assert m["yule_q"] == pytest.approx((1 * 3 - 2 * 2) / (1 * 3 + 2 * 2))
    e1, e2 = (pred_c1 != labels).astype(float), (pred_c2 != labels).astype(float)
    assert m["phi"] == pytest.approx(np.corrcoef(e1, e2)[0, 1])


def test_output_views_split_companions() -> None:
    views = output_views({"pred": 1, "score": 2, "base/pred": 3, "base/score": 4})
    assert views == {"": {"pred": 1, "score": 2}, "base": {"pred": 3, "score": 4}}
    with pytest.raises(ValueError, match="no score"):
        output_views({"pred": 1, "score": 2, "base/pred": 3})


# --- §6 update schemes ----------------------------------------------------------------------------

def _method(**overrides):
    cls = get_method("adversarial")
    config = cls.Config.from_dict({"classifier": "three_block_small", "d_width": 8, "lr_cls": 0.05, **overrides})
    torch.manual_seed(0)
    return cls(config, DataInfo(channels=1, image_size=32, num_known=3))


def _batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_alternating_steps_never_move_the_other_side(monkeypatch) -> None:
    """§6.1: D's step leaves both classifiers as they were, the classifiers' step leaves D as it was,
    and the classifiers step against the D that has just been updated."""
    m = _method(d_steps=2)
    seen: list[str] = []

    def watch(optimizer, name, moves, stays):
        original = optimizer.step

        def step(*args, **kwargs):
            before_moves, before_stays = _params(moves), _params(stays)
            out = original(*args, **kwargs)
            assert not _same(before_moves, _params(moves)), f"{name} did not move its own network"
            assert _same(before_stays, _params(stays)), f"{name} moved the other side"
            seen.append(name)
            return out

        monkeypatch.setattr(optimizer, "step", step)

    watch(m.d_optimizer, "d", m.discriminator, m.pair)
    watch(m.optimizer, "classifiers", m.pair, m.discriminator)
    d_weights_at_call: list[torch.Tensor] = []
    h_carries_grad: list[bool] = []

    def record(module, args):
        d_weights_at_call.append(module.branch[0].weight.detach().clone())
        h_carries_grad.append(args[0].requires_grad)

    m.discriminator.register_forward_pre_hook(record)
    m.train_epoch([_batch(16, 0), _batch(16, 1)], 0)
    assert seen == ["d", "d", "classifiers"] * 2  # d_steps D updates, then one classifier update
    # per batch: D runs for each of its steps on detached maps, then once more on the live maps for the
    # classifiers, with the weights its last step left
    assert h_carries_grad == [False, False, True] * 2
    assert not torch.equal(d_weights_at_call[1], d_weights_at_call[2])


def test_joint_step_moves_all_three_from_one_backward(monkeypatch) -> None:
    m = _method(mode="joint", in_run_baseline=False)
    before = {name: _params(net) for name, net in (("c1", m.pair.c1), ("c2", m.pair.c2), ("d", m.discriminator))}
    x, y = _batch()
    backward_calls = []
    original_backward = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward",
                        lambda self, *a, **k: (backward_calls.append(1), original_backward(self, *a, **k))[1])
    logs = m.step(x[:8], y[:8], x[8:], y[8:])
    assert len(backward_calls) == 1
    for name, net in (("c1", m.pair.c1), ("c2", m.pair.c2), ("d", m.discriminator)):
        assert not _same(before[name], _params(net)), f"joint step did not move {name}"
    # the logged loss is J, whose D part is the unweighted mean (the reference's)
    assert float(logs["train_loss"]) == pytest.approx(float(
        logs["d_loss"] + 0.8 * (logs["ce_c1"] + logs["ce_c2"]) + 2 * 0.2 * logs["adv_loss"]))


def test_mode_none_never_touches_the_discriminator() -> None:
    m = _method(mode="none")
    assert m.baseline is None  # the baseline would be the method itself
    d_before = _params(m.discriminator)
    logs = m.train_epoch([_batch()], 0)
    assert _same(d_before, _params(m.discriminator))
    assert "d_loss" not in logs and "base_train_loss" not in logs


def test_baseline_is_the_same_pair_with_adversarial_weight_zero() -> None:
    """The in-run baseline starts from the pair's weights; with w = 1 the adversarial step updates the
    pair exactly as the baseline's plain cross-entropy step updates the baseline."""
    m = _method(ce_weight=1.0)
    assert _same(_params(m.pair), _params(m.baseline))
    x, y = _batch()
    for module in (m.pair, m.baseline, m.discriminator):
        module.train()
    torch.manual_seed(5)  # the same dropout masks for both
    m.alternating_step(x[:8], y[:8], x[8:], y[8:])
    torch.manual_seed(5)
    independent_step(m.baseline, m.baseline_optimizer, x[:8], y[:8], x[8:], y[8:])
    assert not _same(_params(m.pair), _params(_method().pair))  # both moved from the shared start...
    for a, b in zip(_params(m.pair), _params(m.baseline), strict=True):  # ...to the same place
        assert torch.allclose(a, b, atol=1e-6)
    # with w < 1 the adversary changes the update
    m2 = _method(ce_weight=0.5)
    torch.manual_seed(5)
    m2.alternating_step(x[:8], y[:8], x[8:], y[8:])
    torch.manual_seed(5)
    independent_step(m2.baseline, m2.baseline_optimizer, x[:8], y[:8], x[8:], y[8:])
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_params(m2.pair), _params(m2.baseline), strict=True))


@pytest.mark.parametrize("w", [0.3, 0.5, 0.8, 0.95])
def test_baseline_loss_is_the_pairs_loss_without_the_adversarial_term(monkeypatch, w: float) -> None:
    """The in-run baseline isolates the adversary: with A zeroed, one training epoch (one batch) moves the
    pair and the baseline from the same weights to the same place for any w — the baseline descends
    w·CE₁ + w·CE₂, not CE₁ + CE₂ (which would be a learning rate 1/w larger and a relatively weaker decay)."""
    import methods.adversarial as adversarial

    monkeypatch.setattr(adversarial, "adversarial_term", lambda logits, same, target="different": 0.0 * logits.sum())
    m = _method(ce_weight=w)
    for module in (*m.pair.modules(), *m.baseline.modules()):
        if isinstance(module, torch.nn.Dropout2d | torch.nn.Dropout):
            module.p = 0.0  # the two steps draw different masks from one RNG stream
    x, y = _batch()
    m.train_epoch([(x, y)], 0)
    moved = not _same(_params(m.pair), _params(_method(ce_weight=w).pair))
    assert moved
    for a, b in zip(_params(m.pair), _params(m.baseline), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_odd_batches_drop_the_leftover_and_state_round_trips() -> None:
    m = _method()
    m.train_epoch([_batch(9)], 0)  # 4 + 4, one image dropped
    clone = _method()
    clone.load_state_dict(m.state_dict())
    for a, b in ((m.pair, clone.pair), (m.discriminator, clone.discriminator), (m.baseline, clone.baseline)):
        assert _same(_params(a), _params(b))
    x, _ = _batch(4)
    out, out_clone = m.evaluate([x]), clone.evaluate([x])
    assert set(out) == set(out_clone) and all(np.array_equal(out[k], out_clone[k]) for k in out)
    assert {"pred", "score", "score_msp", "score_jsd", "pred_c1", "base/score", "base/pred_c2"} <= set(out)
    assert np.array_equal(out["score"], out["score_msp"])


@pytest.mark.parametrize("bad", [{"mode": "gan"}, {"ce_weight": 0.0}, {"ce_weight": 1.5}, {"batch_size": 1},
                                 {"adv_target": "same"}, {"pair_weighting": "focal"}, {"d_steps": 0},
                                 {"lr_schedule": "step"}, {"classifier": "resnet18"}, {"d_width": 0}])
def test_config_rejects_bad_values(bad) -> None:
    with pytest.raises(ValueError):
        AdversarialConfig.from_dict(bad)


def test_defaults_are_the_spec_table() -> None:
    c = AdversarialConfig()
    assert (c.mode, c.ce_weight, c.adv_target, c.d_steps, c.pair_weighting) == ("alternating", 0.8, "different", 1, "balanced")
    assert (c.lr_cls, c.momentum, c.weight_decay, c.lr_schedule, c.lr_d) == (1e-3, 0.9, 5e-4, "none", 3e-3)
    assert (c.batch_size, c.epochs) == (256, 300)
    m = get_method("adversarial")(AdversarialConfig(), DataInfo(channels=3, image_size=32, num_known=6))
    assert m.pair.c1.representation_channels == 256
    assert m.discriminator.branch[0].out_channels == 64  # the reference's D width for a 256-channel map
    assert m.d_optimizer.defaults["betas"] == (0.5, 0.999)
