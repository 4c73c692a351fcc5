"""A summary table (results_analysis/tables.py ``summarize``) as Markdown and CSV for people to read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from results_analysis.catalogue import is_percent, sort_metrics
from results_analysis.trial_files import PROTOCOL_TRAIN_FRACTION, TRAIN_FRACTION_KEY, config_key

__all__ = ["format_mean_std", "format_metric", "to_csv", "to_markdown"]


def format_mean_std(mean: float, std: float, scale: float = 100, digits: int = 1) -> str:
    """``"93.6 ± 0.4"`` from (0.9361, 0.0042); a missing std (one run) prints as ``"93.6 ± n/a"``."""
    if mean is None or pd.isna(mean):
        return "n/a"
    m = f"{mean * scale:.{digits}f}"
    if std is None or pd.isna(std):
        return f"{m} ± n/a"
    return f"{m} ± {std * scale:.{digits}f}"


def format_metric(metric: str, mean: float, std: float) -> str:
    """``format_mean_std`` in the metric's own unit: percent for rates, three decimals otherwise."""
    if is_percent(metric):
        return format_mean_std(mean, std, scale=100, digits=1)
    return format_mean_std(mean, std, scale=1, digits=3)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, separators=(",", ":"), default=str)


def _config_labels(configs: list[str]) -> dict[str, str]:
    """Each config as only the keys whose values differ between ``configs``.

    Searched configs share most keys; a full config per row would bury the few that matter.
    """
    parsed = {c: json.loads(c) for c in configs}
    if len(configs) < 2 or not all(isinstance(p, dict) for p in parsed.values()):
        return {c: c for c in configs}
    keys = sorted({k for p in parsed.values() for k in p})
    # A key only some configs carry is not a difference: unfinished trials have params.json
    # (the searched keys and the experiment's own) where finished ones have the full method config.
    varying = [k for k in keys if len({config_key({"v": p[k]}) for p in parsed.values() if k in p}) > 1
               or k == TRAIN_FRACTION_KEY]  # which fraction a row's numbers used is always shown
    return {c: ", ".join(f"{k}={_short(p[k])}" for k in varying if k in p) or c for c, p in parsed.items()}


def to_markdown(summary: pd.DataFrame) -> str:
    """Markdown report of a :func:`summarize` table.

    First table: one row per (method, dataset, config), best first, cells "mean ± std" (percent
    for rate metrics), with the number of runs. Second table: per-split means of the rank-1
    config of each (method, dataset).
    """
    if summary.empty:
        return "_no runs_\n"
    metrics = sort_metrics(list(summary["metric"].unique()))
    header = ["rank", "method", "dataset", "n runs", *metrics, "config (keys that differ)"]
    labels: dict[tuple[Any, Any, str], str] = {}
    for (method, dataset), g in summary.groupby(["method", "dataset"], sort=False, dropna=False):
        for c, label in _config_labels(list(dict.fromkeys(g["config"]))).items():
            labels[(method, dataset, c)] = label
    rows = []
    groups = summary.groupby(["method", "dataset", "config"], sort=False, dropna=False)
    for (method, dataset, config), g in groups:
        by_metric = g.set_index("metric")
        cells = [
            format_metric(m, by_metric.at[m, "mean"], by_metric.at[m, "std"]) if m in by_metric.index else ""
            for m in metrics
        ]
        rank = g["rank"].iloc[0]
        n_runs = "/".join(str(n) for n in sorted(g["n_runs"].unique()))
        rows.append(
            [
                "-" if pd.isna(rank) else str(rank),
                str(method),
                str(dataset),
                n_runs,
                *cells,
                labels[(method, dataset, config)],
            ]
        )
    parts = [_md_table(header, rows)]
    if any(TRAIN_FRACTION_KEY in json.loads(c) for c in summary["config"].unique() if c.startswith("{")):
        parts.append(
            f"Rows with {TRAIN_FRACTION_KEY}=1 come from models trained on all known training images "
            "(protocol.md §7): test metrics only, threshold-free, with the post-hoc cell fixed from the 80% "
            f"runs; every other row was trained on the 80% partition ({TRAIN_FRACTION_KEY} "
            f"{PROTOCOL_TRAIN_FRACTION}). Rows are never averaged together."
        )

    split_cols = [c for c in summary.columns if c.startswith("mean_split")]
    best = summary[summary["rank"] == 1]
    if split_cols and not best.empty:
        split_rows = []
        for r in best.itertuples(index=False):
            vals = r._asdict()
            scale = 100 if is_percent(r.metric) else 1
            digits = 1 if scale == 100 else 3
            split_rows.append(
                [str(r.method), str(r.dataset), str(r.metric)]
                + ["" if pd.isna(vals[c]) else f"{vals[c] * scale:.{digits}f}" for c in split_cols]
            )
        header2 = ["method", "dataset", "metric", *(f"split {c[10:]}" for c in split_cols)]
        chosen = "\n".join(
            f"- {m} / {d}: `{c}`"
            for m, d, c in best[["method", "dataset", "config"]].drop_duplicates().itertuples(index=False)
        )
        parts.append(
            "Best config (rank 1, chosen on validation):\n\n"
            + chosen
            + "\n\nIts per-split means:\n\n"
            + _md_table(header2, split_rows)
        )
    return "\n\n".join(parts) + "\n"


def to_csv(summary: pd.DataFrame, path: str | Path) -> None:
    """Write a :func:`summarize` table as CSV (raw fractions, full precision)."""
    summary.to_csv(path, index=False)
