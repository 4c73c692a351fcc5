"""Ray end to end for ClustNet on digits: ``python search/run.py --method clustnet --dataset digits``
at a tiny budget with the real Tuner, Optuna (SQLite) and ASHA, its per-epoch confusion matrices in
the trial folders, the default objective (validation mean clustering accuracy), the export, and a
re-run of the exported YAML."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from trial_files import results, study_trials, trial_dirs

from search.main import main

pytestmark = pytest.mark.ray
EPOCHS = 2


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-clustnet")
    export = root / "best.yaml"
    rc = main(["--method", "clustnet", "--dataset", "digits", "--num-samples", "2", "--max-epochs", str(EPOCHS),
               "--seeds", "2", "--max-concurrent", "1", "--storage-path", str(root), "--name", "search",
               "--export", str(export), "--seed", "0"])
    return {"rc": rc, "root": root, "experiment": root / "search", "export": export}


def test_search_samples_the_spec_space_into_the_study(search):
    assert search["rc"] == 0
    trials = study_trials(search["experiment"])
    assert len(trials) == 2
    for t in trials:
        p = t.params
        assert 1e-4 <= p["lr"] <= 0.1 and p["batch_size"] in (4, 8, 16, 32, 64)
        assert 1 <= p["gate_layers"] <= 5 and p["dn_capacity"] in ("linear", "hidden8", "hidden16", "hidden32")
        assert p["balance_weight"] in (0.0, 0.01, 0.1, 1.0)
    assert yaml.safe_load((search["experiment"] / "experiment.yaml").read_text())["metric"] == "val_mean_cluster_acc"


def test_objective_is_the_validation_mean_clustering_accuracy_over_seeds(search):
    for trial in trial_dirs(search["experiment"]):
        rows = results(trial)
        for row in rows:
            assert not any(k.startswith("test_") for k in row)
            per_run = [v["val_mean_cluster_acc"] for v in row["runs"].values()]
            assert len(per_run) == 2
            assert row["val_mean_cluster_acc"] == pytest.approx(np.mean(per_run))
            assert 0.0 <= row["val_mean_cluster_acc"] <= 1.0


def test_trial_folders_hold_per_epoch_confusion_matrices_as_data_and_png(search):
    for trial in trial_dirs(search["experiment"]):
        epochs = len(results(trial))
        folder = trial / "gate_confusion"
        for epoch in range(epochs + 1):  # epoch 0 is the initial weights
            doc = json.loads((folder / f"epoch_{epoch:03d}.json").read_text())
            assert set(doc["runs"]) == {"split0_seed0", "split0_seed1"}
            assert np.array(doc["runs"]["split0_seed0"]["val"]["counts"]).shape == (5, 10)
            assert (folder / f"epoch_{epoch:03d}.png").read_bytes()[:4] == b"\x89PNG"
        if (trial / "final_metrics.json").exists():
            assert (folder / "test.json").exists() and (folder / "test.png").exists()


def test_export_and_rerun_of_the_best_config(search, capsys):
    doc = yaml.safe_load(search["export"].read_text())
    assert doc["method"] == "clustnet" and doc["metrics"]["objective"] == "val_mean_cluster_acc"
    assert doc["config"]["positive_classes"] == [0, 1, 2, 3, 4]
    for metric in ("binary_acc", "pos_cluster_acc", "neg_cluster_acc", "mean_cluster_acc", "gate_confidence"):
        assert doc["metrics"]["test"][metric]["n"] == 2
    capsys.readouterr()
    rc = main(["--config", str(search["export"]), "--max-epochs", "1", "--seeds", "2", "--storage-path",
               str(search["root"]), "--name", "rerun"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "mean_cluster_acc" in out
    rerun = yaml.safe_load((search["root"] / "rerun" / "best.yaml").read_text())
    assert rerun["config"] == {**doc["config"], "epochs": 1}
    assert rerun["metrics"]["test"]["mean_cluster_acc"]["n"] == 2  # one trial per seed, reported together
