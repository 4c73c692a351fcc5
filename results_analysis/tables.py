"""Ray Tune experiment folder -> one tidy table -> mean ± std per configuration (protocol.md §7).

The tidy table has one row per (trial, split, seed, phase, metric). Split id and seed are
columns, never parts of a name, so any aggregation is a plain group-by.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from results_analysis.catalogue import COMPANION_PREFIXES, is_percent, lower_is_better

__all__ = [
    "COLUMNS",
    "ExperimentError",
    "best_config",
    "config_key",
    "format_mean_std",
    "load_curves",
    "load_experiment",
    "rank_configs",
    "summarize",
    "to_csv",
    "to_markdown",
]

COLUMNS = ["trial_id", "method", "dataset", "status", "config", "split", "seed", "phase", "metric", "value"]

FINAL_FILE = "final_metrics.json"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
# Tune's files of a trial it ended as errored, and the trial's own (trainables/trial.py): an exception of
# the trial's code ends it without Tune seeing an error, so that it is not retried.
TRIAL_ERROR_FILE = "trial_error.txt"
ERROR_FILES = ("error.txt", "error.pkl", TRIAL_ERROR_FILE)
# The key of a trial's last report when its own code raised: the one-line reason.
TRIAL_ERROR_KEY = "trial_error"
# final_metrics.json "status": tested, or a final model the method cannot score (no metric, a "reason").
FINISHED = "finished"
UNSCORABLE = "unscorable"

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
_RUN_KEY = re.compile(r"^split(\d+)(?:_seed(\d+))?$")

# protocol.md §7 ``final_train_fraction``, recorded at the top of every open-set final_metrics.json: runs
# train on the 80% partition the validation hold-out leaves; a final re-run may train on all known-class
# training images (1.0), as the published numbers were produced. Its validation knowns are then trained
# on, so it reports no validation number and only the test metrics nothing chosen on validation enters.
TRAIN_FRACTION_KEY = "final_train_fraction"
PROTOCOL_TRAIN_FRACTION = 0.8
ALL_KNOWN_TRAIN_FRACTION = 1.0
FINAL_TRAIN_FRACTIONS = (PROTOCOL_TRAIN_FRACTION, ALL_KNOWN_TRAIN_FRACTION)
# What such a run reports (protocol.md §7): accuracy, AUROC (of every score), OSCR, TNR/FPR@TPR95.
THRESHOLD_FREE_METRICS = frozenset({"acc", "acc_full", "auroc", "oscr", "tnr_at_tpr95", "fpr_at_tpr95"})


def is_threshold_free(metric: str) -> bool:
    """Whether ``metric`` (without its phase prefix) needs nothing chosen on validation: a metric of
    THRESHOLD_FREE_METRICS or a secondary score's AUROC (``auroc_<score>``), also a companion's
    (``base_``) and its paired difference (``delta_``). Macro-F1, thresholds, diagnostics: no."""
    for prefix in COMPANION_PREFIXES:
        metric = metric.removeprefix(prefix)
    return metric in THRESHOLD_FREE_METRICS or metric.startswith("auroc_")


class ExperimentError(ValueError):
    """The folder is not a readable experiment; the message names the file and the problem."""


@dataclass
class _Trial:
    folder: Path
    trial_id: str
    status: str
    method: str | None
    dataset: str | None
    config: dict[str, Any]
    records: list[dict[str, Any]] | None  # from final_metrics.json; None when the trial did not finish
    results: list[dict[str, Any]] = field(default_factory=list)  # result.json, one dict per report


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExperimentError(f"cannot read {path}: {e}") from None


def _read_result_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # A trial killed mid-write leaves a truncated last line; the earlier epochs are intact.
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def config_key(config: dict[str, Any]) -> str:
    """Canonical JSON of a config, so that equal configs compare and group equal."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def _load_trial(folder: Path) -> _Trial:
    final_path = folder / FINAL_FILE
    params_path = folder / PARAMS_FILE
    params = _read_json(params_path) if params_path.is_file() else {}
    if not isinstance(params, dict):
        raise ExperimentError(f"{params_path}: expected a JSON object")
    results = _read_result_lines(folder / RESULT_FILE)

    if final_path.is_file():
        final = _read_json(final_path)
        if not isinstance(final, dict) or not isinstance(final.get("records"), list):
            raise ExperimentError(f"{final_path}: expected a JSON object with a 'records' list")
        config = final.get("config", params)
        fraction = final.get(TRAIN_FRACTION_KEY)
        if isinstance(config, dict) and fraction is not None and fraction != PROTOCOL_TRAIN_FRACTION:
            # Part of the group key, so its numbers never share a mean with the 80% runs' (an unfinished
            # trial has it in params.json already).
            config = {**config, TRAIN_FRACTION_KEY: fraction}
        status = str(final.get("status", FINISHED))
        return _Trial(
            folder=folder,
            trial_id=str(final.get("trial_id") or _trial_id_from(results, folder)),
            status=status,
            method=final.get("method", params.get("method")),
            dataset=final.get("dataset", params.get("dataset")),
            config=config if isinstance(config, dict) else {},
            # An unscorable final model has no test metric: like a stopped trial it contributes its last
            # validation values, under its own status, which no summary averages in by default.
            records=final["records"] if status == FINISHED else None,
            results=results,
        )

    # No final file: the scheduler stopped it, it errored, or it is still running / was
    # interrupted. Only an error file tells these apart.
    errored = any((folder / name).exists() for name in ERROR_FILES)
    return _Trial(
        folder=folder,
        trial_id=_trial_id_from(results, folder),
        status="errored" if errored else "stopped",
        method=params.get("method"),
        dataset=params.get("dataset"),
        config=params,
        records=None,
        results=results,
    )


