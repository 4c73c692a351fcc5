"""Open-set and clustering metrics as pure functions of numpy arrays (protocol.md §8).

Score convention everywhere: a larger open-set score means "more likely unknown".
Every method is judged by :func:`osr_metrics` (open-set tasks) or :func:`clustering_metrics`
(clustering tasks), so that no method carries its own copy of a metric.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    adjusted_rand_score,
    f1_score,
    normalized_mutual_info_score,
    roc_auc_score,
)
from sklearn.metrics import auc as _trapezoid_area
from sklearn.metrics.cluster import contingency_matrix

__all__ = [
    "accuracy",
    "ari",
    "auroc",
    "cluster_acc",
    "clustering_metrics",
    "CLUSTERING_METRICS",
    "disagreement_rate",
    "error_correlation",
    "independent_tpa_reference",
    "jensen_shannon",
    "kmeans_clusters",
    "kmeans_readout",
    "fpr_at_tpr95",
    "gate_class_counts",
    "gate_clustering_metrics",
    "matched_accuracy",
    "macro_f1",
    "nmi",
    "open_set_f1",
    "open_set_predictions",
    "osr_metrics",
    "oscr",
    "threshold_at_tpr",
    "tnr_at_tpr95",
    "tp_agreement",
    "unknown_f1",
]


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    # A NaN score usually means a diverged model; sorting would silently put it last and
    # yield a plausible-looking number, so refuse it here instead.
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _labels(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} have different lengths: {a.size} and {b.size}")


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Closed-set accuracy: the fraction of samples with ``y_pred == y_true`` (§8.1)."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(t, p, "y_true and y_pred")
    return float(np.mean(t == p))


def auroc(score_known: ArrayLike, score_unknown: ArrayLike) -> float:
    """AUROC with unknown as the positive class, ties counting 1/2 (§8.2).

    This is ``roc_auc_score(1[unknown], score)`` by definition of the protocol.
    """
    sk, su = _scores(score_known, "score_known"), _scores(score_unknown, "score_unknown")
    y = np.concatenate([np.zeros(sk.size), np.ones(su.size)])
    return float(roc_auc_score(y, np.concatenate([sk, su])))


def oscr(score_known: ArrayLike, correct_known: ArrayLike, score_unknown: ArrayLike) -> float:
    """Open-set classification rate (§8.3).

    A sample is accepted at threshold t when its score is <= t. t sweeps -inf and every distinct
    score in ascending order; CCR(t) counts correctly classified accepted knowns over all knowns,
    FPR(t) accepted unknowns over all unknowns; OSCR is the trapezoidal area of CCR over FPR.
    Knowns and unknowns with the same score are accepted at the same t, which gives the diagonal
    segment that makes OSCR equal AUROC when every known is correct.
    """
    sk, su = _scores(score_known, "score_known"), _scores(score_unknown, "score_unknown")
    correct = np.asarray(correct_known).reshape(-1)
    _same_length(sk, correct, "score_known and correct_known")
    if not np.all((correct == 0) | (correct == 1)):
        raise ValueError("correct_known must be boolean (0/1)")
    correct = correct.astype(bool)

    thresholds = np.unique(np.concatenate([sk, su]))
    # side="right" counts scores <= t, i.e. everything accepted at t, ties included.
    ccr = np.searchsorted(np.sort(sk[correct]), thresholds, side="right") / sk.size
    fpr = np.searchsorted(np.sort(su), thresholds, side="right") / su.size
    # The -inf threshold accepts nothing: the curve starts at (0, 0).
    fpr = np.concatenate([[0.0], fpr])
    ccr = np.concatenate([[0.0], ccr])
    return float(_trapezoid_area(fpr, ccr))


def threshold_at_tpr(score_known_val: ArrayLike, tpr: float = 0.95) -> float:
    """The smallest score t with at least ``tpr`` of the known scores <= t (§8.4, §8.5).

    That is the ceil(tpr * |K|)-th smallest known score. Applied to known validation scores it
    gives tau_val, the default rejection threshold for macro-F1.
    """
    sk = _scores(score_known_val, "score_known_val")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    # Exact rational arithmetic: 0.95 * n in floating point can land just above an integer
    # and ceil() would then skip to the next known score.
    k = math.ceil(Fraction(str(tpr)) * sk.size)
    return float(np.sort(sk)[k - 1])


def tnr_at_tpr95(score_known: ArrayLike, score_unknown: ArrayLike) -> float:
    """Fraction of unknowns rejected (score > tau95) at the threshold that accepts 95% of knowns (§8.4)."""
    su = _scores(score_unknown, "score_unknown")
    tau = threshold_at_tpr(score_known, 0.95)
    return float(np.mean(su > tau))


def fpr_at_tpr95(score_known: ArrayLike, score_unknown: ArrayLike) -> float:
    """1 - TNR@TPR95: the fraction of unknowns accepted at 95% known acceptance (OpenOOD's FPR@95TPR)."""
    return 1.0 - tnr_at_tpr95(score_known, score_unknown)


def open_set_predictions(y_pred: ArrayLike, score: ArrayLike, threshold: float, num_known: int) -> np.ndarray:
    """Closed-set predictions with every sample scoring above ``threshold`` relabelled as unknown (= K)."""
    p = _labels(y_pred, "y_pred")
    s = _scores(score, "score")
    _same_length(p, s, "y_pred and score")
    return np.where(s > threshold, num_known, p)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_known: int) -> float:
    """Unweighted mean F1 over the K known classes and the unknown class, encoded as K (§8.5).

    Classes absent from both arrays still count (with F1 = 0), so the mean is always over K + 1.
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(t, p, "y_true and y_pred")
    return float(f1_score(t, p, labels=list(range(num_known + 1)), average="macro", zero_division=0))


def unknown_f1(y_true: ArrayLike, y_pred: ArrayLike, num_known: int) -> float:
    """F1 of the unknown class (label K) alone (§8.5)."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(t, p, "y_true and y_pred")
    return float(f1_score(t, p, labels=[num_known], average="macro", zero_division=0))


