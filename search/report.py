"""The end of an experiment: every trial's end state, the best config chosen on validation, its test
metrics as mean ± std over (split, seed) runs, and the YAML that re-runs it."""

from __future__ import annotations

import json
import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from ray import tune

from methods import get_method
from methods.posthoc_selection import posthoc_records, select_posthoc_cell
from methods.presets import setting_line
from results_analysis.catalogue import COMPANION_PREFIXES, is_percent
from results_analysis.tables import rank_configs, summarize
from results_analysis.trial_files import (
    GRID_FILE,
    PROTOCOL_TRAIN_FRACTION,
    TRAIN_FRACTION_KEY,
    TRIAL_ERROR_KEY,
    UNSCORABLE,
    config_key,
)
from search import storage

# A trial's end states, in the summary's order; an experiment with RESUMABLE ones was interrupted.
RESUMABLE = ("interrupted", "not started")
STATUSES = ("finished", "pruned", "errored", "unscorable", *RESUMABLE)


@dataclass
class TrialOutcome:
    trial_id: str
    path: Path
    # finished | pruned (stopped early by the scheduler) | errored | unscorable (its final model could not be
    # scored: a result, not a crash) | interrupted | not started
    status: str
    value: float | None  # last reported objective
    reason: str = ""
    final: dict[str, Any] | None = None
    epochs: int = 0  # epochs trained (not Tune's training_iteration: a failed trial's last report is no epoch)
    restarts: int = 0  # times Tune restarted it from a checkpoint after its worker or node died

    def line(self, metric: str) -> str:
        value = f"{metric} {self.value:.4g}" if isinstance(self.value, (int, float)) else f"{metric} —"
        text = f"  {self.trial_id:<20} {self.status:<11} {value:<28} {self.epochs:>3} {'epoch' if self.epochs == 1 else 'epochs'}"
        if self.restarts:
            text += f", restarted {self.restarts}×"
        return text + (f"  ({self.reason})" if self.reason else "")


@dataclass
class Summary:
    method: str
    dataset: str
    metric: str
    outcomes: list[TrialOutcome]
    chosen: list[TrialOutcome] = field(default_factory=list)  # the trial(s) whose runs make up the result
    # posthoc per chosen set: table(), render() and export_yaml() ask for it several times each.
    _posthoc: dict[tuple[Path, ...], dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def config(self) -> dict[str, Any]:
        return self.chosen[0].final["config"] if self.chosen else {}

    @property
    def posthoc(self) -> dict[str, Any]:
        """The post-hoc cell re-chosen on validation over the grids of every chosen run together (a
        re-run trains one trial per (split, seed): a per-trial choice would be per split)."""
        key = tuple(o.path for o in self.chosen)
        if key not in self._posthoc:
            self._posthoc[key] = self._select_posthoc()
        return self._posthoc[key]

    @property
    def final_train_fraction(self) -> float | None:
        """The fraction of the known training images every chosen run trained on (protocol.md §7; None
        for tasks without one). Runs at different fractions never share a mean: that raises."""
        found = {o.final.get(TRAIN_FRACTION_KEY) for o in self.chosen}
        if len(found) > 1:
            raise ValueError(f"the chosen runs mix {TRAIN_FRACTION_KEY} {', '.join(sorted(map(str, found)))}: "
                             "their numbers cannot be averaged together")
        return next(iter(found), None)

    def _select_posthoc(self) -> dict[str, Any]:
        grids = [pd.read_parquet(o.path / GRID_FILE) for o in self.chosen if (o.path / GRID_FILE).exists()]
        if not grids:
            # A re-run on all known training images scores one cell, fixed from the 80% runs: no grid.
            fixed = self.chosen[0].final.get("posthoc", {}) if self.chosen else {}
            return dict(fixed) if fixed.get("fixed") else {}
        grid = pd.concat(grids, ignore_index=True)
        info = select_posthoc_cell(grid, self.chosen[0].final.get("posthoc", {}).get("sampled"))
        if "selected" in info:
            info["records"] = posthoc_records(grid, info["selected"])
        return info

    def table(self, phase: str) -> pd.DataFrame:
        """Mean ± std over the chosen runs, one row per metric (results_analysis does the arithmetic)."""
        _ = self.final_train_fraction  # raises if the chosen runs trained at different fractions
        posthoc = self.posthoc
        records = [r for o in self.chosen for r in o.final["records"] if not r["metric"].startswith("grid_")]
        records += posthoc.get("records", [])
        rows = [{**r, "method": self.method, "dataset": self.dataset, "config": config_key(self.config),
                 "status": "finished", "trial_id": "chosen"}
                for r in records if r["phase"] == phase]
        if not rows:
            return pd.DataFrame()
        return summarize(pd.DataFrame(rows), phase=phase).set_index("metric")


def _saved_trials(experiment: Path) -> dict[str, Any]:
    """Tune's trials by trial folder name, as its saved experiment state records them. On Ctrl+C Tune
    saves its state and only then stops the trials it was running, rewriting their status in memory
    (what the ResultGrid holds) as if they had ended: the saved state still says which were running
    (interrupted) and which never started, and is what --resume continues from."""
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)  # it warns of every trial that never started: the summary says so
    try:
        return {Path(t.path).name: t for t in tune.ExperimentAnalysis(str(experiment)).trials}
    finally:
        analysis_log.setLevel(level)


