"""It learns: on real MNIST split 0 (../shared/datasets; the first 40,000 or all 60,000 training images,
tests/learning/trainings.py says which and why) the small backbone reaches test AUROC ≥ 0.90 and
closed-set accuracy ≥ 0.95 within 3 epochs, for DIFAIR, the CE baseline (through OpenMax, which
is the baseline's network with the OpenMax head on top), OpenMax and CROSR. ClustNet learns the
binary P/N task and its gate clusters the hidden classes above chance, both classifiers of the
adversarial pair learn while their ensemble detects the unknown digits, and Contrastive Disentangling's
unsupervised features cluster the digits better than raw pixels.

Each model is trained once per session (the fixtures and recipes are in tests/learning/conftest.py);
the checks below each read one training."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mnist]


# --- DIFAIR, OpenMax (and through it the CE baseline), CROSR: parametrized by open_set_training --------
TRUNK = {"difair": "SmallCNN", "openmax": "SmallCNN", "crosr": "DHRNet"}  # class name of the small trunk
PRIMARY_SCORE = {"difair": "min_distance", "openmax": "openmax", "crosr": "openmax"}


def test_the_small_trunk_is_built(open_set_training):
    assert open_set_training.trunk == TRUNK[open_set_training.method]
    if open_set_training.method == "crosr":
        assert open_set_training.first_stage_channels == 16  # the quarter-width ("small") DHRNet


def test_training_lowers_the_loss_and_validates_within_three_epochs(open_set_training):
    first, last = open_set_training.first, open_set_training.last
    assert last["train_loss"] < first["train_loss"]
    assert last["val_auroc"] >= 0.85, last


def test_test_auroc_and_closed_set_accuracy_within_three_epochs(open_set_training):
    test = open_set_training.test
    assert test["auroc"] >= 0.90, test.to_dict()
    assert test["acc"] >= 0.95, test.to_dict()
    if open_set_training.method == "openmax":  # the CE baseline's own scores, on the same network
        assert test["auroc_mls"] >= 0.90 and test["auroc_msp"] >= 0.90, test.to_dict()


def test_reported_auroc_is_the_primary_scores_on_the_balanced_test_set(open_set_training):
    scores = open_set_training.scores
    assert len(scores) == 2 * int(scores["is_unknown"].sum())
    assert f"score_{PRIMARY_SCORE[open_set_training.method]}" in scores


# --- ClustNet ---------------------------------------------------------------------------------------
# Measured with exactly this training (2-core CPU, 2026-12-02; deterministic on this machine), seed 0 / 1 / 2,
# without augmentation (clustnet.md §2/§6; the default since issue 14):
#   binary accuracy           0.976 / 0.977 / 0.977, mean 0.977
#   mean clustering accuracy  0.487 / 0.504 / 0.516, mean 0.502 (chance 0.2)
# Those were with two torch threads; since issue 16 the training runs on one (tests/learning/trainings.py:
# 26x faster per step here), which sums in another order: binary accuracy 0.977 / 0.976 / 0.975 (2026-12-02).
# With the contrast/brightness + 4 px crop it used to inherit from DIFAIR (same day, same code otherwise):
# 0.968 / 0.960 / 0.939 (mean 0.956) and 0.538 / 0.498 / 0.295 (mean 0.444).
# Binary accuracy climbs slowly: each expert learns only from the images routed to it. The 0.95
# is asserted on the mean over the seeds, and every seed must reach 0.93.
BINARY_ACC_MEAN_MIN = 0.95
BINARY_ACC_SEED_MIN = 0.93
CHANCE = 0.2
CLUSTERING_MARGIN = 0.15  # the mean over seeds of the mean clustering accuracy must exceed chance by this


def test_clustnet_learns_the_binary_groups(clustnet_training):
    test = clustnet_training
    assert test["binary_acc"].mean() >= BINARY_ACC_MEAN_MIN, test["binary_acc"].to_dict()
    assert (test["binary_acc"] >= BINARY_ACC_SEED_MIN).all(), test["binary_acc"].to_dict()


def test_clustnet_gate_clusters_above_chance_in_both_groups(clustnet_training):
    test = clustnet_training
    assert test["mean_cluster_acc"].mean() >= CHANCE + CLUSTERING_MARGIN, test["mean_cluster_acc"].to_dict()
    assert (test["mean_cluster_acc"] > CHANCE + 0.05).all(), test["mean_cluster_acc"].to_dict()
    # Both groups are clustered, not one: each group's accuracy is above chance in the mean over seeds.
    assert test["pos_cluster_acc"].mean() > CHANCE and test["neg_cluster_acc"].mean() > CHANCE


def test_clustnet_gate_never_collapses_onto_one_expert(clustnet_training):
    assert (clustnet_training[[f"usage_e{i}" for i in range(5)]].max(axis=1) < 0.9).all()


# --- the adversarial pair ---------------------------------------------------------------------------
# Measured with exactly this training (2-core CPU, 2026-11-23, 85 s): test accuracy of C1 / C2 / the
# ensemble 0.987 / 0.989 / 0.991, ensemble-MSP AUROC 0.981, JSD AUROC 0.971, disagreement 0.014; D told
# same-class pairs from different-class ones 97% of the time in the last epoch. On one torch thread (since
# issue 16, tests/learning/trainings.py; 2026-12-02): 0.980 / 0.988 / 0.989, AUROC 0.970, JSD AUROC 0.956.
# On the first 40,000 training images (2026-12-03): C1 / C2 0.970 / 0.981, AUROC 0.960.


def test_adversarial_pair_is_the_default_alternating_quarter_width_net(adversarial_training):
    assert adversarial_training.mode == "alternating" and adversarial_training.representation_channels == 64


def test_adversarial_pair_and_its_discriminator_learn(adversarial_training):
    logs = adversarial_training.logs
    assert logs[-1]["ce_c1"] < logs[0]["ce_c1"] and logs[-1]["ce_c2"] < logs[0]["ce_c2"]
    assert logs[-1]["d_loss"] < logs[0]["d_loss"]  # D learned its same/different task too


def test_adversarial_pair_classifies_and_its_ensemble_detects_unknowns(adversarial_training):
    test = adversarial_training.test
    assert test["acc_c1"] >= 0.95 and test["acc_c2"] >= 0.95, test.to_dict()
    assert test["auroc"] >= 0.85, test.to_dict()


# --- Contrastive Disentangling ----------------------------------------------------------------------
# Measured with exactly this training (2-core CPU, 2026-12-01): raw pixels NMI 0.506; h at initialisation
# 0.337. Epochs 4–10, h / f: 0.539/0.495, 0.524/0.549, 0.533/0.577, 0.538/0.644, 0.564/0.646,
# 0.562/0.655, 0.561/0.662 (torch 2.14.1, scikit-learn 1.9.1, numpy 2.4.6). An earlier environment gave
# h 0.564 after 6 epochs; after a fresh install the same code gave 0.533, so the check trains 8 epochs,
# where both heads clear raw pixels by a margin that is not within that noise.
CD_MARGIN = 0.03  # h over the raw pixels' NMI
CD_FEATURE_MARGIN = 0.08  # f over the raw pixels' NMI
CD_LEARNED = 0.1  # over the same network's NMI at initialisation


def test_cd_instance_loss_falls(cd_training):
    assert cd_training.logs[-1]["loss_instance"] < cd_training.logs[0]["loss_instance"]


def test_cd_features_cluster_digits_better_than_raw_pixels(cd_training):
    test, raw = cd_training.test, cd_training.raw_pixel_nmi
    assert test["backbone_nmi"] >= raw + CD_MARGIN, (test.to_dict(), raw)
    assert test["feature_nmi"] >= raw + CD_FEATURE_MARGIN, (test.to_dict(), raw)


def test_cd_features_are_learned_not_those_of_the_initial_network(cd_training):
    test, initial = cd_training.test, cd_training.initial_backbone_nmi
    assert test["backbone_nmi"] >= initial + CD_LEARNED, (test.to_dict(), initial)