def cluster_acc(y_true: ArrayLike, y_cluster: ArrayLike) -> float:
    """Clustering accuracy under the best one-to-one cluster-to-class matching (§8.6).

    With more clusters than classes (or the reverse) only min(#clusters, #classes) pairs are
    matched; samples in unmatched clusters count as errors.
    """
    t, c = _labels(y_true, "y_true"), _labels(y_cluster, "y_cluster")
    _same_length(t, c, "y_true and y_cluster")
    return matched_accuracy(contingency_matrix(t, c))


def nmi(y_true: ArrayLike, y_cluster: ArrayLike) -> float:
    """Normalised mutual information, arithmetic normalisation (sklearn's default) (§8.6)."""
    t, c = _labels(y_true, "y_true"), _labels(y_cluster, "y_cluster")
    _same_length(t, c, "y_true and y_cluster")
    return float(normalized_mutual_info_score(t, c))


def ari(y_true: ArrayLike, y_cluster: ArrayLike) -> float:
    """Adjusted Rand index (§8.6)."""
    t, c = _labels(y_true, "y_true"), _labels(y_cluster, "y_cluster")
    _same_length(t, c, "y_true and y_cluster")
    return float(adjusted_rand_score(t, c))


def osr_metrics(
    pred_known: ArrayLike,
    y_known: ArrayLike,
    score_known: ArrayLike,
    score_unknown: ArrayLike,
    prefix: str = "",
) -> dict[str, float]:
    """The threshold-free open-set metrics every OSR method is judged by.

    Returns ``{prefix + name: value}`` for acc, auroc, oscr, tnr_at_tpr95 and fpr_at_tpr95, e.g.
    ``prefix="val_"`` gives ``val_auroc``.
    """
    p, y = _labels(pred_known, "pred_known"), _labels(y_known, "y_known")
    _same_length(p, y, "pred_known and y_known")
    sk = _scores(score_known, "score_known")
    _same_length(p, sk, "pred_known and score_known")
    su = _scores(score_unknown, "score_unknown")
    tnr = tnr_at_tpr95(sk, su)
    values = {
        "acc": accuracy(y, p),
        "auroc": auroc(sk, su),
        "oscr": oscr(sk, p == y, su),
        "tnr_at_tpr95": tnr,
        "fpr_at_tpr95": 1.0 - tnr,
    }
    return {prefix + k: v for k, v in values.items()}


