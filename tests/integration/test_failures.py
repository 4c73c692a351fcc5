"""A search survives a trial's worker dying (SIGKILL): the trial restarts from its last checkpoint and
finishes its epochs. A config whose loss diverges ends errored with its reason, is not retried (retries
are for lost workers and nodes, not for an exception the trial's own code raises), and the other trials
finish. Both happen in one search, to keep the suite short."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from trial_files import results, results_so_far, trial_dirs

from search.main import main

MAX_EPOCHS = 8
NAME = "failures"


def kill_a_worker_mid_trial(experiment: Path, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the worker process of the first trial seen between its 2nd and 5th epoch: by then it
    has checkpointed (--checkpoint-every 1) and still has epochs to go."""
    while not stop.is_set():
        for trial in experiment.glob("train_trial_*"):
            report = (results_so_far(trial) or [None])[-1]
            if report and 2 <= report["training_iteration"] <= 5:
                os.kill(report["pid"], signal.SIGKILL)
                killed.update(trial=trial.name, iteration=report["training_iteration"], pid=report["pid"])
                return
        time.sleep(0.02)


@pytest.mark.ray
def test_killed_worker_resumes_from_checkpoint_and_diverged_config_ends_errored(ray_session, tmp_path, capsys):
    study_url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name=NAME, storage=study_url, direction="maximize")
    study.enqueue_trial({"lr": 1e8})  # the first suggestion: a learning rate no network survives
    experiment = tmp_path / "results" / NAME

    killed: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=kill_a_worker_mid_trial, args=(experiment, killed, stop), daemon=True)
    killer.start()
    try:
        rc = main(["--method", "softmax", "--dataset", "digits", "--splits", "0", "--seeds", "2",
                   "--num-samples", "3", "--max-epochs", str(MAX_EPOCHS), "--scheduler", "fifo",
                   "--max-concurrent", "2", "--checkpoint-every", "1", "--max-failures", "1",
                   "--optuna-storage", study_url, "--storage-path", str(tmp_path / "results"), "--name", NAME])
    finally:
        stop.set()
        killer.join()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert killed, "no trial was caught mid-run to kill its worker"
    assert "3 trials, 2 finished, 0 pruned, 1 errored, 0 unscorable" in out

    # The killed trial came back in a new worker from its checkpoint, not from epoch 1, and finished
    # every epoch once: Tune restores the iteration count with the checkpoint.
    reports = results(experiment / killed["trial"])
    assert [r["training_iteration"] for r in reports] == list(range(1, MAX_EPOCHS + 1))
    pids = [r["pid"] for r in reports]
    first_new = next(i for i, pid in enumerate(pids) if pid != killed["pid"])
    assert first_new >= 2 and len(set(pids[first_new:])) == 1, f"restarted from scratch or twice: {pids}"
    trial_id = killed["trial"].removeprefix("train_trial_")
    assert any(trial_id in ln and "finished" in ln and "restarted 1×" in ln for ln in out.splitlines()), out

    # The diverged trial: errored with the reason, never retried nor shown as restarted, no epoch trained.
    errored = [ln for ln in out.splitlines() if re.match(r"\s+\w+\s+errored\s", ln)]
    assert len(errored) == 1 and "DivergedError: softmax: train loss became" in errored[0], out
    assert "0 epochs" in errored[0] and "restarted" not in errored[0], errored[0]
    diverged = [t for t in trial_dirs(experiment) if t.name.removeprefix("train_trial_") in errored[0]]
    assert len(diverged) == 1 and not (diverged[0] / "final_metrics.json").exists()
    # One attempt, in one process: its only report is the error's, with the reason and the file beside it.
    (report,) = results(diverged[0])
    assert report["trial_error"].startswith("DivergedError: softmax: train loss became") and report["epoch"] == 0
    assert (diverged[0] / "trial_error.txt").read_text().splitlines()[0] == report["trial_error"]
    assert not (diverged[0] / "error.txt").exists()

    # Optuna holds the truth: the diverged config FAIL, the others COMPLETE, nothing left RUNNING.
    states = {t.params["lr"]: t.state for t in optuna.load_study(study_name=NAME, storage=study_url).trials}
    assert len(states) == 3 and states.pop(1e8) == optuna.trial.TrialState.FAIL
    assert set(states.values()) == {optuna.trial.TrialState.COMPLETE}
