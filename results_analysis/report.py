"""One experiment folder's report: summary.csv, summary.md and the PNG plots, written by
``python -m results_analysis DIR`` and by ``search/run.py`` at the end of a search or ``--config`` re-run.

matplotlib, scikit-learn and Optuna are imported only once there is something to write: a search pays for
them at its end, not at its start, and bad input fails before any of them loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from results_analysis.markdown import to_csv, to_markdown
from results_analysis.tables import curves_frame, rank_configs, summarize, trials_frame
from results_analysis.trial_files import (
    FINISHED,
    PRIMARY_SCORE_KEY,
    SCORES_FILE,
    ExperimentError,
    TrialFiles,
    config_key,
    load_trials,
)

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_METRICS", "OPTUNA_FILE", "Report", "write_report"]

# The ranking metric when none is given: the first one the experiment has.
DEFAULT_METRICS = ("auroc", "mean_cluster_acc")
# The study a search keeps in its experiment folder unless --optuna-storage names another database.
OPTUNA_FILE = "optuna.db"
# Below this many completed trials parallel coordinates have no lines to tell apart.
_MIN_STUDY_TRIALS = 2
# fANOVA fits a random forest to the completed trials: over 2 of them (the demo's 16 trials with ASHA) it
# still drew confident-looking bars for 8 hyperparameters. Below this it is not drawn.
MIN_IMPORTANCE_TRIALS = 5


@dataclass
class Report:
    markdown: str  # the summary table (summary.md less its heading)
    written: list[Path]  # summary.csv and summary.md first, then the plots
    left_out: list[str] = field(default_factory=list)  # plots not drawn, each with why

    @property
    def plots(self) -> list[Path]:
        return [p for p in self.written if p.suffix == ".png"]


def write_report(
    results_dir: str | Path,
    out: str | Path | None = None,
    *,
    metric: str | None = None,
    phase: str = "test",
    include_unfinished: bool = False,
    optuna_storage: str | None = None,
    study_name: str | None = None,
    skipped: list[str] | None = None,
) -> Report:
    """Writes the report of the experiment folder ``results_dir`` into ``out`` (default: the folder).

    ``metric`` (without ``val_``) ranks configs on validation and is the one plotted; default the first
    of DEFAULT_METRICS the experiment has. ``optuna_storage`` is the study's database URL; None looks for
    the default ``optuna.db`` in ``results_dir`` (a ``--config`` re-run has none: no study plots).
    ``study_name`` None takes the database's only study, else the folder's name. Unreadable trials are
    left out with a message appended to ``skipped``.

    Raises ExperimentError, writing nothing, when the folder holds nothing to summarise or ``metric`` has
    no validation values; and when ``out`` cannot be written.
    """
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out}: exists and is not a folder")
    trials = load_trials(results_dir, skipped)
    df = trials_frame(trials)
    val_metrics = sorted(df.loc[(df["phase"] == "val") & (df["status"] == FINISHED), "metric"].unique())
    if metric is None:
        metric = next((m for m in DEFAULT_METRICS if m in val_metrics), DEFAULT_METRICS[0])
    if val_metrics and metric not in val_metrics:
        raise ExperimentError(
            f"{results_dir}: no validation {metric!r} values; pass --metric one of {', '.join(val_metrics)}"
        )
    summary = summarize(df, phase=phase, rank_metric=metric, include_unfinished=include_unfinished)
    if summary.empty:
        counts = ", ".join(f"{n} {s}" for s, n in df.drop_duplicates("trial_id")["status"].value_counts().items())
        hint = " (try --phase val --include-unfinished)" if not include_unfinished else ""
        raise ExperimentError(f"{results_dir}: no {phase} metrics to summarise [{counts or 'no values'}]{hint}")
    markdown = to_markdown(summary)
    best = _chosen_configs(df, metric)
    report = Report(markdown, [out / "summary.csv", out / "summary.md"])
    study = _open_study(results_dir, optuna_storage, study_name, report.left_out)

    # matplotlib is imported only once the input is known to be good: bad input fails fast.
    from results_analysis import plots

    try:
        out.mkdir(parents=True, exist_ok=True)
        to_csv(summary, report.written[0])
        header = f"# {results_dir.name}: {phase} metrics, mean ± std over (split, seed) runs\n\n"
        report.written[1].write_text(header + markdown)
        curves_png = out / f"val_{metric}_curves.png"
        if plots.plot_val_curves(curves_frame(trials), curves_png, metric=metric):
            report.written.append(curves_png)
        split_png = out / f"{phase}_{metric}_per_split.png"
        if plots.plot_split_metric(df, best, split_png, metric=metric, phase=phase):
            report.written.append(split_png)
        tpa_png = out / f"{phase}_tp_agreement.png"
        if plots.plot_tp_agreement(df, best, tpa_png, phase=phase):
            report.written.append(tpa_png)
        if phase == "test":  # the saved per-image scores are the test images'
            _score_plots(trials, best, out, report)
        if study is not None:
            # The study holds the searched objective, whichever metric ranks this report.
            _study_plots(study, (study.metric_names or [None])[0] or "objective value", out, report)
    except OSError as e:
        raise ExperimentError(f"cannot write reports to {out}: {e}") from None
    return report


def _chosen_configs(df: pd.DataFrame, metric: str) -> dict[tuple[str, str], str]:
    """The config chosen on validation per (method, dataset); where nothing ranks (a re-run on all known
    training images has no validation values) the finished config when it is the only one."""
    ranked = rank_configs(df, metric)
    best = {(r.method, r.dataset): r.config for r in ranked[ranked["rank"] == 1].itertuples(index=False)}
    finished = df[df["status"] == FINISHED].drop_duplicates(["method", "dataset", "config"])
    for (method, dataset), configs in finished.groupby(["method", "dataset"])["config"]:
        if (method, dataset) not in best and len(configs) == 1:
            best[(method, dataset)] = configs.iloc[0]
    return best


def _score_panels(trials: list[TrialFiles], best: dict[tuple[str, str], str]) -> tuple[list, list[str]]:
    """The saved test scores of each chosen config, as plots.ScorePanel, and why any is missing."""
    panels, missing = [], []
    for (method, dataset), config in best.items():
        chosen = [t for t in trials if t.status == FINISHED and (t.method, t.dataset) == (method, dataset)
                  and config_key(t.config) == config]
        primary = next((t.header.get(PRIMARY_SCORE_KEY) for t in chosen if t.header.get(PRIMARY_SCORE_KEY)), None)
        if primary is None:
            missing.append(f"{method} has no open-set score")
            continue
        column = f"score_{primary}"
        frames = []
        for t in chosen:
            if (t.folder / SCORES_FILE).is_file():
                frame = pd.read_parquet(t.folder / SCORES_FILE)
                if {"split", "seed", "is_unknown", column} <= set(frame.columns):
                    frames.append(frame[["split", "seed", "is_unknown", column]].assign(trial_id=t.trial_id))
        if not frames:
            missing.append(f"the chosen {method} trials have no {column} in {SCORES_FILE}")
            continue
        panels.append((f"{method} / {dataset}: config chosen on val", pd.concat(frames, ignore_index=True), column))
    return panels, missing


def _score_plots(trials: list[TrialFiles], best: dict[tuple[str, str], str], out: Path, report: Report) -> None:
    from results_analysis import plots

    panels, missing = _score_panels(trials, best)
    if not panels:
        why = "; ".join(missing) or "no config was chosen"
        report.left_out += [f"test ROC curves: {why}", f"test score histograms: {why}"]
        return
    for name, draw, what in (("test_roc.png", plots.plot_roc_curves, "test ROC curves"),
                             ("test_score_histograms.png", plots.plot_score_histograms, "test score histograms")):
        if draw(panels, out / name):
            report.written.append(out / name)
        else:
            report.left_out.append(f"{what}: no run has both known and unknown test scores")


def _open_study(results_dir: Path, storage: str | None, name: str | None,
                left_out: list[str]) -> optuna.Study | None:
    """The search's Optuna study (an ``optuna.Study``), or None for a folder without one (a ``--config``
    re-run) or a database that cannot be read, which ``left_out`` then says."""
    if storage is None:
        # Only a file that exists: opening a missing SQLite path would create an empty database there.
        if not (results_dir / OPTUNA_FILE).is_file():
            return None
        storage = f"sqlite:///{(results_dir / OPTUNA_FILE).absolute()}"
    import optuna

    try:
        names = optuna.study.get_all_study_names(storage=storage)
        if name is None:
            name = names[0] if len(names) == 1 else results_dir.name
        if name in names:
            return optuna.load_study(study_name=name, storage=storage)
        problem = f"no study {name!r} in {storage}"
    except Exception as err:  # whatever the database says, the rest of the report stands
        problem = f"cannot read {storage}: {' '.join(str(err).split())[:200]}"
    left_out.append(f"Optuna study plots: {problem}")
    return None


def _study_plots(study: optuna.Study, target_name: str, out: Path, report: Report) -> None:
    """Optuna's optimisation history, hyperparameter importances and parallel coordinates; a plot the
    study cannot support yet (too few completed trials) is left out with the reason."""
    from optuna.trial import TrialState

    from results_analysis import plots

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {p for p in {k for t in trials for k in t.params}
              if len({json.dumps(t.params.get(p), default=str) for t in trials}) > 1}
    for name, draw, what, needs in (
        ("optuna_history.png", plots.plot_optuna_history, "optimisation history", 1),
        ("optuna_importances.png", plots.plot_optuna_importances, "hyperparameter importances",
         MIN_IMPORTANCE_TRIALS),
        ("optuna_parallel_coordinates.png", plots.plot_optuna_parallel, "parallel coordinates", _MIN_STUDY_TRIALS),
    ):
        if len(trials) < needs:
            report.left_out.append(f"{what}: needs {needs} completed study trials, the study has {len(trials)}")
            continue
        if needs > 1 and not varied:
            report.left_out.append(f"{what}: the completed trials share every hyperparameter value")
            continue
        try:
            draw(study, out / name, target_name)
        except OSError:
            raise
        except Exception as err:  # Optuna's plotting of an odd study: this plot is left out
            report.left_out.append(f"{what}: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        else:
            report.written.append(out / name)
