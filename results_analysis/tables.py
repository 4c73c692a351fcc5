"""Ray Tune experiment folder -> one tidy table -> mean ± std per configuration (protocol.md §7); the
configs ranked on validation (the one rule for "best" that the search's report uses too).

The tidy table has one row per (trial, split, seed, phase, metric). Split id and seed are
columns, never parts of a name, so any aggregation is a plain group-by.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from results_analysis.catalogue import lower_is_better, sort_metrics
from results_analysis.trial_files import (
    FINAL_FILE,
    TRIAL_ERROR_KEY,
    ExperimentError,
    TrialFiles,
    config_key,
    is_number,
    last_validation_runs,
    load_trials,
    record_value,
)

__all__ = ["COLUMNS", "best_config", "curves_frame", "load_curves", "load_experiment", "rank_configs", "summarize", "trials_frame"]

COLUMNS = ["trial_id", "method", "dataset", "status", "config", "split", "seed", "phase", "metric", "value"]

def load_experiment(path: str | Path, skipped: list[str] | None = None) -> pd.DataFrame:
    """The tidy table of an experiment folder ``<storage_path>/<name>``.

    Columns: trial_id, method, dataset, status, config (canonical JSON string), split (int),
    seed (int), phase, metric, value. Finished trials contribute the records of their
    ``final_metrics.json``; stopped, errored and unscorable (a final model that could not be scored)
    trials contribute the per-run validation values of their last report in ``result.json`` (phase "val").

    A trial whose files cannot be read is left out, saying so in ``skipped`` (else a warning).
    Raises ExperimentError if the folder is missing or holds no readable trial, or a record is malformed.
    """
    return trials_frame(load_trials(path, skipped))


def trials_frame(trials: list[TrialFiles]) -> pd.DataFrame:
    """The tidy table (``load_experiment``) of trials already read."""
    rows: list[tuple[Any, ...]] = []
    for t in trials:
        key = config_key(t.config)
        head = (t.trial_id, t.method, t.dataset, t.status, key)
        if t.records is not None:
            for i, r in enumerate(t.records):
                try:
                    rows.append(
                        (
                            *head,
                            int(r["split"]),
                            int(r["seed"]),
                            str(r["phase"]),
                            str(r["metric"]),
                            record_value(r["value"]),
                        )
                    )
                except (KeyError, TypeError, ValueError) as e:
                    raise ExperimentError(
                        f"{t.folder / FINAL_FILE}: record {i} needs split, seed, phase, metric, value ({e!r})"
                    ) from None
        else:
            for split, seed, metric, value in last_validation_runs(t.results):
                rows.append((*head, split, seed, "val", metric, value))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"split": "int64", "seed": "int64", "value": "float64"})


def load_curves(path: str | Path, skipped: list[str] | None = None) -> pd.DataFrame:
    """Per-epoch validation curves from every trial's ``result.json``.

    Columns: trial_id, status, config, training_iteration, metric, value, where value is the
    top-level ``val_<metric>`` a trial reported (the mean over its splits, what the scheduler saw).
    """
    return curves_frame(load_trials(path, skipped))


def curves_frame(trials: list[TrialFiles]) -> pd.DataFrame:
    """The per-epoch validation curves (``load_curves``) of trials already read."""
    rows = []
    for t in trials:
        key = config_key(t.config)
        for i, row in enumerate(t.results):
            if row.get(TRIAL_ERROR_KEY):
                continue  # the report of an error, not of an epoch: its values are NaN stand-ins
            it = row.get("training_iteration", i + 1)
            for k, v in row.items():
                if k.startswith("val_") and is_number(v):
                    rows.append((t.trial_id, t.status, key, int(it), k[len("val_") :], float(v)))
    return pd.DataFrame(
        rows, columns=["trial_id", "status", "config", "training_iteration", "metric", "value"]
    )


def rank_configs(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Finished configs ranked by their mean **validation** ``metric``, per (method, dataset).

    Columns: method, dataset, config, val_mean, n_runs, rank (1 = best). Configs without that
    validation metric are left out. Ties go to the config with more runs, then to the smaller
    config string, so the order is deterministic.
    """
    sel = df[(df["status"] == "finished") & (df["phase"] == "val") & (df["metric"] == metric)]
    g = sel.groupby(["method", "dataset", "config"], sort=False, dropna=False)["value"]
    ranked = g.agg(val_mean=lambda v: v.mean(skipna=False), n_runs="size").reset_index()
    ascending = lower_is_better(metric)
    # NaN means last whichever the direction: a diverged config is never the best.
    ranked = ranked.sort_values(
        ["method", "dataset", "val_mean", "n_runs", "config"],
        ascending=[True, True, ascending, False, True],
        na_position="last",
        kind="mergesort",
    )
    ranked["rank"] = ranked.groupby(["method", "dataset"], dropna=False).cumcount() + 1
    return ranked.reset_index(drop=True)