def clustering_metrics(y_true: ArrayLike, y_cluster: ArrayLike, prefix: str = "") -> dict[str, float]:
    """Clustering ACC, NMI and ARI as ``{prefix + "cluster_acc" | "nmi" | "ari": value}``."""
    values = {
        "cluster_acc": cluster_acc(y_true, y_cluster),
        "nmi": nmi(y_true, y_cluster),
        "ari": ari(y_true, y_cluster),
    }
    return {prefix + k: v for k, v in values.items()}


# A clustering task's readouts (contrastive_disentangling.md §6.1): k-means on the backbone output h and
# on the feature predictor f, each scored by clustering_metrics. Metric names: <phase>_<readout>_<metric>.
READOUTS = {"backbone": "h", "feature": "f"}
CLUSTERING_METRICS = tuple(f"{r}_{m}" for r in READOUTS for m in ("nmi", "ari", "cluster_acc"))
KMEANS_SEED = 42
KMEANS_N_INIT = 10


def kmeans_clusters(features: ArrayLike, k: int, seed: int = KMEANS_SEED, n_init: int = KMEANS_N_INIT) -> np.ndarray:
    """scikit-learn KMeans on the raw features (no normalisation, no PCA): the cluster of each row."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means with k={k} needs a 2-D array of at least k rows, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("k-means features contain NaN or inf")
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x).astype(np.int64)


def kmeans_readout(outputs: dict[str, np.ndarray], y_true: ArrayLike, k: int, prefix: str = ""
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """k-means with ``k`` clusters on every readout of ``outputs`` (``h`` and ``f``), scored against the
    classes: (``{prefix}<readout>_<nmi|ari|cluster_acc>``, the clusters per readout)."""
    metrics: dict[str, float] = {}
    clusters: dict[str, np.ndarray] = {}
    for readout, key in READOUTS.items():
        clusters[readout] = kmeans_clusters(outputs[key], k)
        metrics.update(clustering_metrics(y_true, clusters[readout], prefix=f"{prefix}{readout}_"))
    return metrics, clusters


# What a ClustNet trial reports per phase (plus usage_e<i>, the share of images routed to expert i).
GATE_CLUSTERING_METRICS = ("binary_acc", "nll", "pos_cluster_acc", "neg_cluster_acc", "mean_cluster_acc",
                           "cluster_acc", "nmi", "ari", "gate_confidence")


def gate_class_counts(expert: ArrayLike, y_true: ArrayLike, n_experts: int, classes: ArrayLike) -> np.ndarray:
    """The (n_experts, len(classes)) matrix C[i, j] = number of images of ``classes[j]`` routed to
    expert i (clustnet.md §7). Every expert and every listed class has its row or column, empty or not."""
    e, t = _labels(expert, "expert"), _labels(y_true, "y_true")
    _same_length(e, t, "expert and y_true")
    cls = np.asarray(classes).reshape(-1)
    if e.min() < 0 or e.max() >= n_experts:
        raise ValueError(f"expert ids must lie in 0..{n_experts - 1}")
    column = {int(c): j for j, c in enumerate(cls)}
    if len(column) != cls.size:
        raise ValueError("classes must be distinct")
    if not np.isin(t, cls).all():
        raise ValueError(f"y_true holds classes outside {cls.tolist()}")
    counts = np.zeros((n_experts, cls.size), dtype=np.int64)
    np.add.at(counts, (e.astype(np.int64), np.array([column[int(c)] for c in t], dtype=np.int64)), 1)
    return counts


def matched_accuracy(counts: ArrayLike) -> float:
    """Share of the counted images on the best one-to-one cluster-to-class matching of a count block
    (``linear_sum_assignment`` maximising the matched counts; a rectangular block matches
    min(rows, columns) pairs). NaN for an empty block."""
    c = np.asarray(counts)
    if c.ndim != 2:
        raise ValueError("counts must be a 2-D matrix")
    total = c.sum()
    if total == 0:
        return math.nan
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / total)


def gate_clustering_metrics(
    expert: ArrayLike,
    gate_probs: ArrayLike,
    log_probs: ArrayLike,
    y_true: ArrayLike,
    positive: ArrayLike,
    negative: ArrayLike,
    prefix: str = "",
) -> dict[str, float]:
    """ClustNet's evaluation (clustnet.md §7) from its outputs and the hidden classes ``y_true``.

    ``expert`` is the gate's choice per image, ``gate_probs`` π (N, M), ``log_probs`` the gated binary
    log-probabilities (N, 2; column 1 = P). Returns binary accuracy and mean NLL against t = [class ∈ P],
    the Hungarian clustering accuracy of the gate within P, within N, their mean, and over all classes,
    NMI and ARI against the classes, the gate's mean confidence (mean of max π) and ``usage_e<i>``."""
    pi = np.asarray(gate_probs, dtype=np.float64)
    lp = np.asarray(log_probs, dtype=np.float64)
    t = _labels(y_true, "y_true")
    if pi.ndim != 2 or lp.ndim != 2 or lp.shape[1] != 2 or len(pi) != len(t) or len(lp) != len(t):
        raise ValueError("gate_probs must be (N, M) and log_probs (N, 2) for the N labels")
    if not (np.isfinite(pi).all() and np.isfinite(lp).all()):
        raise ValueError("gate_probs or log_probs contain NaN or inf")
    pos, neg = np.asarray(positive).reshape(-1), np.asarray(negative).reshape(-1)
    counts = gate_class_counts(expert, t, pi.shape[1], np.concatenate([pos, neg]))
    target = np.isin(t, pos).astype(np.int64)
    values = {
        "binary_acc": accuracy(target, lp.argmax(axis=1)),
        "nll": float(-lp[np.arange(len(t)), target].mean()),
        "pos_cluster_acc": matched_accuracy(counts[:, : pos.size]),
        "neg_cluster_acc": matched_accuracy(counts[:, pos.size :]),
        "cluster_acc": matched_accuracy(counts),
        "nmi": nmi(t, expert),
        "ari": ari(t, expert),
        "gate_confidence": float(pi.max(axis=1).mean()),
    }
    values["mean_cluster_acc"] = (values["pos_cluster_acc"] + values["neg_cluster_acc"]) / 2
    values.update({f"usage_e{i}": float(n) / len(t) for i, n in enumerate(counts.sum(axis=1))})
    return {prefix + k: v for k, v in values.items()}


