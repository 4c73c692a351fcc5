"""A ClustNet trial without Ray: the whole-dataset split, metrics reported on train and validation
only, the per-epoch gate-vs-class confusion matrices (data and PNG) and the end files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from data import load_pool, whole_dataset_split
from trainables.device_data import DataBundle
from trainables.gate_clustering import CONFUSION_DIR, GateClusteringRunner
from trainables.tasks import task_splits, trial_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    pool = load_pool("digits", "unused")
    return DataBundle.from_pool(pool, task_splits(pool, "clustnet", [0, 3]))


def test_whole_dataset_split_holds_out_a_stratified_fifth_of_every_class():
    pool = load_pool("digits", "unused")
    split = whole_dataset_split(pool)
    y = pool.train_y.numpy()
    assert split.unknown == () and split.known == tuple(range(10))
    assert np.intersect1d(split.train, split.val_known).size == 0
    np.testing.assert_array_equal(np.union1d(split.train, split.val_known), np.arange(len(y)))
    for c in range(10):
        share = np.sum(y[split.val_known] == c) / np.sum(y == c)
        assert abs(share - 0.2) < 0.02
    np.testing.assert_array_equal(split.test_known, np.arange(len(pool.test_y)))
    assert whole_dataset_split(pool).val_known.tolist() == split.val_known.tolist()  # deterministic


def test_open_set_methods_keep_their_class_splits(digits):
    pool = load_pool("digits", "unused")
    assert list(digits.splits) == [0]  # clustnet: one split whatever ids were asked for
    assert task_splits(pool, "difair", [0, 3])[3].unknown != ()


def test_epochs_report_train_and_validation_metrics_and_write_confusion_files(digits, tmp_path):
    config = {"method": "clustnet", "dataset": "digits", "splits": [0], "seeds": [0, 1], "epochs": 2,
              "batch_size": 16, "balance_weight": 0.1}
    runs = trial_runs(config, digits, torch.device("cpu"))
    assert isinstance(runs, GateClusteringRunner)
    runs.write_epoch(tmp_path, 0)  # the initial weights
    results = []
    for epoch in range(2):
        results.append(runs.train_epoch(epoch))
        runs.write_epoch(tmp_path, epoch + 1)
    last = results[-1]
    assert not any(k.startswith("test_") for k in last)  # the searcher never sees test data
    assert set(last["runs"]) == {"split0_seed0", "split0_seed1"}
    per_run = [r["val_mean_cluster_acc"] for r in last["runs"].values()]
    assert last["val_mean_cluster_acc"] == pytest.approx(np.mean(per_run))
    assert last["train_loss"] < results[0]["train_loss"] or last["val_binary_acc"] > results[0]["val_binary_acc"]
    for key in ("train_binary_acc", "val_pos_cluster_acc", "val_neg_cluster_acc", "val_gate_confidence",
                "val_nmi", "val_ari", "val_cluster_acc", "val_nll", "lr_gate"):
        assert key in last
    assert sum(last[f"val_usage_e{i}"] for i in range(5)) == pytest.approx(1.0)

    folder = tmp_path / CONFUSION_DIR
    sizes = {"train": len(digits.splits[0].train), "val": len(digits.splits[0].val_known)}
    for epoch in range(3):
        doc = json.loads((folder / f"epoch_{epoch:03d}.json").read_text())
        assert (folder / f"epoch_{epoch:03d}.png").read_bytes()[:8] == PNG_MAGIC
        assert doc["classes"] == list(range(10)) and doc["n_experts"] == 5
        for key, phases in doc["runs"].items():
            for phase, entry in phases.items():
                counts = np.array(entry["counts"])
                assert counts.shape == (5, 10) and counts.sum() == sizes[phase]
                if epoch == 2:  # the file holds exactly what was reported for that epoch
                    assert entry["metrics"][f"{phase}_mean_cluster_acc"] == last["runs"][key][f"{phase}_mean_cluster_acc"]
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))

    final = runs.write_final(tmp_path, "t0", last)
    records = pd.DataFrame(final["records"])
    assert set(records["phase"]) == {"val", "test"}
    assert final["config"]["positive_classes"] == [0, 1, 2, 3, 4]
    test_doc = json.loads((folder / "test.json").read_text())
    scores = pd.read_parquet(tmp_path / "test_scores.parquet")
    assert len(scores) == 2 * len(digits.test_y)
    for key, phases in test_doc["runs"].items():
        seed = int(key.split("seed")[1])
        mine = scores[scores["seed"] == seed]
        counts = np.array(phases["test"]["counts"])
        # The saved counts are the per-image gate choices of the score table, cross-tabulated.
        np.testing.assert_array_equal(counts, pd.crosstab(mine["expert"], mine["label"])
                                      .reindex(index=range(5), columns=range(10), fill_value=0).to_numpy())
        recorded = records.query("phase == 'test' and seed == @seed").set_index("metric")["value"]
        assert recorded["mean_cluster_acc"] == phases["test"]["metrics"]["test_mean_cluster_acc"]
        assert recorded["binary_acc"] == pytest.approx(np.mean(mine["pred"] == mine["target"]))
    assert (scores["target"] == scores["label"].isin([0, 1, 2, 3, 4])).all()
    probs = scores[[f"gate_prob_e{i}" for i in range(5)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), scores["expert"])
