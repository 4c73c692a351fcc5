"""Reading a finished experiment's trial folders, for the Ray end-to-end tests."""

from __future__ import annotations

import json
from pathlib import Path


def trial_dirs(experiment: Path) -> list[Path]:
    """Every trial folder of an experiment (Tune writes params.json into each)."""
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").exists())


def results(trial: Path) -> list[dict]:
    """The trial's reports, one dict per epoch, from result.json."""
    return [json.loads(ln) for ln in (trial / "result.json").read_text().splitlines() if ln.strip()]
