"""A Contrastive Disentangling trial without Ray on digits: labels never reach training, validation is
k-means on the held-out fifth of the train split (also trained on), the end files carry the setting,
the transductive protocol trains on and clusters train+test, and a checkpoint resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from data import load_pool
from results_analysis.metrics import CLUSTERING_METRICS
from trainables.clustering import ClusteringRunner
from trainables.device_data import DataBundle
from trainables.tasks import task_splits, trial_runs

# The project's small CPU backbone: a digits epoch takes about a second.
QUICK = {"method": "cd", "dataset": "digits", "splits": [0], "seeds": [0], "backbone": "cnn4_native",
         "batch_size": 64, "lr": 1e-3, "epochs": 2}


@pytest.fixture(scope="module")
def digits():
    pool = load_pool("digits", "unused")
    return pool, DataBundle.from_pool(pool, task_splits(pool, "cd", [0]))


def test_the_split_trains_on_the_whole_train_split_and_validates_on_a_stratified_fifth(digits):
    pool, bundle = digits
    split = bundle.splits[0]
    np.testing.assert_array_equal(split.train, np.arange(len(pool.train_y)))
    assert np.isin(split.val_known, split.train).all()
    assert len(split.val_known) == pytest.approx(0.2 * len(pool.train_y), abs=10)
    np.testing.assert_array_equal(split.test_known, np.arange(len(pool.test_y)))


def test_epochs_report_kmeans_validation_and_the_end_files_label_the_setting(digits, tmp_path):
    _, bundle = digits
    runs = trial_runs(QUICK, bundle, torch.device("cpu"))
    assert isinstance(runs, ClusteringRunner)
    results = [runs.train_epoch(e) for e in range(2)]
    last = results[-1]
    assert not any(k.startswith("test_") for k in last)  # the searcher never sees test data
    for name in CLUSTERING_METRICS:
        assert 0 <= last[f"val_{name}"] <= 1
    assert {"train_loss", "loss_instance", "loss_feature", "entropy"} <= set(last)
    assert last["val_backbone_nmi"] > 0.3  # k-means on learned features finds digit structure already
    final = runs.write_final(tmp_path, "t0", last)
    assert json.loads((tmp_path / "final_metrics.json").read_text()) == json.loads(json.dumps(final, sort_keys=True))
    assert final["derived"] == {"backbone": "cnn4_native", "image_size": 8, "epochs": 2, "transductive": False,
                                "precision": "fp32", "compile": False}  # the CPU resolves precision auto to fp32
    assert final["setting"]["label"] == "reduced setting"  # digits: no published CD setting
    tests = {r["metric"]: r["value"] for r in final["records"] if r["phase"] == "test"}
    assert set(tests) == set(CLUSTERING_METRICS)
    scores = pd.read_parquet(tmp_path / "test_scores.parquet")
    assert len(scores) == len(bundle.test_y) and set(scores["source"]) == {"test"}
    np.testing.assert_array_equal(scores["label"], bundle.test_y)
    assert scores["cluster_backbone"].nunique() == 10


def test_training_never_reads_labels(digits):
    """Scrambled labels: the same training loss curve, to the last bit."""
    pool, bundle = digits
    rng = np.random.default_rng(0)
    scrambled = DataBundle(bundle.dataset, bundle.train_x, rng.permutation(bundle.train_y), bundle.test_x,
                           rng.permutation(bundle.test_y), bundle.max_value, bundle.splits)
    curves = []
    for data in (bundle, scrambled):
        runs = trial_runs(QUICK, data, torch.device("cpu"))
        curves.append([runs.runs[0].train_epoch(64, e) for e in range(2)])
    assert curves[0] == curves[1]
    assert curves[0][0]["train_loss"] != curves[0][1]["train_loss"]  # it did train


def test_transductive_protocol_trains_on_and_clusters_train_plus_test(digits, tmp_path):
    _, bundle = digits
    runs = trial_runs({**QUICK, "epochs": 1, "transductive": True}, bundle, torch.device("cpu"))
    n_all = len(bundle.train_y) + len(bundle.test_y)
    assert len(runs.runs[0].x["train"]) == n_all
    final = runs.write_final(tmp_path, "t1", runs.train_epoch(0))
    scores = pd.read_parquet(tmp_path / "test_scores.parquet")
    assert len(scores) == n_all
    assert scores["source"].value_counts().to_dict() == {"train": len(bundle.train_y), "test": len(bundle.test_y)}
    np.testing.assert_array_equal(scores["label"], np.concatenate([bundle.train_y, bundle.test_y]))
    assert final["derived"]["transductive"] is True