def open_set_f1(
    pred_known: ArrayLike,
    y_known: ArrayLike,
    pred_unknown: ArrayLike,
    num_known: int,
    score_known: ArrayLike | None = None,
    score_unknown: ArrayLike | None = None,
    threshold: float | None = None,
    prefix: str = "",
    suffix: str = "",
) -> dict[str, float]:
    """Macro-F1 over K+1 classes and the unknown-class F1 of known and unknown samples together (§8.5).

    With a ``threshold`` the protocol rule applies: unknown (= K) when the score exceeds it, else the
    closed-set prediction. Without one the predictions are taken as they are (e.g. OpenMax's native
    argmax over K+1, where K already means unknown)."""
    pk, pu = _labels(pred_known, "pred_known"), _labels(pred_unknown, "pred_unknown")
    if threshold is not None:
        if score_known is None or score_unknown is None:
            raise ValueError("a threshold needs score_known and score_unknown")
        pk = open_set_predictions(pk, score_known, threshold, num_known)
        pu = open_set_predictions(pu, score_unknown, threshold, num_known)
    y = np.concatenate([_labels(y_known, "y_known"), np.full(pu.size, num_known)])
    p = np.concatenate([pk, pu])
    values = {"macro_f1": macro_f1(y, p, num_known), "unknown_f1": unknown_f1(y, p, num_known)}
    return {prefix + k + suffix: v for k, v in values.items()}


