"""Metrics against scikit-learn, SciPy, brute-force loops and hand-computed cases."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from results_analysis import metrics as M


def brute_auroc(sk: np.ndarray, su: np.ndarray) -> float:
    total = 0.0
    for u in su:
        for k in sk:
            if u > k:
                total += 1.0
            elif u == k:
                total += 0.5
    return total / (len(sk) * len(su))


def brute_oscr(sk: np.ndarray, correct: np.ndarray, su: np.ndarray) -> float:
    thresholds = [-math.inf] + sorted(set(sk.tolist()) | set(su.tolist()))
    points = []
    for t in thresholds:
        ccr = sum(1 for s, c in zip(sk, correct, strict=True) if c and s <= t) / len(sk)
        fpr = sum(1 for s in su if s <= t) / len(su)
        points.append((fpr, ccr))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def tied_scores(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    # Few distinct values so that many known/unknown pairs tie.
    return np.round(rng.normal(shift, 1.0, n) * 2) / 2


# --- accuracy ---------------------------------------------------------------------------------


def test_accuracy_hand():
    assert M.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75


def test_accuracy_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0])


# --- AUROC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_and_pairwise_with_ties(seed):
    rng = np.random.default_rng(seed)
    sk = tied_scores(rng, 47, 0.0)
    su = tied_scores(rng, 31, 0.7)
    got = M.auroc(sk, su)
    y = np.r_[np.zeros(sk.size), np.ones(su.size)]
    assert got == pytest.approx(roc_auc_score(y, np.r_[sk, su]), abs=1e-9)
    assert got == pytest.approx(brute_auroc(sk, su), abs=1e-9)


def test_auroc_hand_with_tie_and_direction():
    # pairs (u, k): (2,1)=1, (2,2)=1/2, (2,3)=0, (4,*)=1 -> 4.5 / 6
    assert M.auroc([1, 2, 3], [2, 4]) == pytest.approx(4.5 / 6)
    # Unknowns scoring higher must give a high AUROC, not 1 - AUROC.
    assert M.auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert M.auroc([0.5, 0.5], [0.5]) == 0.5


def test_auroc_rejects_nan():
    with pytest.raises(ValueError):
        M.auroc([0.1, np.nan], [0.3])


# --- OSCR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_oscr_matches_brute_force_sweep_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    sk = tied_scores(rng, 53, 0.0)
    su = tied_scores(rng, 29, 0.8)
    correct = rng.random(sk.size) < 0.7
    got = M.oscr(sk, correct, su)
    assert got == pytest.approx(brute_oscr(sk, correct, su), abs=1e-12)
    assert got <= correct.mean() + 1e-12


def test_oscr_hand_with_tied_known_and_unknown():
    # known: 0.1 correct, 0.5 correct, 0.5 wrong; unknown: 0.5, 0.9.
    # Points (FPR, CCR): (0,0) -> (0,1/3) -> (1/2,2/3) -> (1,2/3); area 1/4 + 1/3.
    # Accepting the tied known before the tied unknown would give 2/3 instead.
    got = M.oscr([0.1, 0.5, 0.5], [True, True, False], [0.5, 0.9])
    assert got == pytest.approx(1 / 4 + 1 / 3, abs=1e-15)


def test_oscr_direction():
    # Unknowns scoring higher than every (correct) known: perfect separation.
    assert M.oscr([0.1, 0.2], [1, 1], [0.8, 0.9]) == 1.0
    assert M.oscr([0.8, 0.9], [1, 1], [0.1, 0.2]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_oscr_equals_auroc_when_all_known_correct(seed):
    rng = np.random.default_rng(200 + seed)
    sk = tied_scores(rng, 40, 0.0)
    su = tied_scores(rng, 25, 0.5)
    assert M.oscr(sk, np.ones(sk.size, bool), su) == pytest.approx(M.auroc(sk, su), abs=1e-12)


def test_oscr_is_at_most_accuracy_and_reaches_it():
    # All unknowns above all knowns: OSCR == closed-set accuracy exactly.
    correct = np.array([1, 0, 1, 1, 0])
    assert M.oscr([0, 1, 2, 3, 4], correct, [10, 11]) == pytest.approx(0.6)


def test_oscr_rejects_non_boolean_correct():
    with pytest.raises(ValueError):
        M.oscr([0.1, 0.2], [1, 2], [0.3])


# --- TNR / FPR at TPR95 ----------------------------------------------------------------------


def test_tnr_at_tpr95_hand():
    known = np.arange(1, 21, dtype=float)  # tau95 = 19th smallest = 19
    unknown = [18.5, 19.0, 19.5, 25.0]  # strictly above 19: 19.5 and 25
    assert M.threshold_at_tpr(known) == 19.0
    assert M.tnr_at_tpr95(known, unknown) == 0.5
    assert M.fpr_at_tpr95(known, unknown) == 0.5


def test_tnr_at_tpr95_small_known_set_uses_max():
    # ceil(0.95 * 10) = 10: tau95 is the largest known score; a tie with it is accepted.
    known = np.linspace(0.0, 0.9, 10)
    assert M.tnr_at_tpr95(known, [0.9, 0.95, 0.2, 1.0]) == 0.5
    assert M.fpr_at_tpr95(known, [0.9, 0.95, 0.2, 1.0]) == 0.5


def test_tnr_at_tpr95_is_order_free():
    rng = np.random.default_rng(3)
    known = np.arange(1, 21, dtype=float)
    assert M.tnr_at_tpr95(rng.permutation(known), [18.5, 19.5, 25.0, 0.0]) == 0.5


@pytest.mark.parametrize("tpr", [0.95, 0.55, 0.07])
def test_threshold_at_tpr_rank_is_exact(tpr):
    # In floating point 0.55 * 100 > 55, so a naive ceil would pick the 56th score.
    exact = Fraction(str(tpr))
    for n in range(1, 400):
        scores = np.arange(n, dtype=float)
        assert M.threshold_at_tpr(scores, tpr) == math.ceil(exact * n) - 1, n


# --- macro-F1 ---------------------------------------------------------------------------------


def test_macro_f1_hand():
    # K = 2, unknown = 2. Per-class F1: 0 -> 1/2, 1 -> 4/5, 2 -> 2/3.
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    assert M.macro_f1(y_true, y_pred, num_known=2) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert M.unknown_f1(y_true, y_pred, num_known=2) == pytest.approx(2 / 3)


def test_macro_f1_counts_absent_classes():
    # K = 3: class 2 and the unknown class 3 never occur; the mean is over 4 classes.
    assert M.macro_f1([0, 1], [0, 1], num_known=3) == pytest.approx(0.5)


def test_open_set_predictions_and_threshold():
    val_known = np.arange(1, 21, dtype=float)
    tau = M.threshold_at_tpr(val_known)
    pred = M.open_set_predictions([0, 1, 1], [5.0, 19.0, 19.5], tau, num_known=2)
    np.testing.assert_array_equal(pred, [0, 1, 2])


# --- clustering -------------------------------------------------------------------------------


def test_cluster_acc_permuted_labels():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    assert M.cluster_acc(y, (y + 1) % 3) == 1.0
    assert M.nmi(y, (y + 1) % 3) == pytest.approx(1.0)
    assert M.ari(y, (y + 1) % 3) == pytest.approx(1.0)


def test_cluster_acc_beats_greedy_matching():
    # classes x clusters = [[3, 2], [2, 0]]: greedy takes 3 then 0; optimal 2 + 2 = 4.
    y_true = [0, 0, 0, 0, 0, 1, 1]
    y_clus = [0, 0, 0, 1, 1, 0, 0]
    assert M.cluster_acc(y_true, y_clus) == pytest.approx(4 / 7)


def test_cluster_acc_rectangular():
    # classes x clusters = [[2, 1, 0], [0, 1, 2]]: match 0->0, 1->2.
    assert M.cluster_acc([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(4 / 6)
    # More classes than clusters: only one pair can match.
    assert M.cluster_acc([0, 1, 2, 2], [5, 5, 5, 5]) == pytest.approx(2 / 4)


def test_nmi_ari_hand():
    # contingency [[2,0,0],[0,1,1]]: I = ln2, H(U) = ln2, H(V) = 1.5 ln2 -> NMI = 0.8;
    # ARI = (1 - 1/3) / (3/2 - 1/3) = 4/7.
    y_true, y_clus = [0, 0, 1, 1], [0, 0, 1, 2]
    assert M.nmi(y_true, y_clus) == pytest.approx(0.8)
    assert M.ari(y_true, y_clus) == pytest.approx(4 / 7)
    got = M.clustering_metrics(y_true, y_clus, prefix="val_")
    assert got == pytest.approx({"val_cluster_acc": 0.75, "val_nmi": 0.8, "val_ari": 4 / 7})


# --- osr_metrics ------------------------------------------------------------------------------


def test_osr_metrics_hand_and_prefix():
    y_known = np.array([0, 1, 1])
    pred_known = np.array([0, 1, 0])
    score_known = np.array([0.1, 0.5, 0.5])
    score_unknown = np.array([0.5, 0.9])
    got = M.osr_metrics(pred_known, y_known, score_known, score_unknown, prefix="val_")
    assert set(got) == {"val_acc", "val_auroc", "val_oscr", "val_tnr_at_tpr95", "val_fpr_at_tpr95"}
    # AUROC pairs: 0.5 vs {0.1, 0.5, 0.5} -> 1 + 1/2 + 1/2; 0.9 -> 3. Total 5 / 6.
    # tau95 = 3rd smallest known = 0.5; unknowns above: 0.9 -> TNR 1/2.
    assert got == pytest.approx(
        {
            "val_acc": 2 / 3,
            "val_auroc": 5 / 6,
            "val_oscr": 1 / 4 + 1 / 3,
            "val_tnr_at_tpr95": 0.5,
            "val_fpr_at_tpr95": 0.5,
        }
    )
    assert set(M.osr_metrics(pred_known, y_known, score_known, score_unknown)) == {
        "acc",
        "auroc",
        "oscr",
        "tnr_at_tpr95",
        "fpr_at_tpr95",
    }


def test_osr_metrics_rejects_misaligned_inputs():
    with pytest.raises(ValueError):
        M.osr_metrics([0, 1], [0, 1], [0.1, 0.2, 0.3], [0.5])
