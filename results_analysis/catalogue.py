"""Every metric osrtune reports: which way is better, and whether it is shown in percent.

One table, read by the search CLI (the objective's mode), the end-of-search report and the analysis
(ranking and formatting). A reported name is a base metric of the table wrapped in qualifiers:

- where it was measured: ``val_``/``test_``/``train_`` (phase), ``posthoc/<cell>/`` (a post-hoc grid
  cell), ``posthoc_best_`` (the best cell), ``grid_`` (the cell re-chosen on validation), ``trained_on_``
  (a validation number of a run that trained on its validation images);
- what it is a variant of: ``base_`` (the in-run baseline companion), ``delta_`` (method − companion:
  its direction is the base metric's), ``backbone_``/``feature_`` (a clustering readout);
- a suffix after the base name: the score it was computed from (``auroc_msp``, ``macro_f1_jsd``),
  ``_native`` (OpenMax's own K+1 rule), ``_full``, ``_c1``, ``_sampled``, ``usage_e<k>``, ``tpa_1of2`` …

Pure Python: no Ray, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "COMPANION_PREFIXES",
    "HIGHER",
    "LOWER",
    "METRICS",
    "NEITHER",
    "OSR_METRICS",
    "THRESHOLD_FREE_METRICS",
    "METRIC_ORDER",
    "READOUT_PREFIXES",
    "MetricInfo",
    "base_metric",
    "is_percent",
    "lookup",
    "lower_is_better",
    "is_threshold_free",
    "objective_mode",
    "sort_metrics",
]

HIGHER, LOWER, NEITHER = "higher", "lower", "neither"
Better = Literal["higher", "lower", "neither"]


@dataclass(frozen=True)
class MetricInfo:
    # NEITHER: a diagnostic with no better side (a learning rate, a threshold, a usage share). Searched
    # or ranked on anyway, it is maximised, as every unlisted number always was.
    better: Better
    percent: bool  # a fraction in [0, 1] shown × 100


def _m(better: Better, percent: bool) -> MetricInfo:
    return MetricInfo(better, percent)


# Base names. A name also matches as a prefix followed by "_" (``acc`` covers ``acc_full``, ``acc_c1``).
METRICS: dict[str, MetricInfo] = {
    # Open-set recognition (protocol.md §8), of the primary score or of ``_<score>``.
    "acc": _m(HIGHER, True),
    "auroc": _m(HIGHER, True),
    "oscr": _m(HIGHER, True),
    "tnr_at_tpr95": _m(HIGHER, True),
    "fpr_at_tpr95": _m(LOWER, True),
    "macro_f1": _m(HIGHER, True),
    "unknown_f1": _m(HIGHER, True),
    "threshold": _m(NEITHER, False),  # τ accepting 95% of the validation knowns: a score value
    # Method diagnostics (difair.md §12, crosr_openmax.md §12).
    "hypersphere_pct": _m(HIGHER, True),  # a fraction despite its name
    "openmax_invalid_fits": _m(LOWER, False),
    "openmax_tail_truncated": _m(NEITHER, False),
    "openmax_all_w_zero": _m(NEITHER, True),
    # Why an epoch has no open-set numbers (trainables/runs.py): counts.
    "unscorable_runs": _m(LOWER, False),
    "posthoc_invalid_cells": _m(LOWER, False),
    # Two-classifier ensembles (adversarial.md §8): quality, and descriptions of their diversity.
    "ensemble_gain": _m(HIGHER, True),
    "disagreement": _m(NEITHER, True),
    "tpa": _m(NEITHER, True),
    "phi": _m(NEITHER, False),
    "yule_q": _m(NEITHER, False),
    # Clustering (clustnet.md §7, contrastive_disentangling.md).
    "cluster_acc": _m(HIGHER, True),
    "nmi": _m(HIGHER, True),
    "ari": _m(HIGHER, True),
    "binary_acc": _m(HIGHER, True),
    "pos_cluster_acc": _m(HIGHER, True),
    "neg_cluster_acc": _m(HIGHER, True),
    "mean_cluster_acc": _m(HIGHER, True),
    "nll": _m(LOWER, False),
    "gate_confidence": _m(NEITHER, True),
    "usage": _m(NEITHER, True),
    # Training logs: the terms each method minimises, and what it only records.
    "loss": _m(LOWER, False),
    "ce": _m(LOWER, False),
    "adv_loss": _m(LOWER, False),  # A, minimised by the classifier pair
    "entropy": _m(HIGHER, False),  # CD's cluster-entropy term, subtracted from its loss
    "d_loss": _m(NEITHER, False),  # the adversary's own loss
    "d_acc": _m(NEITHER, True),
    "d_same_prob": _m(NEITHER, False),
    "lr": _m(NEITHER, False),
}

# What every open-set run reports for its primary score on validation and test (trainables/runs.py
# ``Run.view_metrics``); tests/test_metric_catalogue.py holds it to every registered open-set method.
OSR_METRICS = ("acc", "auroc", "oscr", "tnr_at_tpr95", "fpr_at_tpr95", "threshold", "macro_f1", "unknown_f1")

# A companion's metrics (the adversarial method's in-run baseline, ``base_``) and their paired
# differences from the method's own (``delta_``); the rest of the name is a metric as above.
COMPANION_PREFIXES = ("base_", "delta_")
# A clustering task's readouts (k-means on the backbone h or the feature predictor f).
READOUT_PREFIXES = ("backbone_", "feature_")
# Where a number was measured; none of them changes what the number is.
_PLACE_PREFIXES = ("val_", "test_", "train_", "trained_on_", "posthoc_best_", "grid_")
_PREFIXES = (*_PLACE_PREFIXES, *COMPANION_PREFIXES, *READOUT_PREFIXES)
_BY_LENGTH = sorted(METRICS, key=len, reverse=True)
_CELL = re.compile(r"^posthoc/.+/")


def base_metric(name: str) -> str | None:
    """The table's base name under ``name``'s qualifiers (see the module doc), or None if it has none."""
    name = _CELL.sub("", name)
    while prefix := next((p for p in _PREFIXES if name.startswith(p)), None):
        name = name[len(prefix):]
    return next((b for b in _BY_LENGTH if name == b or name.startswith(b + "_")), None)


def lookup(name: str) -> MetricInfo | None:
    """What the table says about a reported name, or None for a name osrtune does not report."""
    base = base_metric(name)
    return None if base is None else METRICS[base]


def lower_is_better(name: str) -> bool:
    info = lookup(name)
    return info is not None and info.better == LOWER


def objective_mode(name: str) -> str:
    """Tune's mode for ranking on ``name``: "min" where lower is better, else "max"."""
    return "min" if lower_is_better(name) else "max"


