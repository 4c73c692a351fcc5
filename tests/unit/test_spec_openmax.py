"""Spec tests for the OpenMax head (shared/specs/crosr_openmax.md §6 MAVs and distances, §7.5 invalid
fits, §8 revision and decision rule, §9 grid, §12 diagnostics).

Expected values are literals worked out by hand from the spec's formulas, or recomputed with slow
per-sample Python loops that share no code with methods/openmax_head.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from methods.openmax_head import (
    DISTANCES,
    REVISIONS,
    TAILSIZES,
    OpenMaxCell,
    OpenMaxHead,
    alpha_weights,
    class_means,
    correct_mask,
    native_prediction,
    pairwise_distances,
    posthoc_grid,
    revise,
    unknown_probability,
)
from methods.weibull import WeibullFitError, fit_high

E = math.exp

# --------------------------------------------------------------------------------------------------
# §6: MAVs from correctly classified samples only


def test_mavs_use_only_correctly_classified_samples():
    av = np.array([[1.0, 1.0], [3.0, 1.0], [100.0, 100.0], [0.0, 4.0], [0.0, 6.0], [-50.0, 0.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # Sample 2 (class 0) is predicted 1 and sample 5 (class 1) is predicted 0: both far from the rest.
    logits = np.array([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [0.0, 3.0], [-1.0, 1.0], [4.0, 0.0]])
    np.testing.assert_array_equal(correct_mask(logits, labels), [True, True, False, True, True, False])
    mavs, counts = class_means(av, logits, labels, 2)
    np.testing.assert_allclose(mavs, [[2.0, 1.0], [0.0, 5.0]])
    np.testing.assert_array_equal(counts, [2, 2])
    head = OpenMaxHead.fit(av, logits, labels, 2, backend="scipy")
    np.testing.assert_allclose(head.mavs, [[2.0, 1.0], [0.0, 5.0]])
    # Training distances: each class's correct samples to its own MAV only.
    np.testing.assert_allclose(head.train_distances("euclidean")[0], [1.0, 1.0])
    np.testing.assert_allclose(head.train_distances("euclidean")[1], [1.0, 1.0])


def test_class_without_correct_samples_gets_nan_mav():
    av = np.array([[1.0, 0.0], [2.0, 0.0], [5.0, 5.0]])
    logits = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mavs, counts = class_means(av, logits, np.array([0, 0, 2]), 3)
    np.testing.assert_allclose(mavs[0], [1.5, 0.0])
    assert np.isnan(mavs[1]).all() and np.isnan(mavs[2]).all()
    np.testing.assert_array_equal(counts, [2, 0, 0])


# --------------------------------------------------------------------------------------------------
# §6: distances on a 2-D hand example

AV2 = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]])
MAV2 = np.array([[1.0, 0.0], [0.0, 2.0]])
# ‖v − m‖: (2,4) → √20, (3,2) → √13; (−1,0) → 1, (0,−2) → 2; (−3,0) → 3, (−2,−2) → √8
EUCLID = np.array([[math.sqrt(20), math.sqrt(13)], [1.0, 2.0], [3.0, math.sqrt(8)]])
# 1 − cos: cos((3,4),(1,0)) = 3/5, cos((3,4),(0,2)) = 8/10; zero vector: cos := 0; (−2,0): −1 and 0
COSINE = np.array([[0.4, 0.2], [1.0, 1.0], [2.0, 1.0]])


def test_euclidean_and_cosine_distances():
    np.testing.assert_allclose(pairwise_distances(AV2, MAV2, "euclidean"), EUCLID, rtol=1e-14)
    np.testing.assert_allclose(pairwise_distances(AV2, MAV2, "cosine"), COSINE, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("eu_weight", [1 / 200, 0.5])
def test_eucos_distance(eu_weight):
    got = pairwise_distances(AV2, MAV2, "eucos", eu_weight=eu_weight)
    np.testing.assert_allclose(got, eu_weight * EUCLID + COSINE, rtol=1e-14)
    assert got[0, 0] == pytest.approx(eu_weight * math.sqrt(20) + 0.4)


def test_default_eucos_weight_is_one_two_hundredth():
    np.testing.assert_allclose(pairwise_distances(AV2, MAV2, "eucos"), EUCLID / 200 + COSINE, rtol=1e-14)


def test_unknown_distance_rejected():
    with pytest.raises(ValueError, match="distance"):
        pairwise_distances(AV2, MAV2, "manhattan")


# --------------------------------------------------------------------------------------------------
# §8.2: alpha-rank weights

LOGITS4 = np.array([[0.5, 2.0, -1.0, 3.0], [1.0, 0.0, 5.0, 2.0]])
# row 0 ranks: class 3, 1, 0, 2; row 1 ranks: class 2, 3, 0, 1


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (1, [[0, 0, 0, 1], [0, 0, 1, 0]]),
        (3, [[1 / 3, 2 / 3, 0, 1], [1 / 3, 0, 1, 2 / 3]]),
        (4, [[2 / 4, 3 / 4, 1 / 4, 1], [2 / 4, 1 / 4, 1, 3 / 4]]),
    ],
)
def test_alpha_weights(alpha, expected):
    np.testing.assert_allclose(alpha_weights(LOGITS4, alpha), expected, rtol=1e-15)


def test_alpha_ten_gives_one_to_one_tenth():
    logits = np.arange(10.0)[None, ::-1].copy()  # class 0 largest
    np.testing.assert_allclose(alpha_weights(logits, 10)[0], [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


@pytest.mark.parametrize("alpha", [0, 5])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha_rank"):
        alpha_weights(LOGITS4, alpha)


# --------------------------------------------------------------------------------------------------
# §8.3: revision, by hand


def test_revision_hand_example_nonnegative_logits():
    # logits [3, 1, 0], w [0.5, 0, 1], α = 2 → weights [1, 1/2, 0], w·a = [0.5, 0, 0]
    logits, w = np.array([[3.0, 1.0, 0.0]]), np.array([[0.5, 0.0, 1.0]])
    a = alpha_weights(logits, 2)
    np.testing.assert_allclose(a, [[1.0, 0.5, 0.0]])
    # logit: l̂ = [1.5, 1, 0], l̂_unk = 3·0.5 = 1.5; nothing negative, so clipping changes nothing
    z = E(1.5) + E(1.0) + E(0.0) + E(1.5)
    logit_expected = [E(1.5) / z, E(1.0) / z, 1 / z, E(1.5) / z]
    np.testing.assert_allclose(revise(logits, w, a, "logit"), [logit_expected], rtol=1e-12)
    np.testing.assert_allclose(revise(logits, w, a, "logit_clipped"), [logit_expected], rtol=1e-12)
    # prob: p = softmax(l); p̂ = [0.5·p0, p1, p2], p̂_unk = 0.5·p0
    zp = E(3.0) + E(1.0) + 1.0
    p0, p1, p2 = E(3.0) / zp, E(1.0) / zp, 1 / zp
    np.testing.assert_allclose(revise(logits, w, a, "prob"), [[0.5 * p0, p1, p2, 0.5 * p0]], rtol=1e-12)


def test_revision_hand_example_with_negative_logit():
    # logits [2, −1, 0.5], w [0.2, 1, 0.5], α = 3 → weights [1, 1/3, 2/3], w·a = [0.2, 1/3, 1/3]
    # l·w·a = [0.4, −1/3, 1/6]; l̂ = [1.6, −2/3, 1/3]
    logits, w = np.array([[2.0, -1.0, 0.5]]), np.array([[0.2, 1.0, 0.5]])
    a = alpha_weights(logits, 3)
    np.testing.assert_allclose(a, [[1.0, 1 / 3, 2 / 3]])
    known = [E(1.6), E(-2 / 3), E(1 / 3)]
    # unclipped: l̂_unk = 0.4 − 1/3 + 1/6 = 7/30
    z = sum(known) + E(7 / 30)
    np.testing.assert_allclose(revise(logits, w, a, "logit"), [[*(k / z for k in known), E(7 / 30) / z]],
                               rtol=1e-12)
    # clipped: the −1/3 term is dropped, l̂_unk = 0.4 + 1/6 = 17/30
    z = sum(known) + E(17 / 30)
    np.testing.assert_allclose(revise(logits, w, a, "logit_clipped"),
                               [[*(k / z for k in known), E(17 / 30) / z]], rtol=1e-12)
    # prob: p̂ = [0.8·p0, (2/3)·p1, (2/3)·p2], p̂_unk = 0.2·p0 + p1/3 + p2/3
    zp = E(2.0) + E(-1.0) + E(0.5)
    p0, p1, p2 = E(2.0) / zp, E(-1.0) / zp, E(0.5) / zp
    np.testing.assert_allclose(revise(logits, w, a, "prob"),
                               [[0.8 * p0, 2 / 3 * p1, 2 / 3 * p2, 0.2 * p0 + p1 / 3 + p2 / 3]], rtol=1e-12)


@pytest.mark.parametrize("revision", REVISIONS)
def test_revision_rows_sum_to_one_and_are_stable(revision):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 6)) * 300  # would overflow a naive exp
    w = rng.uniform(size=(50, 6))
    probs = revise(logits, w, alpha_weights(logits, 4), revision)
    assert probs.shape == (50, 7) and np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_zero_w_leaves_known_scores_untouched():
    logits = np.array([[2.0, 0.0, -1.0]])
    w, a = np.zeros((1, 3)), alpha_weights(logits, 3)
    z = E(2.0) + 1.0 + E(-1.0)
    # l̂ = l and l̂_unk = 0: softmax over [2, 0, −1, 0]
    np.testing.assert_allclose(revise(logits, w, a, "logit"), [[E(2.0) / (z + 1), 1 / (z + 1), E(-1.0) / (z + 1),
                                                               1 / (z + 1)]], rtol=1e-12)
    np.testing.assert_allclose(revise(logits, w, a, "prob"), [[E(2.0) / z, 1 / z, E(-1.0) / z, 0.0]], rtol=1e-12)


def test_revise_rejects_sentinel_w_and_unknown_revision():
    logits = np.array([[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        revise(logits, np.array([[-9999.0, 0.0]]), alpha_weights(logits, 1))
    with pytest.raises(ValueError, match="revision"):
        revise(logits, np.zeros((1, 2)), alpha_weights(logits, 1), "softmax")


# --------------------------------------------------------------------------------------------------
# §8.4–8.6: scores and decision rule


def test_unknown_probability_and_native_prediction():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]])  # K = 2, column 2 = unknown
    np.testing.assert_array_equal(unknown_probability(probs), [0.2, 0.7, 0.25])
    np.testing.assert_array_equal(native_prediction(probs), [0, 2, 0])
    np.testing.assert_array_equal(native_prediction(probs, None), [0, 2, 0])
    # Row 2's best is 0.4 < 0.45: unknown (index K = 2), not OpenOOD's known index K − 1.
    np.testing.assert_array_equal(native_prediction(probs, 0.45), [0, 2, 2])
    np.testing.assert_array_equal(native_prediction(probs, 0.6), [2, 2, 2])


# --------------------------------------------------------------------------------------------------
# §9: the post-hoc grid


@pytest.mark.parametrize("k", [4, 6, 20])
def test_grid_size_and_keys(k):
    grid = posthoc_grid(k)
    assert len(grid) == 5 * k * 3 == len(set(grid))
    assert {(c.tailsize, c.alpha_rank, c.distance) for c in grid} == {
        (t, a, d) for t in (10, 20, 50, 100, 200) for a in range(1, k + 1) for d in ("euclidean", "eucos", "cosine")
    }
    assert TAILSIZES == (10, 20, 50, 100, 200) and DISTANCES == ("euclidean", "eucos", "cosine")
    keys = {c.key for c in grid}
    assert len(keys) == len(grid)
    assert "T=20/alpha=3/dist=euclidean" in keys and f"T=200/alpha={k}/dist=cosine" in keys
    assert OpenMaxCell(50, 2, "eucos").key == "T=50/alpha=2/dist=eucos"


def test_cell_validation():
    with pytest.raises(ValueError):
        OpenMaxCell(20, 3, "manhattan")
    with pytest.raises(ValueError):
        OpenMaxCell(20, 0, "euclidean")


# --------------------------------------------------------------------------------------------------
# the head end to end against a slow reference


def blobs(seed: int, k: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AVs = [logits, |noise|] with mostly (not all) correct logits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 2.5
    av = np.concatenate([logits, np.abs(rng.normal(size=(n, d - k)))], axis=1)
    return av, logits, labels


def slow_probabilities(head, train, av, logits, cell, revision):
    """Per-sample loops from the spec text, using only the fitted (λ, k, small) of each class."""
    tav, tlogits, tlabels = train
    k_classes = logits.shape[1]
    mavs = []
    for c in range(k_classes):
        rows = [tav[i] for i in range(len(tav)) if tlabels[i] == c and int(np.argmax(tlogits[i])) == c]
        mavs.append(sum(rows) / len(rows))

    def dist(v, m):
        eu = math.sqrt(sum((a - b) ** 2 for a, b in zip(v, m, strict=True)))
        nv, nm = math.sqrt(sum(a * a for a in v)), math.sqrt(sum(b * b for b in m))
        cos = sum(a * b for a, b in zip(v, m, strict=True)) / (nv * nm)
        return {"euclidean": eu, "cosine": 1 - cos, "eucos": eu / 200 + 1 - cos}[cell.distance]

    fits = head.fits(cell.tailsize, cell.distance)
    out = []
    for v, lg in zip(av, logits, strict=True):
        order = sorted(range(k_classes), key=lambda j: -lg[j])
        a = [0.0] * k_classes
        for r, j in enumerate(order[: cell.alpha_rank], start=1):
            a[j] = (cell.alpha_rank + 1 - r) / cell.alpha_rank
        w = []
        for c in range(k_classes):
            p = fits[c].params()
            u = dist(v, mavs[c]) + 1 - p.small_score
            w.append(0.0 if u < 0 else 1 - math.exp(-((u / p.scale) ** p.shape)))
        if revision == "prob":
            ex = [math.exp(x - max(lg)) for x in lg]
            pk = [x / sum(ex) for x in ex]
            out.append([pk[j] * (1 - w[j] * a[j]) for j in range(k_classes)]
                       + [sum(pk[j] * w[j] * a[j] for j in range(k_classes))])
            continue
        terms = [lg[j] * w[j] * a[j] for j in range(k_classes)]
        unk = sum(max(t, 0.0) for t in terms) if revision == "logit_clipped" else sum(terms)
        z = [lg[j] - terms[j] for j in range(k_classes)] + [unk]
        ex = [math.exp(x - max(z)) for x in z]
        out.append([x / sum(ex) for x in ex])
    return np.array(out)


@pytest.mark.parametrize("backend", ["scipy", "libmr"])
def test_head_matches_slow_reference(backend):
    if backend == "libmr":
        pytest.importorskip("libmr")
    train = blobs(0, 4, 400, 7)
    head = OpenMaxHead.fit(*train, 4, backend=backend)
    assert head.backend == backend and head.num_classes == 4
    av, logits, _ = blobs(1, 4, 40, 7)
    av[:5] *= 3.0  # push some samples into the tails so the w-scores are not all 0
    for cell in [OpenMaxCell(20, 2, "euclidean"), OpenMaxCell(10, 4, "cosine"), OpenMaxCell(50, 1, "eucos")]:
        for revision in REVISIONS:
            got = head.probabilities(av, logits, cell, revision)
            np.testing.assert_allclose(got, slow_probabilities(head, train, av, logits, cell, revision),
                                       rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
        w = head.w_scores(av, cell)
        assert np.any((w > 0.01) & (w < 0.99))  # the example exercises the rising part of the tails
        if cell.distance == "euclidean":
            # ... and distances below small − 1 (cosine distances ≤ 2 rarely get there: the +1 shift
            # is in raw distance units)
            assert 0 < np.mean(w == 0) < 1


def test_head_fits_are_the_class_tails():
    train = blobs(2, 3, 300, 5)
    head = OpenMaxHead.fit(*train, 3, backend="scipy")
    av, logits, labels = train
    for c in range(3):
        keep = (labels == c) & (logits.argmax(axis=1) == c)
        rows = av[keep]
        d = [math.sqrt(sum((x - m) ** 2 for x, m in zip(r, rows.mean(axis=0), strict=True))) for r in rows]
        assert head.counts[c] == len(rows)
        np.testing.assert_allclose(np.sort(head.train_distances("euclidean")[c]), np.sort(d), rtol=1e-12)
        got, ref = head.fits(20, "euclidean")[c].params(), fit_high(np.array(d), 20, "scipy").params()
        for name in ("scale", "shape", "small_score"):  # equal up to summation-order rounding
            assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-9)
    assert head.fits(20, "euclidean") is head.fits(20, "euclidean")  # cached per (T, distance)


def test_repeated_scoring_of_equal_arrays_is_consistent():
    head = OpenMaxHead.fit(*blobs(3, 3, 300, 5), 3, backend="scipy")
    av, logits, _ = blobs(4, 3, 30, 5)
    av2, logits2, _ = blobs(5, 3, 30, 5)
    cell = OpenMaxCell(20, 2, "eucos")
    first = head.probabilities(av, logits, cell)
    other = head.probabilities(av2, logits2, cell)
    np.testing.assert_array_equal(head.probabilities(av.copy(), logits, cell), first)
    # Same shape, different content must not be served from the first array's cached w-scores.
    assert not np.allclose(other, first)
    changed = av.copy()
    changed[7] += 5.0
    np.testing.assert_allclose(head.probabilities(changed, logits, cell)[[0, 1]], first[[0, 1]], rtol=1e-15)
    assert not np.allclose(head.probabilities(changed, logits, cell)[7], first[7])


def test_alpha_above_k_rejected_by_head():
    head = OpenMaxHead.fit(*blobs(3, 3, 300, 5), 3, backend="scipy")
    av, logits, _ = blobs(4, 3, 10, 5)
    with pytest.raises(ValueError, match="alpha_rank"):
        head.probabilities(av, logits, OpenMaxCell(20, 4, "euclidean"))


# --------------------------------------------------------------------------------------------------
# §7.5: degenerate fits raise naming class, T and distance; §12 diagnostics


def degenerate_training(single_class_1: bool = True):
    """3 classes in 3-D. Class 0: 30 spread samples. Class 1: one correct sample (plus misclassified
    ones) or 30 spread samples. Class 2: four samples at (10, ±1, 0), (10, 0, ±1), equidistant from
    their mean (10, 0, 0) in every distance type, so its tail is constant."""
    rng = np.random.default_rng(0)
    c0 = rng.normal(size=(30, 3)) + [0.0, 0.0, 10.0]
    c1 = (rng.normal(size=(30, 3)) + [0.0, 10.0, 0.0])
    c2 = np.array([[10.0, 1.0, 0.0], [10.0, -1.0, 0.0], [10.0, 0.0, 1.0], [10.0, 0.0, -1.0]])
    av = np.concatenate([c0, c1, c2])
    labels = np.repeat([0, 1, 2], [30, 30, 4])
    logits = np.eye(3)[labels] * 3.0
    if single_class_1:
        logits[31:60] = np.eye(3)[0] * 3.0  # all but one class-1 sample predicted as class 0
    return av, logits, labels


@pytest.mark.parametrize("backend", ["scipy", "libmr"])
def test_single_sample_class_raises_naming_class_tailsize_distance(backend):
    if backend == "libmr":
        pytest.importorskip("libmr")
    av, logits, labels = degenerate_training()
    head = OpenMaxHead.fit(av, logits, labels, 3, backend=backend)
    np.testing.assert_array_equal(head.counts, [30, 1, 4])
    invalid = head.invalid_classes(20, "euclidean")
    assert [c for c, _ in invalid] == [1, 2]
    assert invalid[0][1] == "only 1 correctly classified training sample"
    assert "constant tail" in invalid[1][1]
    with pytest.raises(WeibullFitError) as err:
        head.probabilities(av[:5], logits[:5], OpenMaxCell(20, 2, "euclidean"))
    assert str(err.value) == ("OpenMax: no valid Weibull fit for class 1 (tailsize 20, distance euclidean): "
                              "only 1 correctly classified training sample")
    assert (err.value.class_index, err.value.tailsize, err.value.distance) == (1, 20, "euclidean")


@pytest.mark.parametrize("backend", ["scipy", "libmr"])
@pytest.mark.parametrize("distance", DISTANCES)
def test_constant_tail_class_raises_naming_class_tailsize_distance(backend, distance):
    if backend == "libmr":
        pytest.importorskip("libmr")
    av, logits, labels = degenerate_training(single_class_1=False)
    head = OpenMaxHead.fit(av, logits, labels, 3, backend=backend)
    assert [c for c, _ in head.invalid_classes(10, distance)] == [2]
    with pytest.raises(WeibullFitError, match="constant tail") as err:
        head.probabilities(av, logits, OpenMaxCell(10, 3, distance), "prob")
    assert f"class 2 (tailsize 10, distance {distance})" in str(err.value)


def test_class_without_correct_samples_is_invalid():
    av, logits, labels = degenerate_training()
    logits[60:] = np.eye(3)[0] * 3.0  # no class-2 sample is classified correctly
    head = OpenMaxHead.fit(av, logits, labels, 3, backend="scipy")
    assert head.invalid_classes(20, "cosine")[-1] == (2, "no correctly classified training samples")


def test_diagnostics_counts():
    av, logits, labels = degenerate_training()
    head = OpenMaxHead.fit(av, logits, labels, 3, backend="scipy")
    # T = 20: class 0 has 30 samples; classes 1 (1 sample) and 2 (4 samples) are truncated and invalid.
    found = head.diagnostics(av[:3], logits[:3], OpenMaxCell(20, 1, "euclidean"))
    assert found["invalid_fits"] == 2 and found["tail_truncated"] == 2
    found = head.diagnostics(av[:3], logits[:3], OpenMaxCell(50, 1, "euclidean"))
    assert found["tail_truncated"] == 3


def test_diagnostics_all_w_zero_fraction():
    # Class 0 at (r, 0) and (−r, 0) for r = 1..15: MAV (0, 0), distances 1..15 twice each. T = 10 keeps
    # 15, 15, …, 11, 11, so small = 11 and w = 0 below distance 10. Class 1 is the same around (3, 0).
    r = np.arange(1.0, 16.0)
    c0 = np.concatenate([np.stack([r, 0 * r], 1), np.stack([-r, 0 * r], 1)])
    av = np.concatenate([c0, c0 + [3.0, 0.0]])
    labels = np.repeat([0, 1], 30)
    logits = np.eye(2)[labels]
    head = OpenMaxHead.fit(av, logits, labels, 2, backend="scipy")
    np.testing.assert_allclose(head.mavs, [[0.0, 0.0], [3.0, 0.0]], atol=1e-12)
    assert all(f.params().small_score == 11.0 for f in head.fits(10, "euclidean"))
    # (1.5, 0): distances 1.5, 1.5; (0, 0): 0, 3; (40, 0): 40, 37 → only the last is in a tail.
    test = np.array([[1.5, 0.0], [0.0, 0.0], [40.0, 0.0]])
    found = head.diagnostics(test, np.zeros((3, 2)), OpenMaxCell(10, 2, "euclidean"))
    assert found == {"invalid_fits": 0.0, "tail_truncated": 0.0, "all_w_zero": pytest.approx(2 / 3)}
