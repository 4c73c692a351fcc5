"""One table of every metric's direction and display format (results_analysis/catalogue.py): it knows
every name a method reports, and the search CLI, the report and the analysis all rank by it."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from data import load_pool
from methods import get_method, method_names
from results_analysis import catalogue as C
from results_analysis import markdown as MD
from results_analysis import tables as T
from results_analysis.__main__ import main as analysis_main
from search.cli import objective_mode
from trainables.device_data import DataBundle
from trainables.tasks import task_splits, trial_runs

# The smallest trial of each method that still ends scorable on digits (OpenMax needs every known
# class correctly classified at least once before it can fit). Keys are the methods' own config keys.
TINY = {
    "softmax": {"epochs": 1, "batch_size": 128, "lr": 0.1, "warmup_epochs": 0, "restarts": 0},
    "openmax": {"epochs": 2, "batch_size": 32, "lr": 0.1, "warmup_epochs": 0, "restarts": 0},
    # DHRNet needs ~30 digits epochs before OpenMax can fit it (tests/test_search_openmax_e2e.py): its
    # tiny trial cannot be scored, so only its epoch reports are read (its test records are named by
    # the same OpenMaxScoring code as openmax's, which are).
    "crosr": {"epochs": 1, "batch_size": 128},
    "difair": {"epochs": 1, "batch_size": 128, "lr": 0.1, "warmup_epochs": 0, "restarts": 0},
    "adversarial": {"epochs": 1, "batch_size": 128, "lr_cls": 0.02, "lr_schedule": "cosine", "d_width": 8},
    "clustnet": {"epochs": 1, "batch_size": 64},
    "cd": {"epochs": 1, "batch_size": 128, "backbone": "cnn4_native", "lr": 1e-3},
}
# What a trial report carries besides metrics.
BOOKKEEPING = {"epoch"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def reported_names(method: str, tmp_path: Path) -> dict[str, set[str]]:
    """Every metric name a tiny digits trial of ``method`` reports: top-level and per run in its epoch
    reports, and ``<phase>_<metric>`` of its final_metrics.json records."""
    torch.set_num_threads(2)
    pool = load_pool("digits", "unused")
    bundle = DataBundle.from_pool(pool, task_splits(pool, method, [0]))
    config = {"method": method, "dataset": "digits", "splits": [0], "seeds": [0], **TINY.get(method, {"epochs": 1})}
    runs = trial_runs(config, bundle, torch.device("cpu"))
    reports = [runs.train_epoch(epoch) for epoch in range(runs.epochs)]
    epoch_names = {k for r in reports for k, v in r.items() if _is_number(v)} - BOOKKEEPING
    epoch_names |= {k for r in reports for values in r["runs"].values() for k, v in values.items() if _is_number(v)}
    if reports[-1].get("val_unscorable_runs"):
        return {"epoch": epoch_names}
    final = runs.write_final(tmp_path, "t0", reports[-1])
    return {"epoch": epoch_names, "records": {f"{r['phase']}_{r['metric']}" for r in final["records"]}}


@pytest.mark.parametrize("method", method_names())
def test_every_metric_a_method_reports_has_a_direction_and_format(method, tmp_path):
    assert method in TINY, f"give {method} a tiny digits config in TINY"
    names = reported_names(method, tmp_path)
    unknown = sorted(n for found in names.values() for n in found if C.lookup(n) is None)
    assert not unknown, f"{method} reports metrics the catalogue does not know: {unknown}"
    assert "records" in names or method == "crosr", f"the tiny {method} trial cannot be scored: give it more"
    if get_method(method).task == "osr":
        missing = [m for m in C.OSR_METRICS if f"val_{m}" not in names["epoch"]]
        missing += [f"test_{m}" for m in C.OSR_METRICS if "records" in names and f"test_{m}" not in names["records"]]
        assert not missing, f"{method} does not report {missing} (catalogue.OSR_METRICS)"


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("val_auroc", "auroc"),
        ("test_acc_full", "acc"),
        ("val_auroc_msp", "auroc"),
        ("val_auroc_sampled", "auroc"),
        ("posthoc/T=10/alpha=3/dist=euclidean/val_auroc", "auroc"),
        ("posthoc_best_val_auroc", "auroc"),
        ("grid_unknown_f1_native", "unknown_f1"),
        ("val_base_macro_f1_msp_c1", "macro_f1"),
        ("test_delta_fpr_at_tpr95", "fpr_at_tpr95"),
        ("base_train_loss", "loss"),
        ("loss_instance", "loss"),
        ("trained_on_val_oscr", "oscr"),
        ("val_backbone_nmi", "nmi"),
        ("train_usage_e3", "usage"),
        ("val_tpa_indep_1of2", "tpa"),
        ("val_nll", "nll"),
        ("val_unscorable_runs", "unscorable_runs"),
        ("posthoc_invalid_cells", "posthoc_invalid_cells"),
        ("val_openmax_invalid_fits", "openmax_invalid_fits"),
        ("val_aurco", None),
        ("radius", None),
    ],
)
def test_names_are_looked_up_through_their_qualifiers(name, base):
    assert C.base_metric(name) == base


def test_a_difference_has_its_base_metrics_direction():
    for base in C.METRICS:
        for name in (f"delta_{base}", f"val_delta_{base}", f"test_base_{base}"):
            assert C.lookup(name) == C.METRICS[base]


@pytest.mark.parametrize("metric", ["val_nll", "val_fpr_at_tpr95", "val_delta_fpr_at_tpr95", "train_loss",
                                    "val_auroc", "val_oscr", "val_mean_cluster_acc", "val_openmax_invalid_fits",
                                    "val_threshold"])
def test_the_search_and_the_analysis_rank_the_same_way(metric):
    name = metric.removeprefix("val_")
    df = pd.DataFrame(
        [("t1", "m", "d", "finished", '{"a":1}', 0, 0, "val", name, 0.2),
         ("t2", "m", "d", "finished", '{"a":2}', 0, 0, "val", name, 0.4)],
        columns=T.COLUMNS,
    )
    best = T.best_config(df, metric=name)
    assert best == ({"a": 1} if objective_mode(metric) == "min" else {"a": 2})
    assert objective_mode(metric) == ("min" if C.lookup(metric).better == C.LOWER else "max")


def _experiment(root: Path, metric: str, values: dict[str, float]) -> Path:
    """A finished ClustNet-like experiment: one trial per config, one validation value each."""
    for i, (lr, value) in enumerate(values.items()):
        folder = root / f"trial_{i}"
        folder.mkdir(parents=True)
        records = [{"split": 0, "seed": 0, "phase": phase, "metric": metric, "value": value}
                   for phase in ("val", "test")]
        final = {"trial_id": f"t{i}", "method": "clustnet", "dataset": "digits", "config": {"lr": float(lr)},
                 "status": "finished", "records": records}
        (folder / "final_metrics.json").write_text(json.dumps(final))
    return root


def test_results_analysis_ranks_lower_nll_first(tmp_path, capsys):
    root = _experiment(tmp_path / "exp", "nll", {"0.1": 0.9, "0.3": 0.2})
    assert analysis_main([str(root), "--metric", "nll", "--out", str(tmp_path / "out")]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    best = summary[summary["rank"] == 1]
    assert json.loads(best["config"].iloc[0]) == {"lr": 0.3}
    assert math.isclose(best["mean"].iloc[0], 0.2)


def test_plain_and_percent_formats_come_from_the_table():
    assert C.is_percent("grid_auroc") and C.is_percent("val_hypersphere_pct") and C.is_percent("train_usage_e0")
    assert not C.is_percent("nll") and not C.is_percent("threshold_msp") and not C.is_percent("delta_phi")
    md = MD.to_markdown(T.summarize(pd.DataFrame(
        [("t1", "m", "d", "finished", "{}", 0, 0, "val", "grid_auroc", 0.9),
         ("t1", "m", "d", "finished", "{}", 0, 0, "val", "nll", 0.25)], columns=T.COLUMNS), phase="val"))
    assert "90.0 ± n/a" in md and "0.250 ± n/a" in md


# --- an OpenMax epoch that cannot be scored still reports every metric (issue 14, item 4) ---------


def _val_keys(report: dict) -> set[str]:
    return {k for k in report if k.startswith("val_")}


def test_an_unscorable_epoch_reports_every_validation_metric_as_nan():
    torch.set_num_threads(2)
    pool = load_pool("digits", "unused")
    bundle = DataBundle.from_pool(pool, task_splits(pool, "openmax", [0]))
    # A one-epoch warm-up starts at 1e-3·lr: after the first epoch the model is barely trained and some
    # class has no correctly classified training image, so OpenMax cannot fit it; the second is scorable.
    config = {"method": "openmax", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 3,
              "warmup_epochs": 1, "restarts": 0, "lr": 0.1, "batch_size": 32, "tailsize": 10, "alpha_rank": 3}
    runs = trial_runs(config, bundle, torch.device("cpu"))
    run = runs.runs[0]
    initial = copy.deepcopy(run.method.state_dict())

    first = runs.train_epoch(0)
    assert "no valid Weibull fit for class" in first["unscorable_reason"]  # the premise
    assert first["val_unscorable_runs"] == 1

    scored = runs.train_epoch(1)
    assert math.isfinite(scored["val_oscr"]) and scored["val_unscorable_runs"] == 0
    # Nothing of this trial had been scored at the first epoch, yet it carried every validation metric a
    # scored epoch reports (the method's own scores and diagnostics too), each NaN.
    assert {f"val_{m}" for m in C.OSR_METRICS} <= _val_keys(scored)
    assert _val_keys(first) == _val_keys(scored)
    assert set(first["runs"][run.key]) == set(scored["runs"][run.key])
    for name in _val_keys(scored) - {"val_unscorable_runs"}:
        assert math.isnan(first[name]) and math.isnan(first["runs"][run.key][name]), name

    # Back to the untrained weights: unscorable again, now after a scored epoch.
    run.method.load_state_dict(copy.deepcopy(initial))
    run.weights_changed()
    again = runs.train_epoch(0)
    assert "no valid Weibull fit for class" in again["unscorable_reason"]
    assert _val_keys(again) == _val_keys(scored)
    assert set(again["runs"][run.key]) == set(scored["runs"][run.key])
    for name in _val_keys(scored) - {"val_unscorable_runs"}:
        assert math.isnan(again[name]) and math.isnan(again["runs"][run.key][name]), name
    assert math.isnan(again["posthoc_best_val_auroc"]) and again["posthoc_invalid_cells"] == 90


def test_the_search_report_shows_rates_in_percent_and_the_rest_plain(tmp_path):
    from search.report import Summary, TrialOutcome, render

    records = [{"split": s, "seed": 0, "phase": "test", "metric": m, "value": v}
               for s, values in enumerate([{"auroc": 0.9, "nll": 0.5, "delta_auroc": 0.02},
                                           {"auroc": 0.8, "nll": 0.25, "delta_auroc": 0.04}])
               for m, v in values.items()]
    final = {"config": {"lr": 0.1}, "records": records}
    summary = Summary("softmax", "digits", "val_auroc", [TrialOutcome("t0", tmp_path, "finished", 0.85, final=final)])
    summary.chosen = summary.outcomes
    line = next(ln for ln in render(summary, None).splitlines() if ln.strip().startswith("auroc"))
    assert "85.00 ± 7.07" in line and "Δ +3.00 ± 1.41" in line and "s0=90.00" in line
    line = next(ln for ln in render(summary, None).splitlines() if ln.strip().startswith("nll"))
    assert "0.3750 ± 0.1768" in line and "s1=0.2500" in line
