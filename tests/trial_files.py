"""Reading a finished experiment's trial folders, for the Ray end-to-end tests."""

from __future__ import annotations

import json
from pathlib import Path

import optuna


def trial_dirs(experiment: Path) -> list[Path]:
    """Every trial folder of an experiment (Tune writes params.json into each)."""
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").exists())


def results(trial: Path) -> list[dict]:
    """The trial's reports, one dict per epoch, from result.json."""
    return [json.loads(ln) for ln in (trial / "result.json").read_text().splitlines() if ln.strip()]


def results_so_far(trial: Path) -> list[dict]:
    """The reports of a trial still running: none before result.json exists, and not a last line
    caught while it is being written."""
    try:
        lines = (trial / "result.json").read_text().splitlines()
    except OSError:
        return []
    reports = []
    for ln in lines:
        try:
            reports.append(json.loads(ln))
        except json.JSONDecodeError:
            break
    return reports


def study_trials(experiment: Path, name: str = "search") -> list[optuna.trial.FrozenTrial]:
    """The trials of the experiment's Optuna study (SQLite ``optuna.db`` in the experiment folder)."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{experiment}/optuna.db")
    return study.get_trials(deepcopy=False)
