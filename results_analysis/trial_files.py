"""The files a trial leaves in its folder, written and read here only: their names, the statuses and
keys inside them, the (split, seed) run keys, and reading a whole experiment folder back.

A trial folder holds Tune's params.json and result.json (one JSON object per epoch report, with the
per-run values under ``runs``) and, once the trial ended, final_metrics.json (its records: one per
(split, seed, phase, metric)), test_scores.parquet and, for methods with post-hoc cells,
posthoc_grid.parquet. Pure Python and pandas: the trainables write with these names, the analysis reads.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINAL_FILE = "final_metrics.json"
SCORES_FILE = "test_scores.parquet"
# Post-hoc grids (crosr_openmax.md §9): one row per (split, seed, phase, cell) with that cell's metrics.
GRID_FILE = "posthoc_grid.parquet"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
# The experiment folder's record of the command that started it (written by search/experiment_file.py).
EXPERIMENT_FILE = "experiment.yaml"
# final_metrics.json of an open-set trial: the name of the score its unsuffixed metrics (auroc, oscr,
# macro_f1) are of; the other scores' metrics carry the score's name as a suffix (auroc_msp).
PRIMARY_SCORE_KEY = "primary_score"
# Tune's files of a trial it ended as errored, and the trial's own (trainables/trial.py): an exception of
# the trial's code ends it without Tune seeing an error, so that it is not retried.
TRIAL_ERROR_FILE = "trial_error.txt"
ERROR_FILES = ("error.txt", "error.pkl", TRIAL_ERROR_FILE)
# The key of a trial's last report when its own code raised: the one-line reason.
TRIAL_ERROR_KEY = "trial_error"
# final_metrics.json "status": tested, or a final model the method cannot score (no metric, a "reason").
FINISHED = "finished"
UNSCORABLE = "unscorable"


# protocol.md §7 ``final_train_fraction``, recorded at the top of every open-set final_metrics.json: runs
# train on the 80% partition the validation hold-out leaves; a final re-run may train on all known-class
# training images (1.0), as the published numbers were produced. Its validation knowns are then trained
# on, so it reports no validation number and only the test metrics nothing chosen on validation enters.
TRAIN_FRACTION_KEY = "final_train_fraction"
PROTOCOL_TRAIN_FRACTION = 0.8
ALL_KNOWN_TRAIN_FRACTION = 1.0
FINAL_TRAIN_FRACTIONS = (PROTOCOL_TRAIN_FRACTION, ALL_KNOWN_TRAIN_FRACTION)

# An epoch report's per-run values, by run key (``run_key``).
RUNS_KEY = "runs"
_RUN_KEY = re.compile(r"^split(\d+)(?:_seed(\d+))?$")


def run_key(split: int, seed: int) -> str:
    """The key of one (split, seed) run in a report's ``runs`` and in checkpoints."""
    return f"split{split}_seed{seed}"


def parse_run_key(key: str) -> tuple[int, int] | None:
    """(split, seed) of ``run_key``'s key (seed 0 where an old key has none); None for another string."""
    m = _RUN_KEY.match(key)
    return None if m is None else (int(m.group(1)), int(m.group(2) or 0))


def metric_records(split: int, seed: int, phase: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """final_metrics.json records of one run's ``<phase>_<metric>`` values."""
    return [{"split": split, "seed": seed, "phase": phase, "metric": name.removeprefix(f"{phase}_"),
             "value": float(value)} for name, value in metrics.items()]


def write_final_file(trial_dir: Path, final: Mapping[str, Any]) -> None:
    """final_metrics.json, atomically: its presence marks the trial ended, and a reader never sees half."""
    tmp = trial_dir / f"{FINAL_FILE}.tmp"
    tmp.write_text(json.dumps(final, indent=1, sort_keys=True))
    tmp.replace(trial_dir / FINAL_FILE)


class ExperimentError(ValueError):
    """The folder is not a readable experiment; the message names the file and the problem."""


@dataclass
class TrialFiles:
    """One trial folder as read back."""

    folder: Path
    trial_id: str
    status: str
    method: str | None
    dataset: str | None
    config: dict[str, Any]
    records: list[dict[str, Any]] | None  # from final_metrics.json; None when the trial did not finish
    results: list[dict[str, Any]] = field(default_factory=list)  # result.json, one dict per report
    header: dict[str, Any] = field(default_factory=dict)  # final_metrics.json less its records (setting, …)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExperimentError(f"cannot read {path}: {e}") from None


def read_reports(path: Path) -> list[dict[str, Any]]:
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


def load_trial(folder: Path) -> TrialFiles:
    final_path = folder / FINAL_FILE
    params_path = folder / PARAMS_FILE
    params = _read_json(params_path) if params_path.is_file() else {}
    if not isinstance(params, dict):
        raise ExperimentError(f"{params_path}: expected a JSON object")
    results = read_reports(folder / RESULT_FILE)

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
        return TrialFiles(
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
            header={k: v for k, v in final.items() if k != "records"},
        )

    # No final file: the scheduler stopped it, it errored, or it is still running / was
    # interrupted. Only an error file tells these apart.
    errored = any((folder / name).exists() for name in ERROR_FILES)
    return TrialFiles(
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


def trial_folders(path: Path) -> list[Path]:
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


def load_trials(path: str | Path, skipped: list[str] | None = None) -> list[TrialFiles]:
    """Every readable trial. An unreadable one is left out, with a message appended to ``skipped`` (a
    SkippedTrialWarning when None): a trial whose writer died must not hide the others. Raises
    ExperimentError when no trial is readable."""
    trials, problems = [], []
    for folder in trial_folders(Path(path)):
        try:
            trials.append(load_trial(folder))
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


def last_validation_runs(results: list[dict[str, Any]]) -> list[tuple[int, int, str, float]]:
    """(split, seed, metric, value) for every run of the last report that has per-run values."""
    for row in reversed(results):
        runs = _runs_of(row)
        if not runs:
            continue
        out = []
        for run_key, values in sorted(runs.items()):
            parsed = parse_run_key(run_key)
            if parsed is None or not isinstance(values, dict):
                continue
            split, seed = parsed
            for key, value in sorted(values.items()):
                if key.startswith("val_") and is_number(value):
                    out.append((split, seed, key[len("val_") :], float(value)))
        if out:
            return out
    return []


def _runs_of(row: dict[str, Any]) -> dict[str, Any]:
    runs = row.get(RUNS_KEY)
    if isinstance(runs, dict) and runs:
        return runs
    # Also accept Ray's flattened spelling ("runs/split0_seed0/val_auroc"), as in progress.csv.
    flat: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == RUNS_KEY:
            flat.setdefault(parts[1], {})[parts[2]] = value
    return flat


def read_objective(experiment: Path) -> str | None:
    """The validation metric the experiment was searched on (its experiment.yaml ``metric``, without
    "val_"); None when the folder has no readable experiment.yaml."""
    import yaml

    try:
        doc = yaml.safe_load((Path(experiment) / EXPERIMENT_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    metric = doc.get("metric") if isinstance(doc, dict) else None
    return metric.removeprefix("val_") if isinstance(metric, str) else None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_value(value: Any) -> float:
    # JSON has no NaN; a trainable may write null for a metric it could not compute.
    return math.nan if value is None else float(value)
