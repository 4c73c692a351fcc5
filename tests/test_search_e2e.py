"""Ray end to end on digits at a tiny budget: the real Tuner, OptunaSearch (SQLite study), ASHA,
TensorBoard event files, the exported YAML and its re-run."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trial_files import results, study_trials, trial_dirs

from methods.difair import DifairConfig
from search.main import main

pytestmark = pytest.mark.ray
MAX_EPOCHS = 3


def last_result(trial: Path) -> dict:
    return results(trial)[-1]


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    export = root / "exported.yaml"
    # One trial at a time: the seeded sampler and seeded training then make the ASHA decisions repeatable.
    rc = main(["--method", "difair", "--dataset", "digits", "--num-samples", "4", "--max-epochs", str(MAX_EPOCHS),
               "--splits", "0,1", "--max-concurrent", "1", "--storage-path", str(root), "--name", "search",
               "--export", str(export), "--seed", "0"])
    return {"rc": rc, "root": root, "experiment": root / "search", "export": export}


def test_search_exports_best_config_chosen_on_validation(search):
    assert search["rc"] == 0
    doc = yaml.safe_load(search["export"].read_text())
    assert {"method", "dataset", "config", "metrics", "command"} <= set(doc)
    assert (doc["method"], doc["dataset"]) == ("difair", "digits")
    config = DifairConfig.from_dict(doc["config"])  # a complete, valid method config
    assert config.epochs == MAX_EPOCHS
    assert "--config" in doc["command"]
    # The winner is the finished trial with the best last validation AUROC — test values play no part.
    finished = [t for t in trial_dirs(search["experiment"]) if (t / "final_metrics.json").exists()]
    best = max(finished, key=lambda t: last_result(t)["val_auroc"])
    assert json.loads((best / "final_metrics.json").read_text())["config"] == doc["config"]
    assert doc["metrics"]["val"]["auroc"]["n"] == 2  # two splits × one seed
    assert doc["metrics"]["test"]["auroc"]["mean"] == pytest.approx(
        pd.DataFrame(json.loads((best / "final_metrics.json").read_text())["records"])
        .query("phase == 'test' and metric == 'auroc'")["value"].mean())
    in_experiment = yaml.safe_load((search["experiment"] / "best.yaml").read_text())
    assert in_experiment.pop("command").endswith("search/best.yaml")  # each copy re-runs itself
    assert in_experiment == {k: v for k, v in doc.items() if k != "command"}


def test_optuna_study_marks_asha_stopped_trials_pruned(search):
    trials = study_trials(search["experiment"])
    assert len(trials) == 4
    by_lr = {t.params["lr"]: t for t in trials}  # a continuous draw: unique per trial
    states = []
    for trial in trial_dirs(search["experiment"]):
        result = last_result(trial)
        ot = by_lr[result["config"]["lr"]]
        if result["training_iteration"] < MAX_EPOCHS:
            assert ot.state == optuna.trial.TrialState.PRUNED
        else:
            assert ot.state == optuna.trial.TrialState.COMPLETE
            assert ot.value == pytest.approx(result["val_auroc"])
        states.append(ot.state)
    assert optuna.trial.TrialState.PRUNED in states, "ASHA stopped no trial at this budget"
    assert optuna.trial.TrialState.COMPLETE in states


def test_trials_write_tensorboard_scalars_and_test_outputs(search):
    for trial in trial_dirs(search["experiment"]):
        events = EventAccumulator(str(trial))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert "ray/tune/val_auroc" in scalars
        values = [e.value for e in events.Scalars("ray/tune/val_auroc")]
        assert len(values) == last_result(trial)["training_iteration"]
        assert all(0.0 <= v <= 1.0 for v in values)
        if last_result(trial)["training_iteration"] == MAX_EPOCHS:
            final = json.loads((trial / "final_metrics.json").read_text())
            test = pd.DataFrame(final["records"]).query("phase == 'test'")
            assert set(test["split"]) == {0, 1}
            assert {"auroc", "acc", "oscr", "tnr_at_tpr95", "acc_full"} <= set(test["metric"])
            scores = pd.read_parquet(trial / "test_scores.parquet")
            counts = scores.groupby(["split", "is_unknown"]).size()
            assert counts[(0, True)] == counts[(0, False)]  # balanced test set
            assert scores["score_min_distance"].notna().all()
        else:
            assert not (trial / "final_metrics.json").exists()  # pruned: never tested


def test_rerun_from_exported_yaml_reproduces_the_winner(search, capsys):
    doc = yaml.safe_load(search["export"].read_text())
    rc = main(["--config", str(search["export"]), "--splits", "0,1", "--seeds", "1",
               "--storage-path", str(search["root"]), "--name", "rerun"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test metrics, mean ± std over 2 (split, seed) runs" in out
    rerun = yaml.safe_load((search["root"] / "rerun" / "best.yaml").read_text())
    assert rerun["config"] == doc["config"]
    # Each (split, seed) run owns its RNG stream, so training a split alone repeats the search's numbers.
    assert rerun["metrics"]["test"]["auroc"]["mean"] == pytest.approx(doc["metrics"]["test"]["auroc"]["mean"],
                                                                      abs=1e-6)
    assert len(trial_dirs(search["root"] / "rerun")) == 2