def is_percent(name: str) -> bool:
    info = lookup(name)
    return info is not None and info.percent


# What such a run reports (protocol.md §7): accuracy, AUROC (of every score), OSCR, TNR/FPR@TPR95.
THRESHOLD_FREE_METRICS = frozenset({"acc", "acc_full", "auroc", "oscr", "tnr_at_tpr95", "fpr_at_tpr95"})


def is_threshold_free(metric: str) -> bool:
    """Whether ``metric`` (without its phase prefix) needs nothing chosen on validation: a metric of
    THRESHOLD_FREE_METRICS or a secondary score's AUROC or OSCR (``auroc_<score>``, ``oscr_<score>``),
    also a companion's (``base_``) and its paired difference (``delta_``). Macro-F1, thresholds,
    diagnostics: no."""
    for prefix in COMPANION_PREFIXES:
        metric = metric.removeprefix(prefix)
    return metric in THRESHOLD_FREE_METRICS or metric.startswith(("auroc_", "oscr_"))


# Column order in reports: the protocol's main metrics first, the rest alphabetically.
METRIC_ORDER = (
    "auroc",
    "oscr",
    "acc",
    "tnr_at_tpr95",
    "fpr_at_tpr95",
    "macro_f1",
    "acc_c1",
    "acc_c2",
    "ensemble_gain",
    "disagreement",
    "phi",
    "yule_q",
    "mean_cluster_acc",
    "pos_cluster_acc",
    "neg_cluster_acc",
    "binary_acc",
    "cluster_acc",
    "nmi",
    "ari",
    "backbone_nmi",
    "backbone_ari",
    "backbone_cluster_acc",
    "feature_nmi",
    "feature_ari",
    "feature_cluster_acc",
)


def sort_metrics(metrics: list[str]) -> list[str]:
    """METRIC_ORDER first, the rest alphabetically; a companion's metric and its difference right
    after the method's own (auroc, base_auroc, delta_auroc)."""
    order = {m: i for i, m in enumerate(METRIC_ORDER)}

    def key(metric: str) -> tuple[int, str, int]:
        for rank, prefix in enumerate(COMPANION_PREFIXES, start=1):
            if metric.startswith(prefix):
                name = metric.removeprefix(prefix)
                return order.get(name, len(order)), name, rank
        return order.get(metric, len(order)), metric, 0

    return sorted(metrics, key=key)