def collect(grid: tune.ResultGrid, metric: str, mode: str, max_epochs: int,
            local_copy: Path | None = None) -> list[TrialOutcome]:
    """Every trial's end state; ``local_copy`` is where a remote experiment folder was copied to."""
    outcomes = []
    tune_trials = _saved_trials(local_copy if local_copy is not None else Path(grid.experiment_path))
    for result in grid:
        path = local_copy / Path(result.path).name if local_copy is not None else Path(result.path)
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or path.name
        final_file = path / "final_metrics.json"
        final = json.loads(final_file.read_text()) if final_file.exists() else None
        value = metrics.get(metric)
        epochs = int(metrics.get("epoch", metrics.get("training_iteration", 0)))
        tune_trial = tune_trials.get(path.name)
        restarts = int(getattr(getattr(tune_trial, "run_metadata", None), "num_failures", 0) or 0)
        if metrics.get(TRIAL_ERROR_KEY):
            # The trial's own code failed; it ended itself without a Tune error, so every failure Tune
            # counted was a lost worker or node it restarted after.
            status, reason = "errored", str(metrics[TRIAL_ERROR_KEY])
        elif result.error is not None:
            lines = [ln for ln in str(result.error).strip().splitlines() if ln.strip()]
            status, reason = "errored", lines[-1] if lines else "error"
            restarts = max(restarts - 1, 0)  # the failure that ended it is not a restart
        elif tune_trial is not None and tune_trial.status in ("PENDING", "RUNNING", "PAUSED"):
            status, reason = ("interrupted", "") if epochs else ("not started", "")
        elif final is not None and final.get("status") == UNSCORABLE:
            status, reason = "unscorable", str(final.get("reason", ""))
        elif final is not None and epochs >= max_epochs:
            status, reason = "finished", ""
        else:
            status, reason = "pruned", "stopped early by the scheduler"
        outcomes.append(TrialOutcome(trial_id, path, status, value, reason=reason,
                                     final=final if status == "finished" else None, epochs=epochs, restarts=restarts))
    return outcomes


def choose_best(outcomes: list[TrialOutcome], metric: str) -> TrialOutcome | None:
    """Best finished trial by its last validation objective ``metric`` (test metrics are never looked
    at), ranked by the one rule the analysis uses (results_analysis/tables.py ``rank_configs``: the
    metric's direction, NaN last, ties to the earlier trial); never an errored or unscorable one,
    whatever it reported."""
    finished = [o for o in outcomes if o.status == "finished" and o.value is not None and math.isfinite(o.value)]
    if not finished:
        return None
    # One row per trial, each its own "config" (its position): the last report's objective is already
    # the mean over the trial's (split, seed) runs, the number the searcher compared.
    name = metric.removeprefix("val_")
    table = pd.DataFrame([{"trial_id": o.trial_id, "method": "", "dataset": "", "status": "finished",
                           "config": f"{i:09d}", "split": 0, "seed": 0, "phase": "val", "metric": name,
                           "value": float(o.value)} for i, o in enumerate(finished)])
    ranked = rank_configs(table, name)
    return finished[int(ranked.iloc[0]["config"])]