def _trial_id_from(results: list[dict[str, Any]], folder: Path) -> str:
    for row in reversed(results):
        if row.get("trial_id"):
            return str(row["trial_id"])
    return folder.name


def _trial_folders(path: Path) -> list[Path]:
    if not path.exists():
        raise ExperimentError(f"{path}: no such folder")
    if not path.is_dir():
        raise ExperimentError(f"{path}: not a folder")
    folders = sorted(
        p
        for p in path.iterdir()
        if p.is_dir() and ((p / FINAL_FILE).is_file() or (p / RESULT_FILE).is_file())
    )
    if not folders:
        raise ExperimentError(
            f"{path}: no trials found (a trial is a subfolder with {FINAL_FILE} or {RESULT_FILE}); "
            "pass the experiment folder <storage_path>/<name>"
        )
    return folders


class SkippedTrialWarning(UserWarning):
    """A trial whose files cannot be read (a half-written final_metrics.json) was left out."""


def _load_trials(path: str | Path, skipped: list[str] | None = None) -> list[_Trial]:
    """Every readable trial. An unreadable one is left out, with a message appended to ``skipped`` (a
    SkippedTrialWarning when None): a trial whose writer died must not hide the others. Raises
    ExperimentError when no trial is readable."""
    trials, problems = [], []
    for folder in _trial_folders(Path(path)):
        try:
            trials.append(_load_trial(folder))
        except ExperimentError as err:
            problems.append((folder.name, str(err)))
    if not trials:
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise ExperimentError(f"{path}: no readable trial ({problems[0][0]}: {problems[0][1]}{more})")
    for name, problem in problems:
        message = f"skipped trial {name}: {problem}; it is left out of the summary"
        if skipped is None:
            warnings.warn(message, SkippedTrialWarning, stacklevel=3)
        else:
            skipped.append(message)
    # An experiment is normally one method on one dataset. If params.json of an unfinished
    # trial does not name them, borrow them from the finished trials when those agree, so
    # that its rows group with the rest instead of under a blank name.
    known = {(t.method, t.dataset) for t in trials if t.records is not None}
    fallback = next(iter(known)) if len(known) == 1 else (None, None)
    for t in trials:
        t.method = t.method if t.method is not None else fallback[0]
        t.dataset = t.dataset if t.dataset is not None else fallback[1]
    return trials


def _last_val_runs(results: list[dict[str, Any]]) -> list[tuple[int, int, str, float]]:
    """(split, seed, metric, value) for every run of the last report that has per-run values."""
    for row in reversed(results):
        runs = _runs_of(row)
        if not runs:
            continue
        out = []
        for run_key, values in sorted(runs.items()):
            m = _RUN_KEY.match(run_key)
            if m is None or not isinstance(values, dict):
                continue
            split, seed = int(m.group(1)), int(m.group(2) or 0)
            for key, value in sorted(values.items()):
                if key.startswith("val_") and _is_number(value):
                    out.append((split, seed, key[len("val_") :], float(value)))
        if out:
            return out
    return []


def _runs_of(row: dict[str, Any]) -> dict[str, Any]:
    runs = row.get("runs")
    if isinstance(runs, dict) and runs:
        return runs
    # Also accept Ray's flattened spelling ("runs/split0_seed0/val_auroc"), as in progress.csv.
    flat: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "runs":
            flat.setdefault(parts[1], {})[parts[2]] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(value: Any) -> float:
    # JSON has no NaN; a trainable may write null for a metric it could not compute.
    return math.nan if value is None else float(value)


def load_experiment(path: str | Path, skipped: list[str] | None = None) -> pd.DataFrame:
    """The tidy table of an experiment folder ``<storage_path>/<name>``.

    Columns: trial_id, method, dataset, status, config (canonical JSON string), split (int),
    seed (int), phase, metric, value. Finished trials contribute the records of their
    ``final_metrics.json``; stopped, errored and unscorable (a final model that could not be scored)
    trials contribute the per-run validation values of their last report in ``result.json`` (phase "val").

    A trial whose files cannot be read is left out, saying so in ``skipped`` (else a warning).
    Raises ExperimentError if the folder is missing or holds no readable trial, or a record is malformed.
    """
    rows: list[tuple[Any, ...]] = []
    for t in _load_trials(path, skipped):
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
                            _value(r["value"]),
                        )
                    )
                except (KeyError, TypeError, ValueError) as e:
                    raise ExperimentError(
                        f"{t.folder / FINAL_FILE}: record {i} needs split, seed, phase, metric, value ({e!r})"
                    ) from None
        else:
            for split, seed, metric, value in _last_val_runs(t.results):
                rows.append((*head, split, seed, "val", metric, value))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"split": "int64", "seed": "int64", "value": "float64"})


