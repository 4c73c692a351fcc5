"""What an open-set run is measured by (protocol.md §8): every metric of its known and unknown
outputs on validation or test, per score and per companion view, and of each post-hoc cell. Functions of
a ``SplitRun``; the metrics themselves are results_analysis/metrics.py's pure functions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from methods.base import InvalidCellError, output_views
from results_analysis.metrics import accuracy, auroc, open_set_f1, oscr, osr_metrics, threshold_at_tpr
from trainables.split_run import SplitRun


def metric_names(run: SplitRun, phase: str) -> list[str]:
    """The names ``open_set_metrics(run, phase)`` reports, for weights that cannot be scored: computed from the
    stand-in outputs the method's ``InvalidCellError`` carries, never from a value to report."""
    stand_in: dict[str, dict[str, np.ndarray]] = {}
    for part in ("known", "unknown"):
        try:
            stand_in[part] = run.evaluate(f"{phase}_{part}")
        except InvalidCellError as err:
            if err.stand_in is None:
                raise
            stand_in[part] = err.stand_in
    return list(open_set_metrics(run, phase, outputs=stand_in)[0])


def open_set_metrics(run: SplitRun, phase: str, reference: Mapping[str, np.ndarray] | None = None,
                     outputs: Mapping[str, dict[str, np.ndarray]] | None = None
                     ) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """Metrics on the balanced known/unknown sets of ``phase`` (val or test), all from one place.

    ``reference`` holds the known validation outputs that every score's macro-F1 threshold is
    chosen on (protocol.md §8.5); without it, ``phase``'s own knowns (validation itself). A
    companion view of the outputs (``<view>/<name>``, e.g. the adversarial method's in-run
    baseline) gets the same metrics as ``<phase>_<view>_<metric>``, and each of them its paired
    difference from the method's own as ``<phase>_delta_<metric>`` (method − companion). ``outputs``:
    these instead of the current weights' (``metric_names``)."""
    outputs = run.outputs(phase) if outputs is None else outputs
    labels = run.y[f"{phase}_known"].cpu().numpy()
    known, unknown = output_views(outputs["known"]), output_views(outputs["unknown"])
    references = known if reference is None else output_views(reference)
    metrics = view_metrics(run, phase, known[""], unknown[""], labels, references[""])
    for view in known.keys() - {""}:
        companion = view_metrics(run, phase, known[view], unknown[view], labels, references[view])
        for name, value in companion.items():
            metric = name.removeprefix(f"{phase}_")
            metrics[f"{phase}_{view}_{metric}"] = value
            if not metric.startswith("threshold"):
                metrics[f"{phase}_delta_{metric}"] = metrics[name] - value
    return metrics, outputs


def view_metrics(run: SplitRun, phase: str, known: Mapping[str, np.ndarray], unknown: Mapping[str, np.ndarray],
                 labels: np.ndarray, reference: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Every open-set metric of one view's known and unknown outputs, named ``<phase>_<metric>``."""
    metrics = osr_metrics(known["pred"], labels, known["score"], unknown["score"], prefix=f"{phase}_")
    for name in known:
        if not (name == "score" or name.startswith("score_")):
            continue
        if name != "score" and np.array_equal(known[name], known["score"]):
            continue  # the primary score under its own name
        suffix = "" if name == "score" else f"_{name[6:]}"
        if suffix:
            metrics[f"{phase}_auroc{suffix}"] = auroc(known[name], unknown[name])
            # The benchmark table gives every score its row (softmax's MSP beside its MLS), OSCR included.
            metrics[f"{phase}_oscr{suffix}"] = oscr(known[name], known["pred"] == labels, unknown[name])
        metrics.update(f1_metrics(run, known, unknown, labels, known[name], unknown[name], reference[name],
                                  prefix=f"{phase}_", suffix=suffix, native=name == "score"))
    metrics.update({f"{phase}_{k}": v for k, v in run.method.diagnostics(dict(known), labels).items()})
    return metrics


def cell_metrics(run: SplitRun, phase: str, outputs: Mapping[str, Mapping[str, np.ndarray]], cell: Any,
                 reference: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Open-set metrics of one post-hoc ``cell``; with ``reference`` (validation outputs, rescored
    here) also the thresholded and native macro-F1. Raises if the cell cannot be scored."""
    known, unknown = cell_scores(run, outputs, cell)
    labels = run.y[f"{phase}_known"].cpu().numpy()
    metrics = osr_metrics(outputs["known"]["pred"], labels, known["score"], unknown["score"])
    if reference is not None:
        # The cell's score and native decision over the outputs; ``pred`` stays the logits' argmax.
        known, unknown = {**outputs["known"], **known}, {**outputs["unknown"], **unknown}
        metrics.update(f1_metrics(run, known, unknown, labels, known["score"], unknown["score"],
                                  run.method.score_cell(reference, cell)["score"]))
    return metrics


def cell_scores(run: SplitRun, outputs: Mapping[str, Mapping[str, np.ndarray]], cell: Any
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``score_cell`` of the known and the unknown outputs. Raises if the cell cannot be scored."""
    return run.method.score_cell(outputs["known"], cell), run.method.score_cell(outputs["unknown"], cell)


def f1_metrics(run: SplitRun, known: Mapping[str, np.ndarray], unknown: Mapping[str, np.ndarray], labels: np.ndarray,
               score_known: np.ndarray, score_unknown: np.ndarray, score_reference: np.ndarray,
               prefix: str = "", suffix: str = "", native: bool = True) -> dict[str, float]:
    """Macro-F1 and unknown-class F1 over K+1 at τ accepting 95% of ``score_reference`` (the known
    validation images, protocol.md §8.5), τ itself, and — with ``native`` where the outputs carry
    OpenMax's own K+1 decision — the F1s of that rule."""
    num_known = len(run.split.known)
    tau = threshold_at_tpr(score_reference, 0.95)
    metrics = {f"{prefix}threshold{suffix}": tau}
    metrics.update(open_set_f1(known["pred"], labels, unknown["pred"], num_known, score_known, score_unknown, tau,
                               prefix=prefix, suffix=suffix))
    if native and "pred_native" in known:
        metrics.update(open_set_f1(known["pred_native"], labels, unknown["pred_native"], num_known,
                                   prefix=prefix, suffix="_native"))
    return metrics


def final_test_metrics(run: SplitRun, reference: Mapping[str, np.ndarray] | None
                       ) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """Test metrics of one run on the balanced sets (thresholds from ``reference``, see ``open_set_metrics``)
    plus accuracy on every known test image, and the balanced sets' outputs."""
    metrics, outputs = open_set_metrics(run, "test", reference=reference)
    full = output_views(run.evaluate("test_known_full"))
    labels = run.y["test_known_full"].cpu().numpy()
    metrics["test_acc_full"] = accuracy(labels, full[""]["pred"])
    for view in full.keys() - {""}:
        metrics[f"test_{view}_acc_full"] = accuracy(labels, full[view]["pred"])
        metrics["test_delta_acc_full"] = metrics["test_acc_full"] - metrics[f"test_{view}_acc_full"]
    return metrics, outputs


def cell_auroc(run: SplitRun, outputs: Mapping[str, Mapping[str, np.ndarray]], cell: Any) -> float:
    """Validation AUROC of one post-hoc cell (the per-epoch grid); NaN where the cell cannot be scored."""
    try:
        known, unknown = cell_scores(run, outputs, cell)
    except InvalidCellError:
        return math.nan  # an invalid Weibull fit in this cell: the cell is out, the others proceed (§7.5)
    return auroc(known["score"], unknown["score"])
