"""PNG plots of an experiment.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never
through pyplot: no GUI backend is touched and no global figure state leaks between calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    import optuna
    from matplotlib.axes import Axes

__all__ = ["ScorePanel", "plot_benchmark", "plot_gate_confusion", "plot_optuna_history", "plot_optuna_importances",
           "plot_optuna_parallel", "plot_roc_curves", "plot_score_histograms", "plot_split_metric",
           "plot_tp_agreement", "plot_val_curves"]

# One chosen config's saved test scores: (title, the rows of test_scores.parquet: split, seed,
# is_unknown and the score column, the name of that column; higher = more unknown).
ScorePanel = tuple[str, pd.DataFrame, str]

_STYLE = {"finished": "-", "stopped": "--", "errored": ":"}
# Beyond this many trials a legend hides the plot; the colours alone still separate curves.
_MAX_LEGEND = 15


def _save(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")


def plot_val_curves(curves: pd.DataFrame, path: str | Path, metric: str = "auroc") -> bool:
    """One line per trial: validation ``metric`` (mean over the trial's splits) per epoch.

    ``curves`` is :func:`results_analysis.tables.load_curves`'s table. Line style shows the
    trial status (solid finished, dashed stopped, dotted errored). Returns False, writing
    nothing, when no trial reported that metric.
    """
    sel = curves[curves["metric"] == metric]
    if sel.empty:
        return False
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    trials = list(dict.fromkeys(sel["trial_id"]))
    for trial_id in trials:
        t = sel[sel["trial_id"] == trial_id].sort_values("training_iteration")
        status = t["status"].iloc[0]
        ax.plot(
            t["training_iteration"],
            t["value"],
            linestyle=_STYLE.get(status, "-."),
            marker="." if len(t) < 30 else None,
            label=f"{trial_id} ({status})",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (training_iteration)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Validation {metric} per trial ({len(trials)} trials)")
    ax.grid(alpha=0.3)
    if len(trials) <= _MAX_LEGEND:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_split_metric(
    df: pd.DataFrame,
    configs: dict[tuple[str, str], str],
    path: str | Path,
    metric: str = "auroc",
    phase: str = "test",
) -> bool:
    """Per-split ``phase`` ``metric`` of one chosen config per (method, dataset).

    ``df`` is the tidy table; ``configs`` maps (method, dataset) to the config JSON string to
    show (the one selected on validation). Each run is a dot, each split's mean a bar, the overall
    mean a dashed line. Returns False, writing nothing, when there is nothing to plot.
    """
    panels = []
    for (method, dataset), config in configs.items():
        sel = df[
            (df["method"] == method)
            & (df["dataset"] == dataset)
            & (df["config"] == config)
            & (df["phase"] == phase)
            & (df["metric"] == metric)
            & (df["status"] == "finished")
        ]
        if not sel.empty:
            panels.append((method, dataset, sel))
    if not panels:
        return False
    fig = Figure(figsize=(max(4.0, 3.5 * len(panels)), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (method, dataset, sel) in zip(axes, panels, strict=True):
        splits = sorted(sel["split"].unique())
        means = [sel.loc[sel["split"] == s, "value"].mean() for s in splits]
        x = np.arange(len(splits))
        ax.bar(x, means, color="C0", alpha=0.4, label="split mean")
        for i, s in enumerate(splits):
            vals = sel.loc[sel["split"] == s, "value"].to_numpy()
            ax.scatter(np.full(vals.size, x[i]), vals, color="C0", s=14, zorder=3)
        overall = sel["value"].mean()
        ax.axhline(overall, color="C3", linestyle="--", label=f"mean {overall:.4f}")
        lo, hi = np.nanmin(sel["value"].to_numpy()), np.nanmax(sel["value"].to_numpy())
        if 0.0 <= lo and hi <= 1.0:
            # Bars from 0 would flatten differences of a few AUROC points into one height.
            ax.set_ylim(max(0.0, lo - 0.05), min(1.0, hi + 0.02))
        ax.set_xticks(x, [str(s) for s in splits])
        ax.set_xlabel("split")
        ax.set_ylabel(f"{phase} {metric}")
        ax.set_title(f"{method} / {dataset}: config chosen on val, {len(sel)} runs", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_tp_agreement(
    df: pd.DataFrame,
    configs: dict[tuple[str, str], str],
    path: str | Path,
    phase: str = "test",
) -> bool:
    """The TP-agreement histogram (adversarial.md §8) of one chosen config per (method, dataset): the
    share of images that k of the N models classify correctly, for the method's models, the in-run
    baseline's (``base_tpa_*``) and what independent errors at the same accuracies would give
    (``tpa_indep_*``); bars are means over the runs, whiskers their std. Mass at 0 is what no ensemble
    vote can fix; mass at 1/N…(N−1)/N is where the models disagree. Returns False, writing nothing,
    when the experiment has no TP-agreement metrics."""
    level = re.compile(r"^tpa_(\d+)of(\d+)$")
    panels = []
    for (method, dataset), config in configs.items():
        sel = df[(df["method"] == method) & (df["dataset"] == dataset) & (df["config"] == config)
                 & (df["phase"] == phase) & (df["status"] == "finished")]
        levels = sorted({m.groups() for m in map(level.match, sel["metric"]) if m}, key=lambda g: int(g[0]))
        if levels:
            panels.append((method, dataset, sel, levels))
    if not panels:
        return False
    fig = Figure(figsize=(max(4.5, 4.0 * len(panels)), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    series = (("tpa", "models"), ("base_tpa", "in-run baseline"), ("tpa_indep", "independent errors at the models' accuracies"))
    for ax, (method, dataset, sel, levels) in zip(axes, panels, strict=True):
        x = np.arange(len(levels))
        present = [(prefix, label) for prefix, label in series
                   if (sel["metric"] == f"{prefix}_{levels[0][0]}of{levels[0][1]}").any()]
        width = 0.8 / len(present)
        for i, (prefix, label) in enumerate(present):
            values = [sel.loc[sel["metric"] == f"{prefix}_{k}of{n}", "value"] for k, n in levels]
            ax.bar(x + (i - (len(present) - 1) / 2) * width, [v.mean() for v in values], width,
                   yerr=[v.std(ddof=1) if len(v) > 1 else 0.0 for v in values], label=label, color=f"C{i}",
                   capsize=2)
        ax.set_xticks(x, [f"{k}/{n}" for k, n in levels])
        ax.set_xlabel("share of models right on an image")
        ax.set_ylabel(f"share of {phase} images (known classes)")
        ax.set_title(f"{method} / {dataset}: TP-agreement, {sel['split'].nunique()} split(s)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_gate_confusion(
    panels: list[tuple[str, np.ndarray]],
    classes: list[int],
    n_positive: int,
    path: str | Path,
    title: str = "",
) -> None:
    """ClustNet's expert × class heat maps, one panel per (title, counts), column-normalised as in
    clustnet.md §7 (each class's images sum to 1 over the experts). A white line separates the first
    ``n_positive`` columns (P) from the rest (N). Drawn every epoch, so kept cheap: no per-cell text
    (the counts are in the JSON beside it) and a fixed layout instead of tight_layout."""
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    n_experts = panels[0][1].shape[0]
    height = 0.3 * n_experts + 0.9
    fig = Figure(figsize=(4.2 * cols, height * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.5 / (height * rows + 0.4), top=1 - 0.75 / (height * rows + 0.4),
                        hspace=0.55, wspace=0.15)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (label, counts) in zip(axes.flat, panels, strict=False):
        share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
        ax.imshow(share, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest")
        ax.axvline(n_positive - 0.5, color="white", linewidth=2)
        ax.set_xticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
        ax.set_yticks(range(n_experts), [f"e{i}" for i in range(n_experts)], fontsize=7)
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(f"{title}: share of each class (column) per expert (row), P | N", fontsize=9)
    _save(fig, path, dpi=72)


def plot_benchmark(
    runs: pd.DataFrame,
    published: Mapping[str, float],
    path: str | Path,
    metric_label: str = "AUROC",
) -> bool:
    """One group per benchmark row (e.g. "softmax · MLS"), in percent: each split's mean as a dot
    (coloured per split, jittered sideways per split), the row's mean over all its runs with ± the
    sample std over all runs (not over the split means), and the published number as a black star
    where ``published`` has the row.

    ``runs`` has columns row, split, seed and value (a fraction). A NaN value is not skipped: its split
    mean and the row mean become NaN and are not drawn, and the row's label counts the NaN runs, so a
    diverged run shows as a gap rather than flattering the row. Returns False, writing nothing, when
    ``runs`` is empty.
    """
    if runs.empty:
        return False
    rows = list(dict.fromkeys(runs["row"]))
    splits = sorted(runs["split"].unique())
    colour = {s: f"C{i % 10}" for i, s in enumerate(splits)}
    # Within a row's slot: split dots spread over the left part (so similar split means stay readable),
    # then the mean bar, then the published star, none drawn over another.
    offset = {s: -0.38 + 0.3 * (k / max(len(splits) - 1, 1)) for k, s in enumerate(splits)}
    x_mean, x_published = 0.08, 0.32
    fig = Figure(figsize=(max(7.0, 1.4 * len(rows) + 3.0), 4.8))
    ax = fig.add_subplot()
    labelled: set[str] = set()
    shown: list[float] = []
    tick_labels = []

    def once(label: str) -> str | None:
        # One legend entry per kind, however many rows draw it.
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for i, row in enumerate(rows):
        sel = runs[runs["row"] == row]
        values = sel["value"].to_numpy(dtype=float) * 100
        for s in sorted(sel["split"].unique()):
            split_mean = float(np.mean(sel.loc[sel["split"] == s, "value"].to_numpy(dtype=float))) * 100
            ax.scatter(i + offset[s], split_mean, color=colour[s], s=28, zorder=3,
                       label=once(f"split {s}"))
            shown.append(split_mean)
        mean = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
        ax.errorbar(i + x_mean, mean, yerr=std, fmt="_", color="0.2", markersize=26, markeredgewidth=2.5,
                    elinewidth=1.2, capsize=6, zorder=2, label=once("mean ± std over all runs"))
        if math.isfinite(mean):
            ax.annotate(f"{mean:.1f}", (i + x_mean, mean + std), xytext=(0, 5), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, color="0.2")
            shown.extend([mean - std, mean + std])
        if row in published:
            ref = float(published[row]) * 100
            ax.scatter(i + x_published, ref, marker="*", color="black", s=130, zorder=4, label=once("published"))
            shown.append(ref)
        n_nan = int(np.isnan(values).sum())
        tick_labels.append(f"{row}\nn={values.size}" + (f", {n_nan} NaN" if n_nan else ""))
    ax.set_xticks(range(len(rows)), tick_labels, fontsize=8, rotation=20 if len(rows) > 5 else 0)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    finite = [v for v in shown if math.isfinite(v)]
    if finite:
        # Percent axis around the data: from 0 it would flatten differences of a few points.
        lo, hi = min(finite), max(finite)
        pad = max(1.0, 0.08 * (hi - lo))
        # Extra room on top for the mean's text above its bar.
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + 2 * pad))
    ax.set_ylabel(f"{metric_label} (%)")
    n_splits = len(splits)
    ax.set_title(f"{metric_label} (%) per row: split means (dots, {n_splits} splits),\n"
                 "mean ± std over all runs (bar), published number (star)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    # Outside the axes: inside, it would hide whichever row sits under it.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)
    return True


def _score_runs(scores: pd.DataFrame, column: str) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(split, seed, is_unknown, score) per run that has both known and unknown images with a finite
    score; a NaN score (a run its method could not score) is left out rather than ranked."""
    runs = []
    keys = ["trial_id", "split", "seed"] if "trial_id" in scores else ["split", "seed"]
    for key, run in scores.groupby(keys, sort=True):
        split, seed = int(key[-2]), int(key[-1])
        values = run[column].to_numpy(dtype=float)
        finite = np.isfinite(values)
        unknown = run["is_unknown"].to_numpy(dtype=bool)[finite]
        if unknown.any() and not unknown.all():
            runs.append((split, seed, unknown, values[finite]))
    return runs


def plot_roc_curves(panels: Sequence[ScorePanel], path: str | Path) -> bool:
    """Test ROC curves of each panel's config, one curve per (split, seed) run (colour = split, line
    style = seed), unknown as the positive class, with each run's AUROC in the legend. Returns False,
    writing nothing, when no panel has a run with both known and unknown scores."""
    from sklearn.metrics import roc_auc_score, roc_curve

    drawn = [(title, column, runs) for title, scores, column in panels
             if (runs := _score_runs(scores, column))]
    if not drawn:
        return False
    fig = Figure(figsize=(5.2 * len(drawn), 5.0))
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (title, column, runs) in zip(axes, drawn, strict=True):
        splits = sorted({r[0] for r in runs})
        seeds = sorted({r[1] for r in runs})
        for split, seed, unknown, values in runs:
            fpr, tpr, _ = roc_curve(unknown, values)
            label = f"split {split}" + (f", seed {seed}" if len(seeds) > 1 else "")
            ax.plot(fpr, tpr, color=f"C{splits.index(split) % 10}",
                    linestyle=("-", "--", ":", "-.")[seeds.index(seed) % 4],
                    label=f"{label}: AUROC {roc_auc_score(unknown, values):.3f}")
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance: AUROC 0.500")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.005)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (share of known test images called unknown)", fontsize=8)
        ax.set_ylabel("true positive rate (share of unknown test images called unknown)", fontsize=8)
        ax.set_title(f"{title}\ntest ROC of {column}, unknown = positive", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_score_histograms(panels: Sequence[ScorePanel], path: str | Path) -> bool:
    """Known vs unknown test score histograms of each panel's config, one subplot per split with its
    seeds pooled (a row per panel). Each class's bars sum to 1, so the two are comparable however
    many images each has. Returns False, writing nothing, when no split has both kinds of scores."""
    rows = []
    for title, scores, column in panels:
        by_split: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for split, _seed, unknown, values in _score_runs(scores, column):
            pooled_unknown, pooled = by_split.get(split, (np.array([], bool), np.array([])))
            by_split[split] = (np.concatenate([pooled_unknown, unknown]), np.concatenate([pooled, values]))
        if by_split:
            rows.append((title, column, sorted(by_split.items())))
    if not rows:
        return False
    cols = max(len(splits) for _, _, splits in rows)
    fig = Figure(figsize=(max(5.0, 3.6 * cols), 3.4 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (title, column, splits) in enumerate(rows):
        for ax in axes[r, len(splits):]:
            ax.set_axis_off()
        for ax, (split, (unknown, values)) in zip(axes[r], splits, strict=False):
            bins = np.histogram_bin_edges(values, bins=30)
            for is_unknown, name, colour in ((False, "known", "C0"), (True, "unknown", "C3")):
                part = values[unknown == is_unknown]
                ax.hist(part, bins=bins, weights=np.full(part.size, 1.0 / part.size), color=colour, alpha=0.45,
                        histtype="stepfilled", edgecolor=colour, label=f"{name} (n={part.size})")
            ax.set_xlabel(f"{column} (higher = more unknown)", fontsize=8)
            ax.set_ylabel("share of the class's test images", fontsize=8)
            ax.set_title(f"split {split}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        axes[r, 0].annotate(title, (0, 1), xytext=(0, 22), xycoords="axes fraction", textcoords="offset points",
                            fontsize=9, fontweight="bold", va="bottom")
    fig.suptitle("Test open-set scores, known vs unknown classes (config chosen on val; seeds pooled per split)",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return True


def _save_optuna(draw: Callable[[], Axes], path: str | Path, title: str, size: tuple[float, float],
                 xlabel: str | None = None, ylabel: str | None = None,
                 finish: Callable[[Axes], None] | None = None) -> None:
    """Runs one of Optuna's matplotlib plots (``draw`` returns its Axes), retitles it, lets ``finish``
    adjust it and saves the figure. They draw through pyplot and set the global ggplot style: the style
    is scoped to this call and the figure closed, so nothing leaks into the other plots or the caller's
    pyplot state. Their ExperimentalWarning never reaches the console."""
    import warnings

    import matplotlib
    import matplotlib.pyplot as plt
    import optuna

    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # A hyperparameter every completed trial shares gets a zero-height axis; matplotlib widens it.
        warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims", UserWarning)
        ax = draw()
        fig = ax.figure
        try:
            fig.set_size_inches(*size)
            for loc in ("left", "right"):  # Optuna's own title sits left on some plots: it would overlap
                ax.set_title("", loc=loc)
            ax.set_title(title, fontsize=10, pad=12)
            if xlabel is not None:
                ax.set_xlabel(xlabel)
            if ylabel is not None:
                ax.set_ylabel(ylabel)
            if finish is not None:
                finish(ax)
            fig.tight_layout()
            fig.savefig(path, dpi=120, format="png")
        finally:
            plt.close(fig)


def plot_optuna_history(study: optuna.Study, path: str | Path, target_name: str) -> None:
    """The study's objective per trial and the best so far (Optuna's plot: completed trials only)."""
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_optimization_history

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    _save_optuna(lambda: plot_optimization_history(study, target_name=target_name), path,
                 f"Optuna study {study.study_name!r}: {target_name} per trial and the best so far\n"
                 f"({done} of {len(trials)} trials completed; pruned and failed ones are not drawn)",
                 (8.0, 4.8), xlabel="trial number (order the study asked for it)", ylabel=target_name,
                 finish=lambda ax: ax.xaxis.set_major_locator(MaxNLocator(integer=True)))


def plot_optuna_importances(study: optuna.Study, path: str | Path, target_name: str) -> None:
    """Hyperparameter importances by fANOVA (seeded, so a report is reproducible) over completed trials."""
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_param_importances

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n_params = len({p for t in trials for p in t.params})

    def finish(ax: Axes) -> None:
        if ax.get_legend() is not None:  # one entry, the objective the title already names
            ax.get_legend().remove()

    _save_optuna(lambda: plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                target_name=target_name),
                 path, f"Hyperparameter importances for {target_name}\n"
                 f"(fANOVA over {len(trials)} completed trials; few trials make it a rough guide)",
                 (8.0, max(3.5, 0.45 * n_params + 1.8)),
                 xlabel=f"importance (share of {target_name}'s variance explained; the bars sum to 1)",
                 ylabel="hyperparameter", finish=finish)


def plot_optuna_parallel(study: optuna.Study, path: str | Path, target_name: str) -> None:
    """Parallel coordinates: one line per completed trial across its hyperparameters, coloured by the
    objective."""
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n_params = len({p for t in trials for p in t.params})

    def finish(ax: Axes) -> None:
        # Optuna's "Blues" draws the worst trial in white, invisible on the white axes; the colour bar
        # follows the lines' colour map.
        for collection in ax.collections:
            collection.set_cmap("viridis")

    _save_optuna(lambda: plot_parallel_coordinate(study, target_name=target_name), path,
                 f"Parallel coordinates of {len(trials)} completed trials, coloured by {target_name}",
                 (max(9.0, 1.5 * (n_params + 1)), 5.5), finish=finish)
