"""ClustNet's metrics (clustnet.md §7): the expert × class counts, Hungarian-matched accuracy against
a brute-force search over every matching, and the per-phase metric set on a case worked by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from results_analysis import metrics as M


def brute_force_matched(counts: np.ndarray) -> float:
    """Best total over every injective map from the smaller side to the larger, by enumeration."""
    rows, cols = counts.shape
    if rows <= cols:
        best = max(sum(counts[i, p[i]] for i in range(rows)) for p in itertools.permutations(range(cols), rows))
    else:
        best = max(sum(counts[p[j], j] for j in range(cols)) for p in itertools.permutations(range(rows), cols))
    return best / counts.sum()


@pytest.mark.parametrize("shape", [(5, 5), (4, 4), (3, 5), (5, 3), (2, 6), (6, 2), (1, 4), (5, 1)])
def test_matched_accuracy_equals_brute_force_over_all_permutations(shape):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    for _ in range(25):
        # Sparse, skewed blocks like a gate's: many zeros, a few large cells.
        counts = rng.integers(0, 12, shape) * (rng.random(shape) < 0.6) + (rng.random(shape) < 0.1) * 40
        if counts.sum() == 0:
            continue
        assert M.matched_accuracy(counts) == pytest.approx(brute_force_matched(counts), abs=1e-12)


def test_matched_accuracy_of_an_empty_block_is_nan_not_a_number_made_up():
    assert math.isnan(M.matched_accuracy(np.zeros((5, 5), dtype=int)))
    with pytest.raises(ValueError, match="2-D"):
        M.matched_accuracy(np.ones(5))


def test_gate_class_counts_match_a_counting_loop_and_keep_empty_rows_and_columns():
    rng = np.random.default_rng(3)
    expert = rng.integers(0, 4, 200)  # expert 4 is never chosen
    y = rng.choice([0, 1, 2, 5, 7], 200)
    classes = [7, 0, 1, 2, 5, 9]  # column order as given; class 9 never occurs
    counts = M.gate_class_counts(expert, y, 5, classes)
    slow = np.zeros((5, 6), dtype=int)
    for e, c in zip(expert, y, strict=True):
        slow[e, classes.index(c)] += 1
    np.testing.assert_array_equal(counts, slow)
    assert counts[4].sum() == 0 and counts[:, 5].sum() == 0
    # Over all classes the matched accuracy is the ordinary clustering accuracy.
    assert M.matched_accuracy(counts) == pytest.approx(M.cluster_acc(y, expert))


def test_gate_class_counts_reject_bad_ids():
    with pytest.raises(ValueError, match="expert ids"):
        M.gate_class_counts([0, 5], [0, 1], 5, [0, 1])
    with pytest.raises(ValueError, match="outside"):
        M.gate_class_counts([0, 1], [0, 3], 5, [0, 1])


def test_gate_clustering_metrics_on_a_hand_worked_case():
    classes = np.array([0, 0, 1, 1, 5, 5, 6, 6])
    expert = np.array([0, 0, 1, 2, 3, 3, 3, 4])
    p_positive = np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.1, 0.4, 0.7])  # P(t = 1) of the gated output
    log_probs = np.log(np.stack([1 - p_positive, p_positive], axis=1))
    pi = np.full((8, 5), 0.1)
    pi[np.arange(8), expert] = 0.6
    pi[0] = [0.96, 0.01, 0.01, 0.01, 0.01]
    got = M.gate_clustering_metrics(expert, pi, log_probs, classes, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], prefix="val_")
    targets = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    nll = -np.mean(np.log(np.where(targets == 1, p_positive, 1 - p_positive)))
    expected = {
        "val_binary_acc": 6 / 8,  # images 3 (P, p = 0.3) and 7 (N, p = 0.7) are wrong
        "val_nll": nll,
        # P block: class 0 → e0 (2), class 1 → e1, e2 (1 each): best matching keeps 3 of 4.
        "val_pos_cluster_acc": 3 / 4,
        # N block: class 5 → e3 (2), class 6 → e3, e4 (1 each): e3↔5, e4↔6 keeps 3 of 4.
        "val_neg_cluster_acc": 3 / 4,
        "val_mean_cluster_acc": 3 / 4,
        "val_cluster_acc": 6 / 8,
        "val_gate_confidence": (0.96 + 7 * 0.6) / 8,
        "val_usage_e0": 2 / 8, "val_usage_e1": 1 / 8, "val_usage_e2": 1 / 8, "val_usage_e3": 3 / 8,
        "val_usage_e4": 1 / 8,
        "val_nmi": M.nmi(classes, expert),
        "val_ari": M.ari(classes, expert),
    }
    assert got == pytest.approx(expected)


def test_group_accuracies_are_computed_within_each_group_only():
    # The gate puts every P image in e0 and separates the N classes perfectly: P is at chance of a
    # single cluster (1/5 of a balanced group), N is perfect, and each is judged on its own columns.
    classes = np.repeat(np.arange(10), 4)
    expert = np.where(classes < 5, 0, classes - 5)
    pi = np.eye(5)[expert]
    log_probs = np.log(np.full((40, 2), 0.5))
    got = M.gate_clustering_metrics(expert, pi, log_probs, classes, range(5), range(5, 10))
    assert got["pos_cluster_acc"] == pytest.approx(0.2)
    assert got["neg_cluster_acc"] == pytest.approx(1.0)
    assert got["mean_cluster_acc"] == pytest.approx(0.6)
    assert got["gate_confidence"] == 1.0
