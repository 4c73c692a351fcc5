"""A search whose driver is stopped mid-run, by Ctrl+C (it saves its state and says how to resume) or by
SIGKILL (no chance to save anything), finishes with --resume, re-running no trial Tune had recorded as
finished and leaving the Optuna study with exactly one trial per Ray trial: none duplicated, none lost,
none left RUNNING."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from ray.tune import ExperimentAnalysis
from repo_paths import ROOT
from trial_files import study_trials

from search import saved_state
from search.main import main

NUM_SAMPLES = 5


def finished_trials(experiment: Path) -> list[Path]:
    return sorted(p.parent for p in experiment.glob("*/final_metrics.json"))


def terminated_in_saved_state(experiment: Path) -> dict[str, bytes]:
    """Trial folder -> the result.json its driver wrote, for the trials Tune's saved experiment state
    records as finished: the ones resume must not re-run. A trial can write its end files a moment
    before the controller records it, and such a trial is legitimately run again. The driver writes
    result.json in its Ray session's staging folder and copies it into the experiment folder in the
    background, so a SIGKILL can leave that copy cut short; the resume completes it from the staging
    folder, and the staging record is what the trial really reported. The same kill can cut short the
    copy of Tune's state file, and then it too is read from the staging folder."""
    state = sorted(experiment.glob("experiment_state-*.json"))[-1]
    if not saved_state.readable(state):
        state = saved_state.staging_copies(experiment.name, state.name)[0]
    analysis = ExperimentAnalysis(str(state))
    records = {}
    for trial in analysis.trials:
        if trial.status == "TERMINATED":
            staged = Path(trial.local_path) / "result.json"
            copied = experiment / Path(trial.path).name / "result.json"
            records[copied.parent.name] = (staged if staged.exists() else copied).read_bytes()
    return records


@pytest.mark.ray
@pytest.mark.parametrize(("sig", "exit_status"), [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)],
                         ids=["ctrl-c", "sigkill"])
def test_stopped_driver_resumes_without_rerunning_finished_trials(ray_session, tmp_path, capsys, sig, exit_status):
    storage = tmp_path / "results"
    experiment = storage / "interrupted"
    log = tmp_path / "driver.log"
    # The driver joins this session's Ray, as a driver on a cluster's head does: killing it ends its
    # trials with it (Ray fate-shares a job's actors with its driver) and leaves Ray itself running.
    driver = subprocess.Popen(
        [sys.executable, "search/run.py", "--method", "softmax", "--dataset", "digits", "--splits", "0",
         "--num-samples", str(NUM_SAMPLES), "--max-epochs", "4", "--scheduler", "fifo", "--max-concurrent", "1",
         "--checkpoint-every", "2", "--address", ray_session.get_runtime_context().gcs_address,
         "--storage-path", str(storage), "--name", "interrupted"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"),  # a pipe nobody reads would block the driver
    )
    deadline = time.monotonic() + 240
    while len(finished_trials(experiment)) < 2:
        assert driver.poll() is None, f"search ended before it could be killed: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "no two trials finished in time"
        time.sleep(0.05)
    driver.send_signal(sig)
    assert driver.wait(timeout=120) == exit_status  # 130: Tune saved its state, the driver said how to resume

    done_before = terminated_in_saved_state(experiment)
    assert 1 <= len(done_before) < NUM_SAMPLES, (sorted(done_before), finished_trials(experiment))
    if sig == signal.SIGKILL:  # what a kill during the background copy leaves, made to happen every time
        copied = experiment / next(iter(done_before)) / "result.json"
        copied.write_bytes(copied.read_bytes()[: copied.stat().st_size // 2])
        sorted(experiment.glob("experiment_state-*.json"))[-1].write_bytes(b"")

    rc = main(["--resume", "--name", "interrupted", "--storage-path", str(storage)])
    out = capsys.readouterr().out
    assert rc == 0 and f"{NUM_SAMPLES} trials, {NUM_SAMPLES} finished" in out, out[-3000:]

    after = finished_trials(experiment)
    assert len(after) == NUM_SAMPLES
    for name, result_before in done_before.items():  # finished trials were not trained again
        assert len(result_before.splitlines()) == 4
        assert (experiment / name / "result.json").read_bytes() == result_before
    for trial in after:  # the one running when the driver died went on from its checkpoint to the end
        lines = (trial / "result.json").read_text().splitlines()
        assert json.loads(lines[-1])["training_iteration"] == 4

    trials = study_trials(experiment, "interrupted")
    assert len(trials) == NUM_SAMPLES
    assert len({t.params["lr"] for t in trials}) == NUM_SAMPLES
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
