"""The benchmark table: experiments of several methods on one dataset (searches or ``--config`` re-runs)
side by side with the published numbers.

Each experiment contributes the test runs of its chosen config (rank 1 on the experiment's validation
objective: a re-run has only one config). Each of its open-set scores gets a row: AUROC, OSCR,
closed-set accuracy (every known test image) and macro-F1, mean ± std over its (split, seed) runs, the
published AUROC of that method, score and dataset (results_analysis/published.yaml) and our difference
from it, and the paired difference from the cross-entropy baseline over the same splits with
a t interval (results_analysis/paired.py). A method that is judged by another task's metrics (the
clustering methods) gets one row with its objective's test value and the published value of that metric.

Used by ``python -m results_analysis DIR1 DIR2 …`` and by the last stage of ``search/benchmark.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from results_analysis.catalogue import is_percent
from results_analysis.markdown import format_metric
from results_analysis.paired import PairedDifference, paired_difference, verdict
from results_analysis.published import PublishedNumber, find_published, load_published
from results_analysis.tables import rank_configs, trials_frame
from results_analysis.trial_files import (
    PRIMARY_SCORE_KEY,
    TRAIN_FRACTION_KEY,
    ExperimentError,
    config_key,
    load_trials,
    read_objective,
)

__all__ = ["DEFAULT_BASELINE", "BenchmarkTable", "ChosenRuns", "benchmark_table", "chosen_runs", "write_benchmark"]

# The method whose primary score every other row is paired with: the cross-entropy baseline
# (baselines.md: a method must beat a CE model trained with the same recipe).
DEFAULT_BASELINE = "softmax"
# Closed-set accuracy does not depend on the score: on every known test image where the run has it.
ACCURACY_METRICS = ("acc_full", "acc")


@dataclass(frozen=True)
class ChosenRuns:
    """One experiment's chosen config and its test records."""

    folder: Path
    method: str
    dataset: str
    objective: str  # the validation metric it was chosen on, without "val_"
    primary_score: str | None  # the open-set primary score's name (None: not an open-set method)
    setting: str  # "reduced setting: backbone small (published vgg32), …" / "reference setting"
    setting_detail: str  # every difference from the published setting
    epochs: int | None
    train_fraction: float | None
    test: pd.DataFrame  # split, seed, metric, value


# The parts of a setting every row shows (what it trains on and with what network); epochs and the train
# fraction have columns of their own, and the searched hyperparameters are counted, detailed in the CSV.
STRUCTURAL_PARTS = ("dataset", "backbone", "classifier", "input_size")
OWN_COLUMNS = ("epochs", TRAIN_FRACTION_KEY)


def _setting_text(setting: Any) -> tuple[str, str]:
    """(short, detail): the label with the structural differences and a count of the others; every
    difference as ours vs published."""
    if not isinstance(setting, dict):
        return "setting not recorded", ""
    label = str(setting.get("label", "setting not recorded"))
    differences = {k: d for k, d in (setting.get("differences") or {}).items() if isinstance(d, dict)}
    detail = "; ".join(f"{k}: ours {d.get('ours')}, published {d.get('reference')}" for k, d in differences.items())
    shown = [f"{k} {d.get('ours')} (published {d.get('reference')})" for k, d in differences.items()
             if k in STRUCTURAL_PARTS]
    others = [k for k in differences if k not in STRUCTURAL_PARTS and k not in OWN_COLUMNS]
    if others:
        shown.append("1 other value differs" if len(others) == 1 else f"{len(others)} other values differ")
    return (f"{label}: " + ", ".join(shown) if shown else label), detail


def chosen_runs(folder: str | Path, skipped: list[str] | None = None) -> ChosenRuns:
    """The rank-1 config of the experiment in ``folder`` on its own validation objective (experiment.yaml;
    the table's default when the file is missing) and that config's test records. Raises
    ExperimentError when no finished trial has test records."""
    folder = Path(folder)
    trials = load_trials(folder, skipped)
    df = trials_frame(trials)
    objective = read_objective(folder) or _default_objective(df)
    ranked = rank_configs(df, objective)
    ranked = ranked[ranked["val_mean"].notna()]
    finished = df[(df["status"] == "finished") & (df["phase"] == "test")]
    if ranked.empty:
        # A re-run on all known training images reports no validation number: its one config is the choice.
        configs = finished["config"].unique()
        if len(configs) != 1:
            raise ExperimentError(f"{folder}: no finished trial has a validation {objective!r} value to choose by")
        config, method, dataset = configs[0], *finished[["method", "dataset"]].iloc[0]
    else:
        if len(ranked[["method", "dataset"]].drop_duplicates()) > 1:
            raise ExperimentError(f"{folder}: holds several methods or datasets; pass one experiment per method")
        config, method, dataset = ranked.iloc[0][["config", "method", "dataset"]]
    test = finished[finished["config"] == config][["split", "seed", "metric", "value"]]
    if test.empty:
        raise ExperimentError(f"{folder}: the chosen config has no test metrics")
    trial = next(t for t in trials if t.status == "finished" and config_key(t.config) == config)
    header = trial.header
    setting, detail = _setting_text(header.get("setting"))
    return ChosenRuns(
        folder=folder, method=str(method), dataset=str(dataset), objective=objective,
        primary_score=header.get(PRIMARY_SCORE_KEY), setting=setting, setting_detail=detail,
        epochs=trial.config.get("epochs"), train_fraction=header.get(TRAIN_FRACTION_KEY),
        test=test.reset_index(drop=True),
    )