def load_curves(path: str | Path, skipped: list[str] | None = None) -> pd.DataFrame:
    """Per-epoch validation curves from every trial's ``result.json``.

    Columns: trial_id, status, config, training_iteration, metric, value, where value is the
    top-level ``val_<metric>`` a trial reported (the mean over its splits, what the scheduler saw).
    """
    rows = []
    for t in _load_trials(path, skipped):
        key = config_key(t.config)
        for i, row in enumerate(t.results):
            if row.get(TRIAL_ERROR_KEY):
                continue  # the report of an error, not of an epoch: its values are NaN stand-ins
            it = row.get("training_iteration", i + 1)
            for k, v in row.items():
                if k.startswith("val_") and _is_number(v):
                    rows.append((t.trial_id, t.status, key, int(it), k[len("val_") :], float(v)))
    return pd.DataFrame(
        rows, columns=["trial_id", "status", "config", "training_iteration", "metric", "value"]
    )


def _sort_metrics(metrics: list[str]) -> list[str]:
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
    order = {m: i for i, m in enumerate(_sort_metrics(list(summary["metric"].unique())))}
    summary = summary.assign(_m=summary["metric"].map(order)).sort_values(
        ["method", "dataset", "rank", "config", "_m"], na_position="last", kind="mergesort"
    )
    split_cols = sorted((c for c in summary.columns if c.startswith("mean_split")), key=lambda c: int(c[10:]))
    return summary[[*out_cols, *split_cols]].reset_index(drop=True)


def format_mean_std(mean: float, std: float, scale: float = 100, digits: int = 1) -> str:
    """``"93.6 ± 0.4"`` from (0.9361, 0.0042); a missing std (one run) prints as ``"93.6 ± n/a"``."""
    if mean is None or pd.isna(mean):
        return "n/a"
    m = f"{mean * scale:.{digits}f}"
    if std is None or pd.isna(std):
        return f"{m} ± n/a"
    return f"{m} ± {std * scale:.{digits}f}"


def _cell(metric: str, mean: float, std: float) -> str:
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
    metrics = _sort_metrics(list(summary["metric"].unique()))
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
            _cell(m, by_metric.at[m, "mean"], by_metric.at[m, "std"]) if m in by_metric.index else ""
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


# Post-hoc grids (crosr_openmax.md §9): one row per (split, seed, phase, cell) with that cell's metrics.
GRID_FILE = "posthoc_grid.parquet"
GRID_METRICS = ("auroc", "oscr", "tnr_at_tpr95", "macro_f1", "unknown_f1", "threshold", "macro_f1_native",
                "unknown_f1_native")


def select_posthoc_cell(grid: pd.DataFrame, sampled: str | None = None, metric: str = "auroc") -> dict[str, Any]:
    """The grid cell with the best mean **validation** ``metric`` over every (split, seed) run in ``grid``.

    A cell that could not be scored in some run (NaN) has no mean and cannot be chosen. Returns
    ``{"sampled", "selection", "invalid_cells", "selected", "selected_val_<metric>", "differs"}``, where
    ``sampled`` is the searched cell and ``differs`` whether the choice is another one (no ``selected``
    or ``differs`` when no cell is valid)."""
    val = grid[grid["phase"] == "val"]
    if val.empty:
        raise ValueError("the post-hoc grid has no validation rows: a cell is chosen on validation only")
    means = val.groupby("cell")[metric].agg(lambda v: v.mean(skipna=False)).dropna()
    info: dict[str, Any] = {
        "sampled": sampled,
        "selection": f"best mean validation {metric} over {val[['split', 'seed']].drop_duplicates().shape[0]} "
                     "(split, seed) runs",
        "invalid_cells": int(val["cell"].nunique() - len(means)),
    }
    if len(means):
        info["selected"] = str(means.idxmax())
        info[f"selected_val_{metric}"] = float(means.max())
        info["differs"] = info["selected"] != sampled
    return info


def posthoc_records(grid: pd.DataFrame, cell: str) -> list[dict[str, Any]]:
    """Records (split, seed, phase, metric = grid_<name>, value) of one cell, for the tidy tables."""
    rows = grid[grid["cell"] == cell]
    return [{"split": int(r["split"]), "seed": int(r["seed"]), "phase": r["phase"], "metric": f"grid_{name}",
             "value": float(r[name])}
            for r in rows.to_dict("records") for name in GRID_METRICS if name in r and not pd.isna(r[name])]
