"""A resumed trial's progress.csv keeps the columns an earlier driver began, also when the resumed driver's
Ray instance is new and Tune copies the file back from storage only as it sets the trial's logger up."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.fs

from search.epoch_logs import epoch_loggers


class Trial:
    """What Tune's loggers read of a trial restored from a checkpoint."""

    def __init__(self, staging: Path, stored: Path) -> None:
        self.local_path = str(staging)
        self.config: dict = {}
        self.evaluated_params: dict = {}
        self.checkpoint = True
        self.storage = type("Storage", (), {"trial_fs_path": str(stored),
                                            "storage_filesystem": pyarrow.fs.LocalFileSystem()})()

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def test_a_resume_into_an_empty_staging_folder_keeps_the_csv_columns_and_each_epoch_once(tmp_path):
    stored, staging = tmp_path / "experiment" / "trial", tmp_path / "new_session" / "trial"
    stored.mkdir(parents=True)
    staging.mkdir(parents=True)  # the new Ray session's trial folder: empty
    with (stored / "progress.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["val_auroc", "training_iteration", "trial_id"])
        writer.writeheader()
        for step in (1, 2, 3):
            writer.writerow({"val_auroc": step / 10, "training_iteration": step, "trial_id": "t"})
    (stored / "result.json").write_text("".join(
        json.dumps({"training_iteration": step, "val_auroc": step / 10, "trial_id": "t"}) + "\n" for step in (1, 2, 3)))
    trial = Trial(staging, stored)
    loggers = epoch_loggers()
    for logger in loggers:
        logger.log_trial_start(trial)
    # Restored from the checkpoint of epoch 2: epoch 3 again, then 4; Tune's key order differs from the file's.
    for step in (3, 4):
        for logger in loggers:
            logger.log_trial_result(step, trial, {"trial_id": "t", "training_iteration": step, "val_auroc": step / 10})
    for logger in loggers:
        logger.log_trial_end(trial)

    with (staging / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["training_iteration"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["trial_id"] for r in rows] == ["t"] * 4 and rows[-1]["val_auroc"] == "0.4"
    steps = [json.loads(ln)["training_iteration"] for ln in (staging / "result.json").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