# Ensemble diversity (adversarial.md §8): how two or more classifiers' decisions relate on the same images.


def tp_agreement(correct: ArrayLike) -> dict[str, float]:
    """TP-agreement histogram (Hacohen et al. 2020): ``correct`` is (N models, n images) of 0/1 "model
    n classifies image x correctly"; TPA(x) is the fraction of models right on x. Returns the share of
    images at each level k/N as ``{"tpa_<k>of<N>": mass}``."""
    c = np.asarray(correct)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] == 0:
        raise ValueError("correct must be (models, images) with at least one of each")
    if not np.isin(c, (0, 1)).all():
        raise ValueError("correct must hold 0/1 (or booleans)")
    models = c.shape[0]
    right = c.astype(np.int64).sum(axis=0)
    counts = np.bincount(right, minlength=models + 1)
    return {f"tpa_{k}of{models}": float(counts[k]) / c.shape[1] for k in range(models + 1)}


def independent_tpa_reference(accuracies: ArrayLike) -> dict[str, float]:
    """The TP-agreement histogram if the models erred independently with these accuracies: the
    Poisson-binomial distribution of the number of models right, as :func:`tp_agreement` names it."""
    p = np.asarray(accuracies, dtype=np.float64).reshape(-1)
    if p.size == 0 or ((p < 0) | (p > 1)).any():
        raise ValueError("accuracies must be a non-empty list of values in [0, 1]")
    dist = np.array([1.0])
    for q in p:  # convolve one Bernoulli(q) at a time
        dist = np.concatenate([dist * (1 - q), [0.0]]) + np.concatenate([[0.0], dist * q])
    return {f"tpa_{k}of{p.size}": float(v) for k, v in enumerate(dist)}


def disagreement_rate(pred_a: ArrayLike, pred_b: ArrayLike) -> float:
    """Share of images on which two classifiers predict different classes."""
    a, b = _labels(pred_a, "pred_a"), _labels(pred_b, "pred_b")
    _same_length(a, b, "pred_a and pred_b")
    return float(np.mean(a != b))


def error_correlation(pred_a: ArrayLike, pred_b: ArrayLike, y_true: ArrayLike) -> dict[str, float]:
    """``phi``: the Pearson correlation of the two 0/1 error indicators (NaN when either is constant), and
    ``yule_q`` = (n11·n00 − n10·n01)/(n11·n00 + n10·n01) from the 2×2 table of errors (NaN when 0/0)."""
    a, b, y = _labels(pred_a, "pred_a"), _labels(pred_b, "pred_b"), _labels(y_true, "y_true")
    _same_length(a, b, "pred_a and pred_b")
    _same_length(a, y, "pred_a and y_true")
    ea, eb = (a != y), (b != y)
    n11, n00 = int(np.sum(ea & eb)), int(np.sum(~ea & ~eb))
    n10, n01 = int(np.sum(ea & ~eb)), int(np.sum(~ea & eb))
    phi = math.nan
    if 0 < ea.sum() < ea.size and 0 < eb.sum() < eb.size:
        phi = float(np.corrcoef(ea.astype(np.float64), eb.astype(np.float64))[0, 1])
    den = n11 * n00 + n10 * n01
    yule = (n11 * n00 - n10 * n01) / den if den else math.nan
    return {"phi": phi, "yule_q": float(yule)}


def jensen_shannon(p_a: ArrayLike, p_b: ArrayLike) -> np.ndarray:
    """Per-image JSD(p_a, p_b) = H(½(p_a + p_b)) − ½(H(p_a) + H(p_b)) in nats, for (n, K) rows of
    class probabilities: the two-member ensemble's disagreement score (0 = identical)."""
    a, b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError("p_a and p_b must be (n, K) arrays of the same shape")

    def entropy(p: np.ndarray) -> np.ndarray:
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)

    return np.maximum(entropy((a + b) / 2) - (entropy(a) + entropy(b)) / 2, 0.0)
