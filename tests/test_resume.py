"""An experiment interrupted mid-run (Ctrl+C on the driver) finishes with --resume, re-running no
finished trial and leaving the Optuna study with one trial per Ray trial."""

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
from trial_files import study_trials

from search.main import main

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 5


def finished_trials(experiment: Path) -> list[Path]:
    return sorted(p.parent for p in experiment.glob("*/final_metrics.json"))


def terminated_in_saved_state(experiment: Path) -> list[str]:
    """Trial folders Tune's saved experiment state records as finished: the ones resume must not
    re-run. A trial can write its end files a moment before the controller records it, and such a
    trial is legitimately run again."""
    analysis = ExperimentAnalysis(str(experiment))
    return sorted(Path(t.path).name for t in analysis.trials if t.status == "TERMINATED")


@pytest.mark.ray
def test_interrupted_search_resumes_without_rerunning_finished_trials(ray_session, tmp_path, capsys):
    storage = tmp_path / "results"
    experiment = storage / "interrupted"
    driver = subprocess.Popen(
        [sys.executable, "search/run.py", "--method", "softmax", "--dataset", "digits", "--splits", "0",
         "--num-samples", str(NUM_SAMPLES), "--max-epochs", "4", "--scheduler", "fifo", "--max-concurrent", "1",
         "--storage-path", str(storage), "--name", "interrupted"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while len(finished_trials(experiment)) < 2:
        assert driver.poll() is None, f"search ended before it could be interrupted: {driver.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no two trials finished in time"
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130  # Tune saved its state; the driver says how to resume

    done_before = {name: (experiment / name / "result.json").read_bytes()
                   for name in terminated_in_saved_state(experiment)}
    assert 1 <= len(done_before) < NUM_SAMPLES

    assert main(["--resume", "--name", "interrupted", "--storage-path", str(storage)]) == 0
    assert "5 trials, 5 finished" in capsys.readouterr().out

    after = finished_trials(experiment)
    assert len(after) == NUM_SAMPLES
    for name, result_before in done_before.items():  # finished trials were not trained again
        assert (experiment / name / "result.json").read_bytes() == result_before
    for trial in after:
        lines = (trial / "result.json").read_text().splitlines()
        assert [json.loads(ln)["training_iteration"] for ln in lines] == [1, 2, 3, 4]

    trials = study_trials(experiment, "interrupted")
    assert len(trials) == NUM_SAMPLES
    assert len({t.params["lr"] for t in trials}) == NUM_SAMPLES
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
