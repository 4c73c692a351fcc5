"""Ray end to end for adversarial separation on digits: ``python search/run.py --method adversarial
--dataset digits`` at a tiny budget with the real Tuner, Optuna (SQLite) and ASHA; every report carries
the ensemble's and the in-run baseline's metrics, and the final report sets them side by side."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from trial_files import results, study_trials, trial_dirs

from search.main import main

pytestmark = pytest.mark.ray
EPOCHS = 2


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-adversarial")
    export = root / "best.yaml"
    rc = main(["--method", "adversarial", "--dataset", "digits", "--num-samples", "2", "--max-epochs", str(EPOCHS),
               "--splits", "0", "--max-concurrent", "1", "--storage-path", str(root), "--name", "search",
               "--export", str(export), "--seed", "0"])
    return {"rc": rc, "root": root, "experiment": root / "search", "export": export}


def test_search_samples_the_spec_space(search):
    assert search["rc"] == 0
    trials = study_trials(search["experiment"])
    assert len(trials) == 2
    for t in trials:
        p = t.params
        assert 1e-3 <= p["lr_cls"] <= 0.1 and 1e-4 <= p["lr_d"] <= 3e-3 and 0.3 <= p["ce_weight"] <= 0.95
        assert p["d_width"] in (16, 32, 64, 128) and p["batch_size"] in (128, 256, 512)
    assert yaml.safe_load((search["experiment"] / "experiment.yaml").read_text())["metric"] == "val_auroc"


def test_every_report_carries_the_ensemble_and_the_baseline(search):
    for trial in trial_dirs(search["experiment"]):
        for row in results(trial):
            assert not any(k.startswith("test_") for k in row)
            assert row["config"]["lr_schedule"] == "cosine"
            for name in ("auroc", "auroc_jsd", "acc_c1", "acc_c2", "disagreement", "tpa_0of2"):
                assert 0.0 <= row[f"val_{name}"] <= 1.0
                assert row[f"val_delta_{name}"] == pytest.approx(row[f"val_{name}"] - row[f"val_base_{name}"])
            assert row["d_loss"] > 0 and "base_train_loss" in row


def test_final_files_and_the_exported_comparison(search, capsys):
    finished = [t for t in trial_dirs(search["experiment"]) if (t / "final_metrics.json").exists()]
    assert finished
    for trial in finished:
        records = pd.DataFrame(json.loads((trial / "final_metrics.json").read_text())["records"])
        test = records.query("phase == 'test'").set_index("metric")["value"]
        assert test["delta_auroc"] == pytest.approx(test["auroc"] - test["base_auroc"])
        scores = pd.read_parquet(trial / "test_scores.parquet")
        assert {"score_msp", "score_jsd", "pred_c1", "pred_c2", "base/score_msp", "base/pred_c1"} <= set(scores)
    doc = yaml.safe_load(search["export"].read_text())
    assert doc["method"] == "adversarial" and doc["metrics"]["objective"] == "val_auroc"
    for metric in ("auroc", "base_auroc", "delta_auroc", "auroc_jsd", "disagreement", "base_disagreement"):
        assert doc["metrics"]["test"][metric]["n"] == 1
    capsys.readouterr()
    rc = main(["--config", str(search["export"]), "--max-epochs", "1", "--seeds", "1", "--splits", "0", "--storage-path",
               str(search["root"]), "--name", "rerun"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # one line per metric of the method, with the baseline's value and the paired difference on it
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("disagreement "))
    assert " base " in line and " Δ " in line
    assert not any(ln.strip().startswith(("base_", "delta_")) for ln in out.splitlines())