def best_config(
    df: pd.DataFrame,
    metric: str = "auroc",
    phase: str = "val",
    method: str | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """The config (as a dict) of the finished trials with the best mean validation ``metric``.

    Selection reads validation metrics only (protocol §7): ``phase="test"`` raises ValueError.
    If the table holds several methods or datasets, name one with ``method``/``dataset``.
    """
    if phase != "val":
        raise ValueError(
            f"best_config selects on validation metrics only (protocol.md §7); got phase={phase!r}"
        )
    if method is not None:
        df = df[df["method"] == method]
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    ranked = rank_configs(df, metric)
    ranked = ranked[ranked["val_mean"].notna()]
    if ranked.empty:
        raise ValueError(f"no finished trial has a validation {metric!r} value")
    pairs = ranked[["method", "dataset"]].drop_duplicates()
    if len(pairs) > 1:
        names = ", ".join(f"{m}/{d}" for m, d in pairs.itertuples(index=False))
        raise ValueError(f"several method/dataset pairs ({names}): pass method= and dataset=")
    return json.loads(ranked.iloc[0]["config"])


def summarize(
    df: pd.DataFrame,
    phase: str = "test",
    rank_metric: str = "auroc",
    include_unfinished: bool = False,
) -> pd.DataFrame:
    """Mean ± std over (split, seed) runs per (method, dataset, config, metric) (protocol §7).

    Columns: method, dataset, config, metric, mean, std (sample std, ddof=1; NaN for one run),
    n_runs, n_splits, rank, then ``mean_split<k>`` per split. ``rank`` orders configs within a
    (method, dataset) by their mean validation ``rank_metric`` (never by test values); rows are
    sorted best config first. A NaN run makes the mean NaN rather than being skipped, so a
    diverged run cannot flatter a config. Unfinished (stopped/errored/unscorable) trials are left out
    unless ``include_unfinished``; they have validation values only.
    """
    sel = df[df["phase"] == phase]
    if not include_unfinished:
        sel = sel[sel["status"] == "finished"]
    keys = ["method", "dataset", "config", "metric"]
    out_cols = [*keys, "mean", "std", "n_runs", "n_splits", "rank"]
    if sel.empty:
        return pd.DataFrame(columns=out_cols)

    g = sel.groupby(keys, sort=False, dropna=False)["value"]
    summary = g.agg(
        mean=lambda v: v.mean(skipna=False),
        std=lambda v: v.std(ddof=1, skipna=False),
        n_runs="size",
    ).reset_index()
    n_splits = sel.groupby(keys, sort=False, dropna=False)["split"].nunique().rename("n_splits")
    summary = summary.merge(n_splits.reset_index(), on=keys)

    per_split = (
        sel.groupby([*keys, "split"], dropna=False)["value"]
        .agg(lambda v: v.mean(skipna=False))
        .unstack("split")
    )
    per_split.columns = [f"mean_split{int(s)}" for s in per_split.columns]
    summary = summary.merge(per_split.reset_index(), on=keys, how="left")

    ranked = rank_configs(df, rank_metric)[["method", "dataset", "config", "rank"]]
    summary = summary.merge(ranked, on=["method", "dataset", "config"], how="left")
    # Configs with no finished validation value rank after every ranked one.
    summary["rank"] = summary["rank"].astype("Int64")
    order = {m: i for i, m in enumerate(sort_metrics(list(summary["metric"].unique())))}
    summary = summary.assign(_m=summary["metric"].map(order)).sort_values(
        ["method", "dataset", "rank", "config", "_m"], na_position="last", kind="mergesort"
    )
    split_cols = sorted((c for c in summary.columns if c.startswith("mean_split")), key=lambda c: int(c[10:]))
    return summary[[*out_cols, *split_cols]].reset_index(drop=True)


