"""It learns: on real MNIST split 0 (../shared/datasets) the small backbone reaches test AUROC ≥ 0.90
and closed-set accuracy ≥ 0.95 within 3 epochs, for DIFAIR and for the CE baseline.

The 3-epoch recipe is one cosine cycle (restarts 0, no warm-up) at lr 0.1: with the spec's 600-epoch
schedule shape (10 warm-up epochs, 2 restarts) three epochs would never leave the warm-up."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

MNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(),
                       reason="real MNIST not present under ../shared/datasets"),
]


@pytest.fixture(scope="module")
def mnist_bundle():
    from data import load_pool, make_split
    from trainables.runs import DataBundle

    pool = load_pool("mnist", MNIST_ROOT)
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


@pytest.mark.parametrize(("method", "score"), [("difair", "min_distance"), ("softmax", "mls")])
def test_learns_mnist_split0_in_three_epochs(mnist_bundle, method, score):
    from trainables.runs import TrialRuns

    torch.set_num_threads(2)
    config = {"method": method, "dataset": "mnist", "splits": [0], "seeds": [0],
              "epochs": 3, "warmup_epochs": 0, "restarts": 0, "lr": 0.1}
    runs = TrialRuns(config, mnist_bundle, torch.device("cpu"))
    assert runs.runs[0].method.model.backbone.__class__.__name__ == "SmallCNN"
    first = runs.train_epoch(0)
    for epoch in (1, 2):
        last = runs.train_epoch(epoch)
    assert last["train_loss"] < first["train_loss"]
    records, scores = runs.test()
    test = pd.DataFrame(records).set_index("metric")["value"]
    assert test["auroc"] >= 0.90, test.to_dict()
    assert test["acc"] >= 0.95, test.to_dict()
    # The reported AUROC is the named primary score's, on the balanced test set.
    assert len(scores) == 2 * int(scores["is_unknown"].sum())
    assert f"score_{score}" in scores