def _default_objective(df: pd.DataFrame) -> str:
    val = set(df.loc[df["phase"] == "val", "metric"])
    return next((m for m in ("auroc", "mean_cluster_acc", "backbone_nmi") if m in val), "auroc")


def _scores(runs: ChosenRuns, published: list[PublishedNumber]) -> list[str | None]:
    """The scores that get a row: the primary one (None), and each other score of the method that the
    published data names for this method (softmax's MSP beside its MLS)."""
    names = set(runs.test["metric"])
    listed = {p.score for p in published if p.method == runs.method and p.score not in (None, runs.primary_score)}
    return [None, *sorted(s for s in listed if f"auroc_{s}" in names)]


@dataclass(frozen=True)
class BenchmarkTable:
    rows: pd.DataFrame  # one row per (method, score): the tidy table written as benchmark.csv
    runs: pd.DataFrame  # row, split, seed, value: each run's AUROC (or objective) behind the figure
    published: dict[str, float]  # row label -> published value (fraction), for the figure
    baseline: str


def _label(method: str, score: str | None, primary: str | None) -> str:
    name = score or primary
    return f"{method} · {name.upper()}" if name else method


def _mean_std(values: pd.Series) -> tuple[float, float]:
    if values.empty:
        return math.nan, math.nan
    return float(values.mean(skipna=False)), float(values.std(ddof=1, skipna=False)) if len(values) > 1 else math.nan


def _per_run(test: pd.DataFrame, metric: str) -> dict[tuple[int, int], float]:
    sel = test[test["metric"] == metric]
    return {(int(r.split), int(r.seed)): float(r.value) for r in sel.itertuples(index=False)}


def _per_split(test: pd.DataFrame, metric: str) -> dict[tuple[int, int], float]:
    """Each split's mean over its seeds, keyed (split, 0); a NaN run makes its split's mean NaN."""
    sel = test[test["metric"] == metric]
    means = sel.groupby("split")["value"].agg(lambda v: v.mean(skipna=False))
    return {(int(split), 0): float(value) for split, value in means.items()}


def benchmark_table(experiments: Sequence[ChosenRuns], baseline: str = DEFAULT_BASELINE,
                    published: list[PublishedNumber] | None = None) -> BenchmarkTable:
    """The table of ``experiments`` (one per method and dataset)."""
    published = load_published() if published is None else published
    seen: dict[tuple[str, str], Path] = {}
    for e in experiments:
        if (e.method, e.dataset) in seen:
            raise ExperimentError(f"{seen[(e.method, e.dataset)]} and {e.folder} are both {e.method} on {e.dataset}: "
                                  "pass one experiment per method")
        seen[(e.method, e.dataset)] = e.folder
    base = {e.dataset: e for e in experiments if e.method == baseline}
    rows, runs, marks = [], [], {}
    for e in experiments:
        scores = _scores(e, published) if e.primary_score else [None]
        for score in scores:
            label = _label(e.method, score, e.primary_score)
            suffix = f"_{score}" if score else ""
            row: dict[str, Any] = {"row": label, "method": e.method, "score": score or e.primary_score or "",
                                   "dataset": e.dataset, "setting": e.setting,
                                   "setting_detail": e.setting_detail, "epochs": e.epochs,
                                   TRAIN_FRACTION_KEY: e.train_fraction,
                                   "n_runs": e.test[["split", "seed"]].drop_duplicates().shape[0],
                                   "n_splits": e.test["split"].nunique()}
            if e.primary_score:
                head = f"auroc{suffix}"
                metrics = {"auroc": head, "oscr": f"oscr{suffix}",
                           "acc": next((m for m in ACCURACY_METRICS if m in set(e.test["metric"])), "acc"),
                           "macro_f1": f"macro_f1{suffix}"}
            else:  # judged by its objective (the clustering methods)
                head = e.objective
                metrics = {e.objective: e.objective}
            row["headline_metric"] = "auroc" if e.primary_score else e.objective
            for column, metric in metrics.items():
                row[f"{column}_mean"], row[f"{column}_std"] = _mean_std(e.test.loc[e.test["metric"] == metric, "value"])
            number = find_published(published, e.method, score or e.primary_score, e.dataset,
                                    "auroc" if e.primary_score else e.objective)
            mean = row["auroc_mean"] if e.primary_score else row[f"{e.objective}_mean"]
            row.update(published_value=number.value if number else math.nan,
                       published_source=number.source if number else "",
                       published_verified=number.verified if number else None,
                       difference=mean - number.value if number else math.nan)
            if number:
                marks[label] = number.value
            reference = base.get(e.dataset)
            if e.primary_score and not (reference is e and score is None):  # not the baseline against itself
                row.update(_against_baseline(e, head, reference))
            rows.append(row)
            for (split, seed), value in _per_run(e.test, head).items():
                runs.append({"row": label, "split": split, "seed": seed, "value": value})
    return BenchmarkTable(pd.DataFrame(rows), pd.DataFrame(runs, columns=["row", "split", "seed", "value"]),
                          marks, baseline)