def render(summary: Summary, best_yaml: str | None) -> str:
    counts = {s: sum(o.status == s for o in summary.outcomes) for s in STATUSES}
    lines = [f"\n{summary.method} on {summary.dataset}: {len(summary.outcomes)} trials, "
             + ", ".join(f"{n} {s}" for s, n in counts.items())]
    lines += [o.line(summary.metric) for o in summary.outcomes]
    unscorable = sum(o.status == "unscorable" for o in summary.outcomes)
    method_cls = get_method(summary.method)
    if unscorable and unscorable == len(summary.outcomes):
        lines.append(f"No best config: no trial's final model could be scored ({_reasons(summary.outcomes)}); "
                     f"{method_cls.unscorable_advice}.")
        return "\n".join(lines)
    if unscorable:
        lines.append(f"{unscorable} trial{'s' if unscorable > 1 else ''} ended unscorable (the final model could not "
                     f"be scored, reasons above): {method_cls.unscorable_advice}.")
    if not summary.chosen:
        lines.append("No trial finished all its epochs: no best config.")
        return "\n".join(lines)
    lines.append(f"\nBest config (trial {', '.join(o.trial_id for o in summary.chosen[:3])}"
                 f"{' …' if len(summary.chosen) > 3 else ''}), chosen on {summary.metric}:")
    width = max(len(k) for k in summary.config)
    lines += [f"  {k:<{width}}  {v}" for k, v in summary.config.items()]
    label = setting_line(summary.chosen[0].final.get("setting", {}))
    if label:
        lines.append(f"  setting: {label}")
    fraction = summary.final_train_fraction
    if fraction is not None:
        lines.append(f"  {TRAIN_FRACTION_KEY}: {fraction:g}, {fraction_line(fraction)}")
    for phase in ("val", "test"):
        table = summary.table(phase)
        if table.empty:
            continue
        n = int(table["n_runs"].max())
        trained = "" if fraction is None else f", models trained at {TRAIN_FRACTION_KEY} {fraction:g}"
        lines.append(f"\n{phase} metrics, mean ± std over {n} (split, seed) runs [per-split means]{trained}; "
                     "rates in %:")
        split_cols = [c for c in table.columns if c.startswith("mean_split")]
        base, delta = COMPANION_PREFIXES
        lines += [f"  ({note})" for note in method_cls.report_notes(list(table.index))]
        for metric, row in table.iterrows():
            if metric.startswith(COMPANION_PREFIXES):
                continue
            per_split = "  ".join(f"s{c[10:]}={_number(metric, row[c])}" for c in split_cols)
            text = f"  {metric:<26} {_mean_std(metric, row)}"
            if f"{base}{metric}" in table.index:
                text += f"   base {_mean_std(metric, table.loc[f'{base}{metric}'])}"
            if f"{delta}{metric}" in table.index:
                text += f"   Δ {_mean_std(metric, table.loc[f'{delta}{metric}'], signed=True)}"
            lines.append(f"{text}   [{per_split}]")
    posthoc = summary.posthoc
    if posthoc.get("fixed"):
        lines.append(f"\nPost-hoc cell: {posthoc['selected']}, {posthoc['selection']}; no grid is scored.")
    elif posthoc:
        chosen = posthoc.get("selected", "none (every cell had an invalid fit)")
        lines.append(f"\nPost-hoc cell: sampled {posthoc['sampled']}; re-chosen on validation over the grid: {chosen}"
                     f" ({posthoc['invalid_cells']} invalid cells). Its metrics are the grid_* rows.")
    if best_yaml is not None:
        lines.append(f"\nBest config written to {best_yaml}")
        lines.append(f"Re-run it on every split: {rerun_command(best_yaml)}")
        if fraction == PROTOCOL_TRAIN_FRACTION:
            lines.append(f"Final models on all known training images (protocol.md §7): "
                         f"{rerun_command(best_yaml, '--final-train-fraction', '1.0')}")
    return "\n".join(lines)


def _reasons(outcomes: list[TrialOutcome]) -> str:
    """The first trial's reason; with several trials, as an example (each trial's line has its own)."""
    first = outcomes[0].reason or "no reason recorded"
    return first if len(outcomes) == 1 else f"e.g. {first}"


