"""It learns: on real MNIST split 0 (../shared/datasets) the small backbone reaches test AUROC ≥ 0.90
and closed-set accuracy ≥ 0.95 within 3 epochs, for DIFAIR, the CE baseline (through OpenMax, which
is the baseline's network with the OpenMax head on top), OpenMax and CROSR. ClustNet learns the
binary P/N task and its gate clusters the hidden classes above chance, both classifiers of the
adversarial pair learn while their ensemble detects the unknown digits, and Contrastive Disentangling's
unsupervised features cluster the digits better than raw pixels (their own tests, at the end).

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
    from trainables.device_data import DataBundle

    pool = load_pool("mnist", MNIST_ROOT)
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


COSINE_3_EPOCHS = {"warmup_epochs": 0, "restarts": 0, "lr": 0.1}
CASES = {
    # method: (recipe overrides, primary score, class name of the small trunk)
    "difair": (COSINE_3_EPOCHS, "min_distance", "SmallCNN"),
    # openmax is the softmax baseline's network, recipe and RNG stream with OpenMax on its logits, so
    # this one training also checks the baseline: its MLS and MSP scores are asserted below.
    "openmax": (COSINE_3_EPOCHS, "openmax", "SmallCNN"),
    # CROSR's own recipe (StepLR from lr 0.05, its jitter + affine augmentation) on quarter-width DHRNet.
    "crosr": ({}, "openmax", "DHRNet"),
}


@pytest.mark.parametrize("method", list(CASES))
def test_learns_mnist_split0_in_three_epochs(mnist_bundle, method):
    from trainables.open_set import OpenSetRunner

    overrides, score, trunk = CASES[method]
    torch.set_num_threads(2)
    config = {"method": method, "dataset": "mnist", "splits": [0], "seeds": [0], "epochs": 3, **overrides}
    runs = OpenSetRunner(config, mnist_bundle, torch.device("cpu"))
    model = runs.runs[0].method.model
    assert type(getattr(model, "backbone", model)).__name__ == trunk
    if method == "crosr":
        assert model.stages[0][0].out_channels == 16  # the quarter-width ("small") DHRNet
    run = runs.runs[0]
    first = run.train_epoch(runs.batch_size, 0)
    run.train_epoch(runs.batch_size, 1)
    last = runs.train_epoch(2)  # validates (and fits OpenMax) once, on the final model: ~35 s less per method
    assert last["train_loss"] < first["train_loss"]
    assert last["val_auroc"] >= 0.85, last
    outcome = runs.test()
    test = pd.DataFrame(outcome.records).query("phase == 'test'").set_index("metric")["value"]
    assert test["auroc"] >= 0.90, test.to_dict()
    assert test["acc"] >= 0.95, test.to_dict()
    if method == "openmax":
        assert test["auroc_mls"] >= 0.90 and test["auroc_msp"] >= 0.90, test.to_dict()
    # The reported AUROC is the named primary score's, on the balanced test set.
    scores = outcome.scores
    assert len(scores) == 2 * int(scores["is_unknown"].sum())
    assert f"score_{score}" in scores


# ClustNet (clustnet.md): the README's lr 0.01 at batch 16, the load-balancing bonus β = 0.1 (with
# β = 0 the gate collapsed onto one expert in 2 of 3 seeds here), a half-width encoder (16 channels,
# like the quarter-width DHRNet above: a CPU-sized variant of the same architecture), 3 epochs of the
# whole MNIST training partition (48,000 images), seeds 0, 1, 2, judged on the 10,000 test images.
#
# Measured with exactly this test (2-core CPU, 2026-12-02; deterministic on this machine), seed 0 / 1 / 2,
# without augmentation (clustnet.md §2/§6; the default since issue 14):
#   binary accuracy           0.976 / 0.977 / 0.977, mean 0.977
#   mean clustering accuracy  0.487 / 0.504 / 0.516, mean 0.502 (chance 0.2)
# With the contrast/brightness + 4 px crop it used to inherit from DIFAIR (same day, same code otherwise):
# 0.968 / 0.960 / 0.939 (mean 0.956) and 0.538 / 0.498 / 0.295 (mean 0.444).
# Binary accuracy climbs slowly: each expert learns only from the images routed to it. The 0.95
# is asserted on the mean over the seeds, and every seed must reach 0.93.
CLUSTNET = {"lr": 0.01, "batch_size": 16, "balance_weight": 0.1, "enc_channels": 16}
CLUSTNET_EPOCHS = 3
CLUSTNET_SEEDS = [0, 1, 2]
BINARY_ACC_MEAN_MIN = 0.95
BINARY_ACC_SEED_MIN = 0.93
CHANCE = 0.2
CLUSTERING_MARGIN = 0.15  # the mean over seeds of the mean clustering accuracy must exceed chance by this


def test_clustnet_learns_the_groups_and_its_gate_clusters_above_chance():
    from data import load_pool, whole_dataset_split
    from trainables.device_data import DataBundle
    from trainables.tasks import trial_runs

    torch.set_num_threads(2)
    pool = load_pool("mnist", MNIST_ROOT)
    bundle = DataBundle.from_pool(pool, {0: whole_dataset_split(pool)})
    config = {"method": "clustnet", "dataset": "mnist", "splits": [0], "seeds": CLUSTNET_SEEDS,
              "epochs": CLUSTNET_EPOCHS, **CLUSTNET}
    runs = trial_runs(config, bundle, torch.device("cpu"))
    for epoch in range(CLUSTNET_EPOCHS):
        for run in runs.runs:
            run.train_epoch(runs.batch_size, epoch)
    records = pd.DataFrame(runs.test().records)
    test = records.pivot_table(index="seed", columns="metric", values="value")
    assert test["binary_acc"].mean() >= BINARY_ACC_MEAN_MIN, test["binary_acc"].to_dict()
    assert (test["binary_acc"] >= BINARY_ACC_SEED_MIN).all(), test["binary_acc"].to_dict()
    assert test["mean_cluster_acc"].mean() >= CHANCE + CLUSTERING_MARGIN, test["mean_cluster_acc"].to_dict()
    assert (test["mean_cluster_acc"] > CHANCE + 0.05).all(), test["mean_cluster_acc"].to_dict()
    # Both groups are clustered, not one: each group's accuracy is above chance in the mean over seeds.
    assert test["pos_cluster_acc"].mean() > CHANCE and test["neg_cluster_acc"].mean() > CHANCE
    # No seed left the gate collapsed onto one expert.
    assert (test[[f"usage_e{i}" for i in range(5)]].max(axis=1) < 0.9).all()


# Adversarial separation (adversarial.md), default mode (alternating, w = 0.8, balanced pair weighting)
# on the quarter-width three-block net (auto on 1-channel images) at 32 px, with the search's cosine
# schedule at lr 0.05, batch 128 (64 per classifier). The in-run baseline is off: it would double the
# training and is checked on digits (tests/test_adversarial_runs.py).
#
# Measured with exactly this test (2-core CPU, 2026-11-23, 85 s): test accuracy of C1 / C2 / the ensemble
# 0.987 / 0.989 / 0.991, ensemble-MSP AUROC 0.981, JSD AUROC 0.971, disagreement 0.014; D told same-class
# pairs from different-class ones 97% of the time in the last epoch.
ADVERSARIAL = {"lr_cls": 0.05, "lr_schedule": "cosine", "batch_size": 128, "in_run_baseline": False}
ADVERSARIAL_EPOCHS = 2  # the issue asks for "within 3 epochs"; two keep the suite inside its time budget


def test_adversarial_pair_learns_and_its_ensemble_detects_unknowns(mnist_bundle):
    from trainables.open_set import OpenSetRunner

    torch.set_num_threads(2)
    config = {"method": "adversarial", "dataset": "mnist", "splits": [0], "seeds": [0], "epochs": ADVERSARIAL_EPOCHS,
              **ADVERSARIAL}
    runs = OpenSetRunner(config, mnist_bundle, torch.device("cpu"))
    method = runs.runs[0].method
    assert method.config.mode == "alternating" and method.pair.c1.representation_channels == 64
    logs = [runs.runs[0].train_epoch(runs.batch_size, epoch) for epoch in range(ADVERSARIAL_EPOCHS)]
    assert logs[-1]["ce_c1"] < logs[0]["ce_c1"] and logs[-1]["ce_c2"] < logs[0]["ce_c2"]
    assert logs[-1]["d_loss"] < logs[0]["d_loss"]  # D learned its same/different task too
    test = pd.DataFrame(runs.test().records).query("phase == 'test'").set_index("metric")["value"]
    assert test["acc_c1"] >= 0.95 and test["acc_c2"] >= 0.95, test.to_dict()
    assert test["auroc"] >= 0.85, test.to_dict()



# Contrastive Disentangling (contrastive_disentangling.md) on MNIST without labels: the project's small
# CPU backbone (cnn4_native at 28 px; not comparable with the paper's ResNet-34 at 224 px), trained on the
# first CD_TRAIN training images for CD_EPOCHS epochs (crop scale 0.5–1), then k-means (k = 10) on the
# backbone features h of the first CD_TEST test images, which it never saw, against k-means on the raw
# pixels of the same images.
#
# Measured with exactly this test (2-core CPU, 2026-12-01): raw pixels NMI 0.506; h at initialisation
# 0.337. Epochs 4–10, h / f: 0.539/0.495, 0.524/0.549, 0.533/0.577, 0.538/0.644, 0.564/0.646,
# 0.562/0.655, 0.561/0.662 (torch 2.14.1, scikit-learn 1.9.1, numpy 2.4.6). An earlier environment gave
# h 0.564 after 6 epochs; after a fresh install the same code gave 0.533, so the check trains 8 epochs,
# where both heads clear raw pixels by a margin that is not within that noise.
CD = {"backbone": "cnn4_native", "batch_size": 128, "lr": 1e-3, "crop_scale_min": 0.5}
CD_TRAIN = 4_000
CD_TEST = 2_000
CD_EPOCHS = 8
CD_MARGIN = 0.03  # h over the raw pixels' NMI
CD_FEATURE_MARGIN = 0.08  # f over the raw pixels' NMI
CD_LEARNED = 0.1  # over the same network's NMI at initialisation


def test_cd_features_cluster_digits_better_than_raw_pixels():
    from data import load_pool, transductive_split
    from data.pools import ImagePool
    from results_analysis.metrics import kmeans_clusters, nmi
    from trainables.device_data import DataBundle
    from trainables.tasks import trial_runs

    torch.set_num_threads(2)
    full = load_pool("mnist", MNIST_ROOT)
    pool = ImagePool("mnist", full.train_x[:CD_TRAIN], full.train_y[:CD_TRAIN], full.test_x[:CD_TEST],
                     full.test_y[:CD_TEST], 255, full.class_names)
    bundle = DataBundle.from_pool(pool, {0: transductive_split(pool)})
    config = {"method": "cd", "dataset": "mnist", "splits": [0], "seeds": [0], "epochs": CD_EPOCHS, **CD}
    runs = trial_runs(config, bundle, torch.device("cpu"))
    initial = pd.DataFrame(runs.test().records).set_index("metric")["value"]["backbone_nmi"]
    logs = [runs.train_epoch(epoch) for epoch in range(CD_EPOCHS)]
    assert logs[-1]["loss_instance"] < logs[0]["loss_instance"]
    test = pd.DataFrame(runs.test().records).set_index("metric")["value"]
    raw = nmi(pool.test_y.numpy(), kmeans_clusters(pool.test_x.reshape(CD_TEST, -1).numpy() / 255.0, 10))
    assert test["backbone_nmi"] >= raw + CD_MARGIN, (test.to_dict(), raw)
    assert test["feature_nmi"] >= raw + CD_FEATURE_MARGIN, (test.to_dict(), raw)
    assert test["backbone_nmi"] >= initial + CD_LEARNED, (test.to_dict(), initial)