def _against_baseline(e: ChosenRuns, metric: str, reference: ChosenRuns | None) -> dict[str, Any]:
    """The paired difference of ``e``'s ``metric`` from the baseline's primary AUROC over their common
    splits; nothing when the two were not trained on the same fraction of the data."""
    if reference is None or reference.primary_score is None or reference.train_fraction != e.train_fraction:
        return {}
    # Per-split means: seeds of one split share it and are not independent pairs (results_analysis/paired.py).
    d: PairedDifference = paired_difference(_per_split(e.test, metric), _per_split(reference.test, "auroc"))
    return {"vs_baseline_n": d.n, "vs_baseline_mean": d.mean, "vs_baseline_ci_low": d.ci_low,
            "vs_baseline_ci_high": d.ci_high, "vs_baseline_verdict": verdict(d)}


def _pct(value: Any, metric: str = "auroc", digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value * 100:.{digits}f}" if is_percent(metric) else f"{value:.3f}"


def to_markdown(table: BenchmarkTable) -> str:
    """The table for people: percent, mean ± std, the published value and its source, the gap."""
    df = table.rows
    if df.empty:
        return "_no runs_\n"
    header = ["method · score", "dataset", "runs (splits)", "AUROC", "OSCR", "closed-set acc", "macro-F1",
              "published", "ours − published", f"vs {table.baseline} (paired, 95% t CI)", "setting"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: list[str] = []
    for r in df.to_dict("records"):
        metric = r["headline_metric"]
        if metric == "auroc":
            cells = [_cell(r, c) for c in ("auroc", "oscr", "acc", "macro_f1")]
        else:
            cells = [f"{metric}: {_cell(r, metric, metric)}", "—", "—", "—"]
        if pd.notna(r["published_value"]):
            mark = "" if r["published_verified"] else " (unverified)"
            published = f"{_pct(r['published_value'], metric)}{mark} [{len(notes) + 1}]"
            notes.append(r["published_source"])
            gap = f"{(r['difference'] * 100 if is_percent(metric) else r['difference']):+.1f}"
        else:
            published, gap = "—", "—"
        lines.append("| " + " | ".join([
            r["row"], r["dataset"], f"{r['n_runs']} ({r['n_splits']})", *cells, published, gap,
            _baseline_cell(r), f"{r['setting']}; {r['epochs']} epochs; train fraction {r[TRAIN_FRACTION_KEY]}",
        ]).replace("\n", " ") + " |")
    out = "\n".join(lines) + "\n"
    out += ("\nCells are test metrics in percent, mean ± sample std over (split, seed) runs of the config chosen "
            "on validation. The paired column is this row's AUROC minus the baseline's primary AUROC over the "
            "same splits (each split's mean over its seeds), with a Student t interval over the splits.\n")
    if notes:
        out += "\nPublished numbers:\n\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(notes, 1)) + "\n"
    return out


def _cell(row: dict[str, Any], column: str, metric: str = "auroc") -> str:
    mean, std = row.get(f"{column}_mean"), row.get(f"{column}_std")
    if mean is None or pd.isna(mean):
        return "—"
    return format_metric(metric, mean, std)


def _baseline_cell(row: dict[str, Any]) -> str:
    n = row.get("vs_baseline_n")
    if n is None or pd.isna(n):
        return "—"
    mean, lo, hi = (row[f"vs_baseline_{k}"] for k in ("mean", "ci_low", "ci_high"))
    if pd.isna(mean):
        return f"n/a ({row['vs_baseline_verdict']})"
    interval = "" if pd.isna(lo) else f" [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    return f"{mean * 100:+.1f}{interval}, n={int(n)}: {row['vs_baseline_verdict']}"


def write_benchmark(table: BenchmarkTable, out: Path) -> list[Path]:
    """benchmark.md, benchmark.csv and benchmark.png in ``out``; the paths written."""
    from results_analysis.plots import plot_benchmark

    out.mkdir(parents=True, exist_ok=True)
    md, csv, png = out / "benchmark.md", out / "benchmark.csv", out / "benchmark.png"
    md.write_text(to_markdown(table))
    table.rows.to_csv(csv, index=False)
    written = [md, csv]
    if plot_benchmark(table.runs, table.published, png):
        written.append(png)
    return written