def rerun_command(best_yaml: str, *flags: str) -> str:
    """The command that re-trains ``best_yaml``, quoted so that it pastes into a shell as printed."""
    return shlex.join(["python", "search/run.py", "--config", best_yaml, *flags])


def fraction_line(fraction: float) -> str:
    """What a run's ``final_train_fraction`` means for the numbers it reports."""
    if fraction == PROTOCOL_TRAIN_FRACTION:
        return "trained on the protocol's 80% partition; the validation hold-out is unseen"
    return ("trained on all known training images, validation hold-out included, as the published numbers were: "
            "no validation numbers (its val_* are NaN: those images were trained on), threshold-free test "
            "metrics only, post-hoc cell fixed from the 80% runs")


def _number(metric: str, value: float, signed: bool = False) -> str:
    """``value`` of ``metric`` as the analysis shows it: a rate in percent (results_analysis/catalogue.py)."""
    sign = "+" if signed else ""
    return f"{value * 100:{sign}.2f}" if is_percent(metric) else f"{value:{sign}.4f}"


def _mean_std(metric: str, row: pd.Series, signed: bool = False) -> str:
    std = "nan" if math.isnan(row["std"]) else _number(metric, row["std"])
    return f"{_number(metric, row['mean'], signed)} ± {std}"


def export_yaml(summary: Summary, path: str) -> None:
    """Top-level keys method, dataset, config, metrics, command (and derived values for the record)."""
    metrics: dict[str, Any] = {}
    for phase in ("val", "test"):
        table = summary.table(phase)
        metrics[phase] = {
            m: {"mean": float(r["mean"]), "std": None if math.isnan(r["std"]) else float(r["std"]), "n": int(r["n_runs"])}
            for m, r in table.iterrows()
        }
    doc = {
        "method": summary.method,
        "dataset": summary.dataset,
        "config": summary.config,
        "metrics": {"objective": summary.metric, **metrics},
        "posthoc": {k: v for k, v in summary.posthoc.items() if k != "records"},
        "derived": summary.chosen[0].final.get("derived", {}),
        "setting": summary.chosen[0].final.get("setting", {}),
        "conventions": summary.chosen[0].final.get("conventions", {}),
        "command": rerun_command(path),
    }
    if summary.final_train_fraction is not None:
        # --config re-runs this file at the fraction its numbers used unless --final-train-fraction says otherwise.
        doc[TRAIN_FRACTION_KEY] = summary.final_train_fraction
    storage.write_text(path, yaml.safe_dump(doc, sort_keys=False))


def write_analysis_report(experiment: str, local: Path, metric: str, optuna_storage: str | None,
                          study_name: str | None) -> list[str]:
    """results_analysis's report (summary.csv, summary.md, the plots) of the ended experiment, written
    into its folder ``experiment``; ``local`` is that folder here (a remote one's mirror, whose files
    are then copied up). Returns the lines to print. Never raises: the search's results are already
    printed and exported, and the report can be written again from the folder, so a failure is one
    error line that says how."""
    from results_analysis.report import write_report

    skipped: list[str] = []
    try:
        report = write_report(local, metric=metric.removeprefix("val_"), optuna_storage=optuna_storage,
                              study_name=study_name, skipped=skipped)
        if storage.is_remote(experiment):
            for path in report.written:
                storage.write_bytes(storage.join(experiment, path.name), path.read_bytes())
    except Exception as err:  # a plot or file the report cannot make must not turn a search into a traceback
        text = " ".join(str(err).split()) or type(err).__name__
        name = "" if isinstance(err, storage.StorageError | ValueError | OSError) else f"{type(err).__name__}: "
        # A remote folder's mirror is gone once the search ends: no command to point at.
        hint = "" if storage.is_remote(experiment) else \
            f"; write it with: {shlex.join(['python', '-m', 'results_analysis', experiment])}"
        return [f"error: the report was not written ({name}{text}){hint}"]
    lines = [f"warning: report: {' '.join(m.split())}" for m in skipped]
    n_plots = len(report.plots)
    where = storage.join(experiment, "summary.md")
    lines.append(f"Report: {where} and {n_plots} plot{'' if n_plots == 1 else 's'} in {experiment}")
    if report.left_out:
        lines.append(f"  not drawn: {'; '.join(report.left_out)}")
    return lines
