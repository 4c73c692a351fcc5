"""Choosing a post-hoc cell (crosr_openmax.md §9: OpenMax's tail size, alpha rank and distance, which
change scoring but not training) on validation over a grid of every cell's metrics, one row per (split,
seed, phase, cell), as a trial scores it (posthoc_grid.parquet)."""

from __future__ import annotations

from typing import Any

import pandas as pd

# The metric a cell is chosen by (and, under ``posthoc_objective: grid_best``, the search's objective).
GRID_SELECTION_METRIC = "auroc"
# The metrics of a grid row kept as a chosen cell's records.
GRID_METRICS = ("auroc", "oscr", "tnr_at_tpr95", "macro_f1", "unknown_f1", "threshold", "macro_f1_native",
                "unknown_f1_native")


def select_posthoc_cell(grid: pd.DataFrame, sampled: str | None = None, metric: str = GRID_SELECTION_METRIC) -> dict[str, Any]:
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
