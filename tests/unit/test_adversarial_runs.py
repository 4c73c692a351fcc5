"""An adversarial-separation trial without Ray, on digits: the ensemble's open-set metrics, the
diversity metrics next to the in-run baseline's and their paired differences, and the end files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from data import load_pool, make_split
from results_analysis.metrics import accuracy, auroc, disagreement_rate
from trainables.device_data import DataBundle
from trainables.open_set import OpenSetRunner

# Quick settings: the small classifier and D at batch 32 (digits split 0 has 574 training images).
# Measured 2026-11-23: validation accuracy 0.17 / 0.43 / 0.64 / 0.92 after epochs 1–4 of 8 (mode
# alternating, no baseline).
QUICK = {"lr_cls": 0.02, "lr_schedule": "cosine", "batch_size": 32, "d_width": 8}
EPOCHS = 4
DIVERSITY = ("acc_c1", "acc_c2", "ensemble_gain", "disagreement", "phi", "yule_q", "tpa_0of2", "tpa_1of2",
             "tpa_2of2", "tpa_indep_1of2")


@pytest.fixture(scope="module")
def digits():
    pool = load_pool("digits", "unused")
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


@pytest.fixture(scope="module")
def trained(digits):
    config = {"method": "adversarial", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": EPOCHS, **QUICK}
    runs = OpenSetRunner(config, digits, torch.device("cpu"))
    epochs = [runs.train_epoch(e) for e in range(EPOCHS)]
    return runs, epochs, runs.test()


def test_validation_reports_the_ensemble_its_members_and_the_baseline(trained):
    runs, epochs, _ = trained
    last = epochs[-1]
    assert not any(k.startswith("test_") for k in last)
    for name in ("val_auroc", "val_oscr", "val_acc", "val_auroc_jsd", "val_auroc_msp_c1", "val_auroc_msp_c2",
                 *(f"val_{m}" for m in DIVERSITY)):
        assert name in last, name
        assert f"val_base_{name[4:]}" in last and f"val_delta_{name[4:]}" in last, name
    for name in ("d_loss", "d_acc", "d_same_prob", "adv_loss", "ce_c1", "base_ce_c1", "base_train_loss"):
        assert math.isfinite(last[name]), name
    # the deltas are the paired differences of the same run's two views
    for name in ("auroc", "acc", "disagreement", "tpa_0of2"):
        assert last[f"val_delta_{name}"] == pytest.approx(last[f"val_{name}"] - last[f"val_base_{name}"])
    # training moved both pairs off chance (6 known classes)
    assert last["val_acc"] > 0.6 and last["val_base_acc"] > 0.6, (last["val_acc"], last["val_base_acc"])


def test_test_metrics_recompute_from_the_saved_scores(trained):
    runs, _, outcome = trained
    test = pd.DataFrame(outcome.records).query("phase == 'test'").set_index("metric")["value"]
    scores = outcome.scores
    known, unknown = scores[~scores["is_unknown"]], scores[scores["is_unknown"]]
    assert test["auroc"] == pytest.approx(auroc(known["score_msp"], unknown["score_msp"]))
    assert test["auroc_jsd"] == pytest.approx(auroc(known["score_jsd"], unknown["score_jsd"]))
    assert test["base_auroc"] == pytest.approx(auroc(known["base/score_msp"], unknown["base/score_msp"]))
    assert test["acc_c1"] == pytest.approx(accuracy(known["label"], known["pred_c1"]))
    assert test["base_acc_c2"] == pytest.approx(accuracy(known["label"], known["base/pred_c2"]))
    assert test["disagreement"] == pytest.approx(disagreement_rate(known["pred_c1"], known["pred_c2"]))
    both = (known["pred_c1"] == known["label"]) & (known["pred_c2"] == known["label"])
    assert test["tpa_2of2"] == pytest.approx(both.mean())
    assert test["delta_oscr"] == pytest.approx(test["oscr"] - test["base_oscr"])
    assert "threshold" in test and "delta_threshold" not in test


def test_final_file_and_mode_none_has_no_companion(trained, digits, tmp_path):
    runs, epochs, outcome = trained
    final = runs.write_outcome(tmp_path, "t0", epochs[-1], outcome)
    assert json.loads((tmp_path / "final_metrics.json").read_text())["records"] == final["records"]
    config = {"method": "adversarial", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 1,
              "mode": "none", **QUICK}
    plain = OpenSetRunner(config, digits, torch.device("cpu"))
    result = plain.train_epoch(0)
    assert "val_disagreement" in result and not any("base" in k or "delta" in k for k in result)
    assert plain.runs[0].method.discriminator is not None  # built, never trained: mode none has no D step
    assert np.isfinite(result["val_auroc"])
