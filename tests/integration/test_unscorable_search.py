"""Through Ray Tune: a search whose final models OpenMax cannot fit ends "unscorable" with advice, and a
diverging --config re-run ends errored once, never retried (the trial-level behaviour without Ray:
tests/unit/test_unscorable_final.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from optuna.trial import TrialState
from trial_files import results, study_trials, trial_dirs

from methods.openmax import OpenMax
from search.main import main

UNSCORABLE_ADVICE = OpenMax.unscorable_advice


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().out


@pytest.mark.ray
def test_short_crosr_search_ends_unscorable_with_advice_not_retries(ray_session, tmp_path, capsys):
    # One epoch of DHRNet on digits leaves some class without 2 correctly classified training images.
    rc, out = run_cli(["--method", "crosr", "--dataset", "digits", "--num-samples", "2", "--max-epochs", "1",
                       "--splits", "0", "--max-concurrent", "1", "--seed", "0",
                       "--storage-path", str(tmp_path), "--name", "short"], capsys)
    assert rc == 1, out
    summary = out[out.index("crosr on digits: 2 trials"):].strip().splitlines()
    assert summary[0].startswith("crosr on digits: 2 trials, 0 finished, 0 pruned, 0 errored, 2 unscorable"), out
    assert all(" unscorable " in ln and "no valid Weibull fit for class" in ln for ln in summary[1:3]), out
    assert "restarted" not in out
    assert len(summary) == 4 and summary[3].startswith("No best config: no trial's final model could be scored")
    assert summary[3].endswith(f"; {UNSCORABLE_ADVICE}.")
    experiment = tmp_path / "short"
    for folder in trial_dirs(experiment):
        final = json.loads((folder / "final_metrics.json").read_text())
        assert final["status"] == "unscorable" and final["reason"] in out
        assert [r["training_iteration"] for r in results(folder)] == [1]  # one attempt, one epoch
        assert not (folder / "error.txt").exists() and not (folder / "trial_error.txt").exists()
    assert not (experiment / "best.yaml").exists()
    # A NaN objective is no value TPE can learn from: Optuna holds these trials as FAIL, not COMPLETE.
    assert [t.state for t in study_trials(experiment, "short")] == [TrialState.FAIL] * 2


@pytest.mark.ray
def test_diverging_config_file_ends_errored_once(ray_session, tmp_path, capsys):
    config = tmp_path / "huge_lr.yaml"
    config.write_text(yaml.safe_dump({"method": "softmax", "dataset": "digits",
                                      "config": {"lr": 1e8, "warmup_epochs": 0, "epochs": 2}}))
    rc, out = run_cli(["--config", str(config), "--splits", "0", "--seeds", "1", "--max-epochs", "2",
                       "--storage-path", str(tmp_path / "results"), "--name", "rerun"], capsys)
    assert rc == 1, out
    assert "softmax on digits: 1 trials, 0 finished, 0 pruned, 1 errored, 0 unscorable" in out
    summary = out[out.index("softmax on digits: 1 trials"):]  # the progress lines before it name the error too
    (line,) = [ln for ln in summary.splitlines() if " errored " in ln and "DivergedError" in ln]
    assert "DivergedError: softmax: train loss became" in line and "0 epochs" in line
    assert "restarted" not in out
    (folder,) = trial_dirs(tmp_path / "results" / "rerun")
    (report,) = results(folder)  # the error's report only: never retried
    assert report["trial_error"] in line and not (folder / "final_metrics.json").exists()
