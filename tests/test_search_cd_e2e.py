"""Ray end to end for Contrastive Disentangling on digits: ``python search/run.py --method cd --dataset
digits`` at a tiny budget with the real Tuner, Optuna (SQLite) and ASHA; the spec's space sampled into
the study; the default objective (validation NMI of k-means on the backbone features); the setting
label in the report and the export. (Re-running an exported YAML is the same code for every method and is
tested for the others.)"""

from __future__ import annotations

import contextlib
import io
import json

import optuna
import pytest
import yaml
from trial_files import results, study_trials, trial_dirs

from results_analysis.metrics import CLUSTERING_METRICS
from search.main import main

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-cd")
    export = root / "best.yaml"
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        rc = main(["--method", "cd", "--dataset", "digits", "--num-samples", "2", "--max-epochs", "1",
                   "--max-concurrent", "1", "--storage-path", str(root), "--name", "search", "--export", str(export),
                   "--seed", "0"])
    return {"rc": rc, "root": root, "experiment": root / "search", "export": export, "out": capture.getvalue()}


def test_search_samples_the_spec_space_and_optimises_validation_backbone_nmi(search):
    assert search["rc"] == 0
    trials = study_trials(search["experiment"])
    assert len(trials) == 2
    for t in trials:
        p = t.params
        assert 1e-4 <= p["lr"] <= 1e-3 and 0.1 <= p["tau_instance"] <= 1.0 and 0.5 <= p["tau_feature"] <= 2.0
        assert 0.0 <= p["entropy_weight"] <= 2.0
        assert p["feature_dim"] in (64, 128, 256) and p["batch_size"] in (64, 128, 256)
        assert t.state == optuna.trial.TrialState.COMPLETE
    assert yaml.safe_load((search["experiment"] / "experiment.yaml").read_text())["metric"] == "val_backbone_nmi"
    values = sorted(t.value for t in trials)
    reported = sorted(results(trial)[-1]["val_backbone_nmi"] for trial in trial_dirs(search["experiment"]))
    assert values == pytest.approx(reported)


def test_trials_report_only_validation_clustering_and_write_labelled_end_files(search):
    for trial in trial_dirs(search["experiment"]):
        for row in results(trial):
            assert not any(k.startswith("test_") for k in row)
            for name in CLUSTERING_METRICS:
                assert 0.0 <= row[f"val_{name}"] <= 1.0
        final = json.loads((trial / "final_metrics.json").read_text())
        assert final["derived"]["backbone"] == "resnet18_cifar_native" and final["derived"]["image_size"] == 8
        assert final["setting"]["label"] == "reduced setting"
        assert {r["metric"] for r in final["records"] if r["phase"] == "test"} == set(CLUSTERING_METRICS)


def test_report_and_export_label_the_setting(search):
    assert "backbone_nmi" in search["out"]
    assert "setting: reduced setting, NOT comparable with the published numbers" in search["out"]
    doc = yaml.safe_load(search["export"].read_text())
    assert doc["method"] == "cd" and doc["metrics"]["objective"] == "val_backbone_nmi"
    assert doc["setting"]["label"] == "reduced setting" and doc["derived"]["backbone"] == "resnet18_cifar_native"
    for metric in CLUSTERING_METRICS:
        assert doc["metrics"]["test"][metric]["n"] == 1
