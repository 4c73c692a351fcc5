"""Spec tests for DIFAIR (shared/specs/difair.md §3 anchors, §5 loss, §6 penalty, §7 scores, §10, §15).

Every expected value is worked out by hand: written as a literal, or recomputed with plain Python /
numpy loops that share no code with methods/difair.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from methods.base import DataInfo
from methods.difair import (
    Difair,
    DifairConfig,
    DifairNet,
    decorrelation_penalty,
    hypersphere_loss,
    hypersphere_radius,
    make_anchors,
)

# --------------------------------------------------------------------------------------------------
# helpers (independent of the code under test)


def pearson(u: list[float], v: list[float]) -> float:
    """Pearson correlation with population mean/std; a zero-variance vector correlates 0 (spec §6)."""
    n = len(u)
    mu, mv = sum(u) / n, sum(v) / n
    su = math.sqrt(sum((a - mu) ** 2 for a in u) / n)
    sv = math.sqrt(sum((b - mv) ** 2 for b in v) / n)
    su = su if su != 0 else 1.0
    sv = sv if sv != 0 else 1.0
    return sum((a - mu) * (b - mv) for a, b in zip(u, v, strict=True)) / (n * su * sv)


def penalty_by_hand(filters: list[list[float]], k: int, f: int) -> float:
    """Σ_k (1/F²)·Σ_{i<j in block k} |ρ_ij| with an explicit double loop over filter pairs."""
    total = 0.0
    for c in range(k):
        block = 0.0
        for i in range(f):
            for j in range(i + 1, f):
                block += abs(pearson(filters[c * f + i], filters[c * f + j]))
        total += block / f**2
    return total


def kernel(filters: list[list[float]]) -> torch.Tensor:
    """D filters of 4 entries each, as a D × 1 × 2 × 2 conv kernel."""
    return torch.tensor(filters, dtype=torch.float64).reshape(len(filters), 1, 2, 2)


class FixedZ(nn.Module):
    """Stands in for DifairNet: returns a fixed z whatever the input; optionally carries a head."""

    def __init__(self, z: torch.Tensor, head_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("z", z.float())
        if head_weight is not None:
            self.head = nn.Conv2d(head_weight.shape[1], head_weight.shape[0], 2, bias=False)
            with torch.no_grad():
                self.head.weight.copy_(head_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z


def difair_with_z(z: torch.Tensor, num_known: int, head_weight: torch.Tensor | None = None, **cfg) -> Difair:
    method = Difair(DifairConfig(**cfg), DataInfo(channels=1, image_size=8, num_known=num_known))
    method.model = FixedZ(z, head_weight)
    return method


def dummy_x(n: int) -> torch.Tensor:
    return torch.zeros(n, 1, 8, 8)


# Filters with hand-computed correlations (population statistics, 4 entries each):
# A = [1,2,3,4]: centred [-1.5,-0.5,0.5,1.5], Σc² = 5
# B = [1,3,2,5]: centred [-1.75,0.25,-0.75,2.25], Σc² = 8.75; Σ cA·cB = 5.5 → ρ_AB = 5.5/√43.75 = 0.831522
# C = [1,0,2,0], Dd = [0,2,0,1]: centred [.25,-.75,1.25,-.75] / [-.75,1.25,-.75,.25], Σc² = 2.75 each,
#     Σ cC·cD = -2.25 → ρ_CD = -2.25/2.75 = -0.818182
# E = [4,3,2,1] = reversed A: ρ_AE = -1, ρ_BE = -0.831522
A = [1.0, 2.0, 3.0, 4.0]
B = [1.0, 3.0, 2.0, 5.0]
C = [1.0, 0.0, 2.0, 0.0]
Dd = [0.0, 2.0, 0.0, 1.0]
E = [4.0, 3.0, 2.0, 1.0]
RHO_AB = 0.8315218406202999
RHO_CD = -0.8181818181818182


# --------------------------------------------------------------------------------------------------
# §3 anchors and radius


def test_anchor_matrix_k3_f2_m10_literal():
    a = make_anchors(3, 2, 10.0)
    expected = [
        [10.0, 10.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 10.0, 10.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 10.0, 10.0],
    ]
    assert a.tolist() == expected


@pytest.mark.parametrize("k,f", [(6, 5), (4, 5), (20, 5), (3, 1), (2, 7)])
def test_anchor_shape_is_k_by_kf(k, f):
    assert tuple(make_anchors(k, f, 10.0).shape) == (k, k * f)


def test_anchor_geometry_defaults():
    a = make_anchors(6, 5, 10.0).tolist()
    for i in range(6):
        assert math.sqrt(sum(v * v for v in a[i])) == pytest.approx(22.3607, abs=1e-4)  # m√F
        for j in range(i + 1, 6):
            dist = math.sqrt(sum((x - y) ** 2 for x, y in zip(a[i], a[j], strict=True)))
            assert dist == pytest.approx(31.6228, abs=1e-4)  # m√(2F)


def test_radius_defaults_and_formula():
    assert DifairConfig().radius == pytest.approx(18.974, abs=5e-4)
    assert DifairConfig().radius == pytest.approx(18.973666, rel=1e-7)
    # ρ·m·√(2F): 0.5·1·√4 = 1, 0.4·2·√40 = 5.0596 (the reference's CIFAR10 loss-config grid, §12)
    assert hypersphere_radius(0.5, 1.0, 2) == pytest.approx(1.0)
    assert DifairConfig(features_per_class=20, anchor_multiplier=2.0, radius_ratio=0.4).radius == pytest.approx(
        5.0596, abs=1e-4
    )


def test_method_holds_anchor_buffer_and_radius():
    method = Difair(
        DifairConfig(features_per_class=2, anchor_multiplier=10.0),
        DataInfo(channels=1, image_size=8, num_known=3),
    )
    assert method.anchors.tolist() == make_anchors(3, 2, 10.0).tolist()
    assert method.radius == pytest.approx(12.0)  # 0.6·10·√4


# --------------------------------------------------------------------------------------------------
# §5 loss.  K=2, F=2, m=1: a0=[1,1,0,0], a1=[0,0,1,1]; R=1, c=0.1
#   sample 0: z=[1.3,1.4,0,0], y=0 → d=√(.09+.16)=0.5 inside  → ℓ = 0.1·0.5 + 0     = 0.05
#   sample 1: z=[0,0,3,1],     y=1 → d=2                 outside → ℓ = 0.1·2 + (2−1) = 1.2
#   mean = 0.625 (sum would be 1.25, sum/128 would be 0.009766)

ANCH = make_anchors(2, 2, 1.0)
Z2 = torch.tensor([[1.3, 1.4, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
Y2 = torch.tensor([0, 1])


def test_loss_per_sample_hand_values():
    assert hypersphere_loss(Z2[:1], Y2[:1], ANCH, 1.0, 0.1).item() == pytest.approx(0.05, rel=1e-5)
    assert hypersphere_loss(Z2[1:], Y2[1:], ANCH, 1.0, 0.1).item() == pytest.approx(1.2, rel=1e-5)


def test_loss_is_mean_over_batch():
    assert hypersphere_loss(Z2, Y2, ANCH, 1.0, 0.1).item() == pytest.approx(0.625, rel=1e-5)


def test_hard_loss_is_smooth_with_c0():
    # hard: max(0, d−R) → 0 and 1 → mean 0.5
    assert hypersphere_loss(Z2, Y2, ANCH, 1.0, 0.0).item() == pytest.approx(0.5, rel=1e-5)
    assert hypersphere_loss(Z2[:1], Y2[:1], ANCH, 1.0, 0.0).item() == 0.0


def test_loss_ignores_other_anchors():
    # Same d_y, but moved toward the other anchor. Sample 0: a0 + [0,0,.3,.4] (d0 = 0.5, d1 drops from
    # √5.65 = 2.377 to √2.85 = 1.688). Sample 1: a1 + √2·[1,1,0,0] (d1 = 2, d0 = √(2(√2−1)²+2) = 1.531 < 2,
    # i.e. now nearer the wrong anchor). The loss must not change.
    s2 = math.sqrt(2.0)
    moved = torch.tensor([[1.0, 1.0, 0.3, 0.4], [s2, s2, 1.0, 1.0]])
    assert torch.cdist(moved, ANCH)[1, 0].item() == pytest.approx(1.5307, abs=1e-3)
    assert hypersphere_loss(moved, Y2, ANCH, 1.0, 0.1).item() == pytest.approx(0.625, rel=1e-5)
    # and the gradient w.r.t. z points straight at the own anchor: (c + 1[d>R])·(z − a_y)/d / B
    z = moved.clone().requires_grad_()
    hypersphere_loss(z, Y2, ANCH, 1.0, 0.1).backward()
    expected = [
        [0.0, 0.0, 0.1 * 0.3 / 0.5 / 2, 0.1 * 0.4 / 0.5 / 2],
        [1.1 * (s2 - 0.0) / 2 / 2, 1.1 * s2 / 2 / 2, 0.0, 0.0],
    ]
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_method_loss_adds_weighted_penalty_once():
    # Difair.loss = mean hinge loss (0.625, above) + λ·penalty(head kernel). Head filters A,B | C,Dd:
    # penalty = (|ρ_AB| + |ρ_CD|)/F² = (0.831522 + 0.818182)/4 = 0.412426; λ = 2 → 0.625 + 0.824852
    head = kernel([A, B, C, Dd]).float()
    cfg = dict(features_per_class=2, anchor_multiplier=1.0, radius_ratio=0.5, smooth_coef=0.1)
    method = difair_with_z(Z2, 2, head, corr_penalty_weight=2.0, **cfg)
    assert method.radius == pytest.approx(1.0)
    assert method.loss(dummy_x(2), Y2).item() == pytest.approx(0.625 + 2 * 0.4124259, rel=1e-5)
    off = difair_with_z(Z2, 2, head, corr_penalty_weight=0.0, **cfg)
    assert off.loss(dummy_x(2), Y2).item() == pytest.approx(0.625, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# §6 decorrelation penalty


def test_penalty_hand_value_k2_f2():
    filters = [A, B, C, Dd]
    assert pearson(A, B) == pytest.approx(RHO_AB, rel=1e-12)
    assert pearson(C, Dd) == pytest.approx(RHO_CD, rel=1e-12)
    expected = (abs(RHO_AB) + abs(RHO_CD)) / 4  # 0.4124259, /F² not /#pairs, |ρ| not ρ
    assert expected == pytest.approx(0.4124259, rel=1e-6)
    assert penalty_by_hand(filters, 2, 2) == pytest.approx(expected, rel=1e-12)
    assert decorrelation_penalty(kernel(filters), 2, 2).item() == pytest.approx(expected, rel=1e-6)


def test_penalty_hand_value_k1_f3_divides_by_f_squared():
    # ρ_AB = 0.831522, ρ_AE = −1, ρ_BE = −0.831522 → (0.831522 + 1 + 0.831522)/9 = 0.295894
    expected = (2 * RHO_AB + 1.0) / 9
    assert expected == pytest.approx(0.2958937, rel=1e-6)
    assert penalty_by_hand([A, B, E], 1, 3) == pytest.approx(expected, rel=1e-12)
    assert decorrelation_penalty(kernel([A, B, E]), 1, 3).item() == pytest.approx(expected, rel=1e-6)


def test_penalty_zero_for_f1():
    w = torch.randn(4, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    assert decorrelation_penalty(w, 4, 1).item() == 0.0


def test_penalty_zero_for_uncorrelated_filters():
    # centred [1,-1,1,-1] and [1,1,-1,-1] (plus offsets 2 and 1) are orthogonal → ρ = 0
    w = kernel([[3.0, 1.0, 3.0, 1.0], [2.0, 2.0, 0.0, 0.0]])
    assert pearson([3.0, 1.0, 3.0, 1.0], [2.0, 2.0, 0.0, 0.0]) == 0.0
    assert decorrelation_penalty(w, 1, 2).item() == pytest.approx(0.0, abs=1e-7)


def test_penalty_ignores_across_class_correlation():
    # class 0 = (X, A), class 1 = (A, X) with X = [1,-1,-1,1] ⟂ centred A: within-class ρ = 0, but
    # filters 1,2 and 0,3 are identical across classes (ρ = 1). Full-matrix upper triangle would give 2/4.
    x = [1.0, -1.0, -1.0, 1.0]
    assert pearson(x, A) == 0.0
    assert decorrelation_penalty(kernel([x, A, A, x]), 2, 2).item() == pytest.approx(0.0, abs=1e-7)


def test_penalty_zero_variance_filter_is_finite_and_contributes_zero():
    const = [2.0, 2.0, 2.0, 2.0]
    assert decorrelation_penalty(kernel([const, B]), 1, 2).item() == 0.0
    # one zero-variance filter among three: only |ρ_BC| counts. ρ_BC: centred B·centred C
    # = -0.4375 - 0.1875 - 0.9375 - 1.6875 = -3.25, √(8.75·2.75) = 4.905354 → -0.662541; /9 = 0.073616
    assert pearson(B, C) == pytest.approx(-0.6625413, rel=1e-6)
    value = decorrelation_penalty(kernel([const, B, C]), 1, 3)
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(0.6625413 / 9, rel=1e-6)


def test_penalty_is_differentiable():
    # d|ρ_AB|/dB for one pair: ρ = ⟨a,b⟩/(‖a‖‖b‖) with centred a, b; ∂ρ/∂b = (â − ρ·b̂)/‖b‖ (centred),
    # then ·1/F² = 1/4. Check the gradient on B's entries against that formula.
    w = kernel([A, B]).requires_grad_()
    decorrelation_penalty(w, 1, 2).backward()
    assert torch.isfinite(w.grad).all()
    ca = [v - 2.5 for v in A]
    cb = [v - 2.75 for v in B]
    na, nb = math.sqrt(sum(v * v for v in ca)), math.sqrt(sum(v * v for v in cb))
    grad_b = [((ca[i] / na) - RHO_AB * cb[i] / nb) / nb / 4 for i in range(4)]
    np.testing.assert_allclose(w.grad[1].flatten().numpy(), grad_b, rtol=1e-6, atol=1e-9)


def test_penalty_gradient_finite_with_zero_variance_filter():
    # sqrt'(0) = ∞: std must be replaced by 1 before the square root, else backward gives NaN here.
    w = kernel([[2.0, 2.0, 2.0, 2.0], B, C]).requires_grad_()
    decorrelation_penalty(w, 1, 3).backward()
    assert torch.isfinite(w.grad).all()


def test_penalty_on_real_head_shape_matches_pairwise_loop():
    # D × 128 × 3 × 3 kernel (K=3, F=4): blocks are consecutive filters; compare with a numpy double loop.
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(12, 128, 3, 3, generator=gen, dtype=torch.float64)
    base[1] += 0.8 * base[0]  # make some within-class pairs strongly correlated
    base[6] -= 0.5 * base[5]
    base[4] += 2.0 * base[3]  # across-class (filter 3 is class 0, filter 4 is class 1): not penalised
    flat = base.reshape(12, -1).numpy()
    total = 0.0
    for c in range(3):
        for i in range(4):
            for j in range(i + 1, 4):
                u, v = flat[c * 4 + i], flat[c * 4 + j]
                cu, cv = u - u.mean(), v - v.mean()
                rho = (cu * cv).mean() / (np.sqrt((cu**2).mean()) * np.sqrt((cv**2).mean()))
                total += abs(rho) / 16
    assert decorrelation_penalty(base, 3, 4).item() == pytest.approx(total, rel=1e-9)
    assert total > 0.06  # the strong pairs (|ρ| ≈ 0.62 and 0.45, /16) are really in there


# --------------------------------------------------------------------------------------------------
# §7 outputs and scores.  K=3, F=2, m=10: a0=[10,10,0,0,0,0], a1=[0,0,10,10,0,0], a2=[0,0,0,0,10,10]
#   z_at   = a0                → d = (0, 20, 20)               pred 0, s = 0,       −max z = −10
#   z_orig = 0                 → d = √200 = 14.1421 each       s = 14.1421,        −max z = 0
#   z_mid  = [1,2,8,6,3,0]     → d0 = √(81+64+64+36+9) = √254 = 15.9374,
#                                d1 = √(1+4+4+16+9) = √34 = 5.83095,
#                                d2 = √(1+4+64+36+49+100) = √254      pred 1, s = 5.83095, −max z = −8
#   z_far  = [50,0,0,50,0,50]  → d = √6700 = 81.8535 each      s = 81.8535,        −max z = −50

ZS = torch.tensor(
    [
        [10.0, 10.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 2.0, 8.0, 6.0, 3.0, 0.0],
        [50.0, 0.0, 0.0, 50.0, 0.0, 50.0],
    ]
)


def evaluate_fixed(z: torch.Tensor, k: int, **cfg) -> tuple[Difair, dict[str, np.ndarray]]:
    method = difair_with_z(z, k, **cfg)
    return method, method.evaluate([dummy_x(len(z))])


def test_outputs_hand_distances_scores_and_prediction():
    _, out = evaluate_fixed(ZS, 3, features_per_class=2, anchor_multiplier=10.0)
    r200, r254, r34, r6700 = math.sqrt(200), math.sqrt(254), math.sqrt(34), math.sqrt(6700)
    expected_d = [[0, 20, 20], [r200, r200, r200], [r254, r34, r254], [r6700, r6700, r6700]]
    np.testing.assert_allclose(out["distances"], expected_d, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["score_min_distance"], [0.0, 14.1421, 5.83095, 81.8535], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["score"], out["score_min_distance"])  # primary score = min distance
    np.testing.assert_allclose(out["score_max_activation"], [-10.0, 0.0, -8.0, -50.0])
    assert out["pred"][0] == 0 and out["pred"][2] == 1


def test_score_direction_higher_is_more_unknown():
    _, out = evaluate_fixed(ZS, 3, features_per_class=2, anchor_multiplier=10.0)
    s = out["score"]
    assert s[3] > s[1] > s[0]  # far from every anchor > origin > exactly on an anchor
    assert s[2] < s[1]  # mostly-class-1 activation is "more known" than nothing at all
    # secondary: nothing activated (origin) is more unknown than a strongly activated anchor
    assert out["score_max_activation"][1] > out["score_max_activation"][0]


def test_argmin_distance_equals_argmax_block_sum_and_identity():
    # d_k² = ‖z‖² − 2m·S_k + m²F  (spec §7), checked with a plain loop on random non-negative z
    k, f, m = 5, 3, 4.0
    gen = torch.Generator().manual_seed(3)
    z = torch.rand(64, k * f, generator=gen) * 8
    _, out = evaluate_fixed(z, k, features_per_class=f, anchor_multiplier=m)
    for row, pred, score in zip(z.tolist(), out["pred"], out["score_min_distance"], strict=True):
        sums = [sum(row[c * f : (c + 1) * f]) for c in range(k)]
        best = max(range(k), key=lambda c: sums[c])
        assert pred == best
        s2 = sum(v * v for v in row) - 2 * m * sums[best] + m * m * f
        assert score == pytest.approx(math.sqrt(s2), rel=1e-4)


def test_hypersphere_pct_hand_case():
    # R = 0.6·10·√4 = 12. Labels: z_at→0 (d=0, in), z_orig→1 (14.14, out), z_mid→1 (5.83, in),
    # z_mid→0 (15.94, out), a0+[0,0,12,0,0,0]→0 (d = 12 exactly, in: d_y ≤ R) → 3/5
    z = torch.cat([ZS[:3], ZS[2:3], torch.tensor([[10.0, 10.0, 12.0, 0.0, 0.0, 0.0]])])
    method, out = evaluate_fixed(z, 3, features_per_class=2, anchor_multiplier=10.0)
    labels = np.array([0, 1, 1, 0, 0])
    assert method.diagnostics(out, labels) == {"hypersphere_pct": pytest.approx(0.6)}
    # all labelled with an anchor they are far from (20, 14.14, 15.94, 15.94, √544 = 23.3) → 0
    assert method.diagnostics(out, np.array([2, 0, 0, 2, 2]))["hypersphere_pct"] == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------------
# §4 network shape, §10 defaults, config handling


def test_difair_net_output_nonnegative_kf_and_bias_free_head():
    torch.manual_seed(0)
    info = DataInfo(channels=1, image_size=8, num_known=3)
    method = Difair(DifairConfig(features_per_class=4), info)
    net = method.model
    assert isinstance(net, DifairNet)
    assert net.head.bias is None
    assert tuple(net.head.weight.shape) == (12, 128, 3, 3)
    assert net.head.padding == (1, 1)
    net.eval()
    z = net(torch.randn(5, 1, 8, 8))
    assert tuple(z.shape) == (5, 12)
    assert (z >= 0).all()
    assert not any(isinstance(mod, nn.Linear) for mod in net.modules())  # no FC layer


def test_defaults_match_spec_section_10():
    c = DifairConfig()
    assert (c.features_per_class, c.anchor_multiplier, c.radius_ratio) == (5, 10.0, 0.6)
    assert (c.smooth_coef, c.corr_penalty_weight) == (0.1, 1.0)
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs) == (0.3, 0.9, 1e-4, 128, 600)
    assert (c.warmup_epochs, c.restarts, c.lr_schedule) == (10, 2, "cosine_restarts")
    assert c.aug_mode == "torchvision"
    assert Difair.primary_score == "min_distance"


def test_from_dict_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ValueError) as err:
        DifairConfig.from_dict({"radius": 3.0, "features_per_class": 5})
    msg = str(err.value)
    assert "radius" in msg
    for key in ("anchor_multiplier", "corr_penalty_weight", "features_per_class", "radius_ratio",
                "smooth_coef", "lr", "epochs"):
        assert key in msg


def test_from_dict_coerces_numbers():
    c = DifairConfig.from_dict(
        {"anchor_multiplier": 5, "radius_ratio": 1, "smooth_coef": 0, "lr": 1, "features_per_class": 2.0}
    )
    for name in ("anchor_multiplier", "radius_ratio", "smooth_coef", "lr"):
        assert type(getattr(c, name)) is float
    assert type(c.features_per_class) is int and c.features_per_class == 2
    assert c.radius == pytest.approx(1 * 5 * 2.0)  # 1·5·√4
    c2 = DifairConfig.from_dict({"anchor_multiplier": np.float64(2.5), "features_per_class": np.int64(3)})
    assert type(c2.anchor_multiplier) is float and type(c2.features_per_class) is int


@pytest.mark.parametrize(
    "values",
    [
        {"features_per_class": 2.5},
        {"anchor_multiplier": "10"},
        {"anchor_multiplier": True},
        {"features_per_class": 0},
        {"anchor_multiplier": 0.0},
        {"radius_ratio": -0.1},
        {"smooth_coef": -0.01},
        {"corr_penalty_weight": -1.0},
        {"lr_schedule": "cosine"},
    ],
)
def test_from_dict_rejects_bad_values(values):
    with pytest.raises(ValueError):
        DifairConfig.from_dict(values)


def test_train_epoch_uses_configured_schedule_and_returns_loss():
    # One optimiser step through SupervisedMethod.train_epoch with a fixed-z stub whose only parameter is
    # the head kernel (filters A,B,C,Dd). At epoch 0 lr = η_min = 1e-3·0.3 = 3e-4 (spec §8.2).
    head = kernel([A, B, C, Dd]).float()
    method = difair_with_z(
        Z2, 2, head, features_per_class=2, anchor_multiplier=1.0, radius_ratio=0.5, corr_penalty_weight=1.0
    )
    method.optimizer = type(method.optimizer)(method.model.parameters(), lr=0.3)
    logs = method.train_epoch([(dummy_x(2), Y2)], epoch=0)
    assert logs["lr"] == pytest.approx(3e-4, rel=1e-9)
    assert logs["train_loss"] == pytest.approx(0.625 + 0.4124259, rel=1e-5)
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
