"""Ensemble-diversity metrics of adversarial.md §8 on hand-made predictions: TP-agreement and its
independent-errors reference, disagreement, error correlation (phi, Yule's Q) and the JSD score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr

from results_analysis import metrics as M

Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
PRED_A = np.array([0, 1, 2, 0, 0, 0, 1, 1])  # wrong on images 4, 5, 6
PRED_B = np.array([0, 1, 1, 0, 1, 0, 2, 2])  # wrong on images 2, 5, 6, 7


def test_tp_agreement_histogram_by_hand():
    correct = np.stack([PRED_A == Y, PRED_B == Y])
    # Both right: 0, 1, 3 → 3 images; one right: 2, 4, 7 → 3; none: 5, 6 → 2.
    assert M.tp_agreement(correct) == pytest.approx({"tpa_0of2": 2 / 8, "tpa_1of2": 3 / 8, "tpa_2of2": 3 / 8})
    three = M.tp_agreement(np.array([[1, 1, 0, 0], [1, 0, 0, 1], [1, 1, 1, 0]]))
    assert three == pytest.approx({"tpa_0of3": 0.0, "tpa_1of3": 0.5, "tpa_2of3": 0.25, "tpa_3of3": 0.25})


def test_tp_agreement_rejects_non_binary_input():
    with pytest.raises(ValueError, match="0/1"):
        M.tp_agreement(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="models, images"):
        M.tp_agreement(np.array([1, 0, 1]))


def test_independent_reference_is_the_poisson_binomial():
    ref = M.independent_tpa_reference([0.9, 0.6])
    # Middle mass p1(1 − p2) + p2(1 − p1) (adversarial.md §8).
    assert ref == pytest.approx({"tpa_0of2": 0.1 * 0.4, "tpa_1of2": 0.9 * 0.4 + 0.6 * 0.1, "tpa_2of2": 0.9 * 0.6})
    equal = M.independent_tpa_reference([0.7, 0.7, 0.7])
    binom = [math.comb(3, k) * 0.7**k * 0.3 ** (3 - k) for k in range(4)]
    assert list(equal.values()) == pytest.approx(binom)


def test_disagreement_rate_by_hand():
    # Predictions differ on images 2, 4, 6, 7.
    assert M.disagreement_rate(PRED_A, PRED_B) == pytest.approx(4 / 8)
    assert M.disagreement_rate(PRED_A, PRED_A) == 0.0


def test_error_correlation_phi_and_yule_q_by_hand():
    got = M.error_correlation(PRED_A, PRED_B, Y)
    ea, eb = PRED_A != Y, PRED_B != Y
    # Table: both wrong 2 (5, 6), only A wrong 1 (4), only B wrong 2 (2, 7), both right 3.
    assert got["yule_q"] == pytest.approx((2 * 3 - 1 * 2) / (2 * 3 + 1 * 2))
    assert got["phi"] == pytest.approx(pearsonr(ea.astype(float), eb.astype(float))[0])
    phi_by_hand = (2 * 3 - 1 * 2) / math.sqrt(3 * 5 * 4 * 4)  # (n11 n00 − n10 n01)/√(n1· n0· n·1 n·0)
    assert got["phi"] == pytest.approx(phi_by_hand)


def test_error_correlation_is_nan_when_an_indicator_is_constant():
    got = M.error_correlation(Y, PRED_B, Y)  # model A never errs
    assert math.isnan(got["phi"])
    assert math.isnan(M.error_correlation(Y, Y, Y)["yule_q"])  # 0/0


def test_jensen_shannon_matches_scipy_and_is_zero_for_equal_rows():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(4), 20), rng.dirichlet(np.ones(4), 20)
    a[0] = [1.0, 0.0, 0.0, 0.0]  # zeros must not produce NaN
    got = M.jensen_shannon(a, b)
    np.testing.assert_allclose(got, jensenshannon(a, b, axis=1) ** 2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(M.jensen_shannon(a, a), 0.0, atol=1e-12)
    assert M.jensen_shannon([[1.0, 0.0]], [[0.0, 1.0]])[0] == pytest.approx(math.log(2))
