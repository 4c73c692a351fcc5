"""The learning tier's trainings on real MNIST (../shared/datasets): recipes, and what each training
keeps for the checks (logs, test metrics, scores; not the network or its copies of the data).

Each training is a job, named in ``JOBS`` and keyed by its method, config and data; tests/learning/
conftest.py runs every job the session's checks need once, in worker processes, and hands the result
to every check that reads it (tests/learning/test_learns_mnist.py holds the checks and their thresholds).

A job trains with one torch thread unless its check needs two (``Job.threads``). Measured on this 2-core
machine (2026-12-02, another process busy on the other core): ClustNet's batch-16 steps took 146 ms with
two threads and 5.5 ms with one (many small ops, each waiting for the second thread); at batch 128 two
threads were 1.4-1.9x faster than one, and two one-thread jobs side by side use both cores without that
wait. The thread count changes the order of floating-point sums and so the numbers a training ends
with: CD's backbone NMI cleared raw pixels by 0.011 with one thread (the check asks 0.03; 0.028 measured
with two), so CD trains with the two threads its thresholds were measured with. OpenMax's check did too
(test AUROC 0.918 with two threads, 0.886 with one, against 0.90, on DIFAIR's recipe); on the recipe
the MNIST benchmark's search chose it clears every threshold by a wide margin on one. Each run seeds its own RNG
when it is built (trainables/split_run.py): a job's numbers do not depend on which jobs ran before it
in the same worker."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from repo_paths import MNIST_ROOT

MNIST_PRESENT = (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
# A training draws on the first ``train_images`` of MNIST's 60,000 training images (the training set is
# shuffled: every digit is there about equally often) and is judged on all 10,000 test images. Three
# jobs take the first 40,000, which keeps each check's margin (measured 2026-12-03, one torch thread,
# 40,000 against 60,000 images; 20,000 fell below: CROSR 0.899, OpenMax 0.884, DIFAIR 0.733 AUROC):
#   crosr        test AUROC 0.944 / 0.981, accuracy 0.982 / 0.982 (80 s against 114 s)
#   openmax      OpenMax AUROC 0.942 / 0.961, MLS 0.959 / 0.982, MSP 0.960 / 0.982, accuracy 0.984 / 0.988
#                (45 s against 79 s)
#   adversarial  accuracy C1 0.970 / 0.970, C2 0.981 / 0.987, AUROC 0.960 / 0.958 (34 s against 47 s)
# DIFAIR and ClustNet keep all 60,000: DIFAIR's AUROC fell with fewer (0.733 at 20,000), and ClustNet's
# clustering accuracy, the noisiest check, had a margin of 0.045 at 30,000.
ALL_TRAIN_IMAGES = 60_000

# The 3-epoch recipe is one cosine cycle (restarts 0, no warm-up) at lr 0.1: with the spec's 600-epoch
# schedule shape (10 warm-up epochs, 2 restarts) three epochs would never leave the warm-up.
COSINE_3_EPOCHS = {"warmup_epochs": 0, "restarts": 0, "lr": 0.1}
OPEN_SET_EPOCHS = 3
# The config the MNIST benchmark's search chose on validation for the softmax baseline (and OpenMax: the
# same sampler seed drew the same network recipe), 4 trials × 3 epochs on split 0 (bench/RESULTS.md,
# 2026-12-02): label smoothing, batch 32, one cosine cycle per epoch. Measured with this training on all
# 60,000 training images, one torch thread (2026-12-03; on 40,000 see above): test AUROC 0.9645
# (OpenMax), 0.984 (MLS), 0.9845 (MSP), accuracy 0.990, validation AUROC 0.9647; with COSINE_3_EPOCHS it
# was 0.886 / 0.891 / 0.921 on one thread.
SEARCHED_SOFTMAX_3_EPOCHS = {
    "lr": 0.12520653814999466, "batch_size": 32, "label_smoothing": 0.5813047017599905, "dropout": 0.2,
    "lr_schedule": "cosine_restarts", "restarts": 2, "warmup_epochs": 0, "optimizer": "sgd_decoupled",
    "momentum": 0.9, "weight_decay": 0.0001, "aug_mode": "torchvision", "aug_magnitude": 9,
    "tailsize": 50, "alpha_rank": 4, "distance": "eucos",
}
OPEN_SET_TRAIN_IMAGES = {"difair": ALL_TRAIN_IMAGES, "openmax": 40_000, "crosr": 40_000}
OPEN_SET = {  # method: its recipe's overrides of the defaults
    "difair": COSINE_3_EPOCHS,
    # openmax is the softmax baseline's network, recipe and RNG stream with OpenMax on its logits, so
    # this one training also checks the baseline: its MLS and MSP scores are checked too.
    "openmax": SEARCHED_SOFTMAX_3_EPOCHS,
    # CROSR's own recipe (StepLR from lr 0.05, its jitter + affine augmentation) on quarter-width DHRNet.
    "crosr": {},
}

# ClustNet (clustnet.md): the README's lr 0.01 at batch 16, the load-balancing bonus β = 0.1 (with
# β = 0 the gate collapsed onto one expert in 2 of 3 seeds here), a half-width encoder (16 channels,
# like the quarter-width DHRNet above: a CPU-sized variant of the same architecture), 3 epochs of the
# whole MNIST training partition (48,000 images), seeds 0, 1, 2, judged on the 10,000 test images.
CLUSTNET = {"lr": 0.01, "batch_size": 16, "balance_weight": 0.1, "enc_channels": 16}
CLUSTNET_EPOCHS = 3
CLUSTNET_SEEDS = [0, 1, 2]

# Adversarial separation (adversarial.md), default mode (alternating, w = 0.8, balanced pair weighting)
# on the quarter-width three-block net (auto on 1-channel images) at 32 px, with the search's cosine
# schedule at lr 0.05, batch 128 (64 per classifier). The in-run baseline is off: it would double the
# training and is checked on digits (tests/unit/test_adversarial_runs.py).
ADVERSARIAL = {"lr_cls": 0.05, "lr_schedule": "cosine", "batch_size": 128, "in_run_baseline": False}
ADVERSARIAL_TRAIN_IMAGES = 40_000
ADVERSARIAL_EPOCHS = 2  # the issue asks for "within 3 epochs"; two keep the suite inside its time budget

# Contrastive Disentangling (contrastive_disentangling.md) on MNIST without labels: the project's small
# CPU backbone (cnn4_native at 28 px; not comparable with the paper's ResNet-34 at 224 px), trained on the
# first CD_TRAIN training images for CD_EPOCHS epochs (crop scale 0.5–1), then k-means (k = 10) on the
# backbone features h of the first CD_TEST test images, which it never saw, against k-means on the raw
# pixels of the same images.
CD = {"backbone": "cnn4_native", "batch_size": 128, "lr": 1e-3, "crop_scale_min": 0.5}
CD_TRAIN = 4_000
CD_TEST = 2_000
CD_EPOCHS = 8


def phase_metrics(records: list[dict[str, Any]], phase: str = "test") -> pd.Series:
    """metric -> value of one run's records of ``phase``."""
    return pd.DataFrame(records).query("phase == @phase").set_index("metric")["value"]


@functools.cache
def mnist_files():
    """The whole MNIST pool, read from disk once per worker process (jobs of either size share it)."""
    from data import load_pool

    return load_pool("mnist", MNIST_ROOT)


@functools.cache
def mnist_pool(train_images: int = ALL_TRAIN_IMAGES):
    """MNIST with its first ``train_images`` training images and every test image, once per worker."""
    import dataclasses

    full = mnist_files()
    return dataclasses.replace(full, train_x=full.train_x[:train_images], train_y=full.train_y[:train_images])


@functools.cache
def mnist_split0(train_images: int = ALL_TRAIN_IMAGES):
    """Open-set split 0 of MNIST (the open-set methods and the adversarial pair), once per worker."""
    from data import make_split
    from trainables.device_data import DataBundle

    pool = mnist_pool(train_images)
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


# --- the open-set methods ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSetTraining:
    method: str
    trunk: str  # class name of the network's trunk as built
    first_stage_channels: int | None  # DHRNet's first stage width (crosr), else None
    first: dict[str, Any]  # epoch 0's training log
    last: dict[str, Any]  # the last epoch's report: training and validation
    test: pd.Series  # test metric -> value
    scores: pd.DataFrame  # per test image scores, with is_unknown


def open_set_config(method: str) -> dict[str, Any]:
    return {"method": method, "dataset": "mnist", "splits": [0], "seeds": [0], "epochs": OPEN_SET_EPOCHS,
            **OPEN_SET[method]}


def train_open_set(method: str) -> OpenSetTraining:
    from trainables.open_set import OpenSetRunner

    runs = OpenSetRunner(open_set_config(method), mnist_split0(OPEN_SET_TRAIN_IMAGES[method]), torch.device("cpu"))
    run = runs.runs[0]
    model = run.method.model
    trunk = type(getattr(model, "backbone", model)).__name__
    stage_channels = model.stages[0][0].out_channels if method == "crosr" else None
    first = run.train_epoch(runs.batch_size, 0)
    for epoch in range(1, OPEN_SET_EPOCHS - 1):
        run.train_epoch(runs.batch_size, epoch)
    # Validates (and fits OpenMax) once, on the final model: ~35 s less per method than every epoch.
    last = runs.train_epoch(OPEN_SET_EPOCHS - 1)
    outcome = runs.test()
    return OpenSetTraining(method, trunk, stage_channels, first, last, phase_metrics(outcome.records),
                           outcome.scores)


# --- ClustNet ---------------------------------------------------------------------------------------


CLUSTNET_CONFIG = {"method": "clustnet", "dataset": "mnist", "splits": [0], "seeds": CLUSTNET_SEEDS,
                   "epochs": CLUSTNET_EPOCHS, **CLUSTNET}


def train_clustnet() -> pd.DataFrame:
    """ClustNet's test metrics, one row per seed."""
    from data import whole_dataset_split
    from trainables.device_data import DataBundle
    from trainables.tasks import trial_runs

    pool = mnist_pool()
    bundle = DataBundle.from_pool(pool, {0: whole_dataset_split(pool)})
    runs = trial_runs(CLUSTNET_CONFIG, bundle, torch.device("cpu"))
    for epoch in range(CLUSTNET_EPOCHS):
        for run in runs.runs:
            run.train_epoch(runs.batch_size, epoch)
    records = pd.DataFrame(runs.test().records)
    return records.pivot_table(index="seed", columns="metric", values="value")


# --- the adversarial pair ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AdversarialTraining:
    mode: str
    representation_channels: int  # of classifier C1
    logs: list[dict[str, Any]]  # one training log per epoch
    test: pd.Series


ADVERSARIAL_CONFIG = {"method": "adversarial", "dataset": "mnist", "splits": [0], "seeds": [0],
                      "epochs": ADVERSARIAL_EPOCHS, **ADVERSARIAL}


def train_adversarial() -> AdversarialTraining:
    from trainables.open_set import OpenSetRunner

    runs = OpenSetRunner(ADVERSARIAL_CONFIG, mnist_split0(ADVERSARIAL_TRAIN_IMAGES), torch.device("cpu"))
    method = runs.runs[0].method
    logs = [runs.runs[0].train_epoch(runs.batch_size, epoch) for epoch in range(ADVERSARIAL_EPOCHS)]
    return AdversarialTraining(method.config.mode, method.pair.c1.representation_channels, logs,
                               phase_metrics(runs.test().records))


# --- Contrastive Disentangling ----------------------------------------------------------------------


@dataclass(frozen=True)
class CdTraining:
    initial_backbone_nmi: float  # the same network's, at initialisation
    logs: list[dict[str, Any]]
    test: pd.Series  # backbone_nmi, feature_nmi, …
    raw_pixel_nmi: float  # k-means on the raw pixels of the same test images


CD_CONFIG = {"method": "cd", "dataset": "mnist", "splits": [0], "seeds": [0], "epochs": CD_EPOCHS, **CD}


def train_cd() -> CdTraining:
    from data import transductive_split
    from data.pools import ImagePool
    from results_analysis.metrics import kmeans_clusters, nmi
    from trainables.device_data import DataBundle
    from trainables.tasks import trial_runs

    full = mnist_pool()
    pool = ImagePool("mnist", full.train_x[:CD_TRAIN], full.train_y[:CD_TRAIN], full.test_x[:CD_TEST],
                     full.test_y[:CD_TEST], 255, full.class_names)
    bundle = DataBundle.from_pool(pool, {0: transductive_split(pool)})
    runs = trial_runs(CD_CONFIG, bundle, torch.device("cpu"))
    initial = pd.DataFrame(runs.test().records).set_index("metric")["value"]["backbone_nmi"]
    logs = [runs.train_epoch(epoch) for epoch in range(CD_EPOCHS)]
    test = pd.DataFrame(runs.test().records).set_index("metric")["value"]
    raw = nmi(pool.test_y.numpy(), kmeans_clusters(pool.test_x.reshape(CD_TEST, -1).numpy() / 255.0, 10))
    return CdTraining(float(initial), logs, test, float(raw))


# --- the jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    config: dict[str, Any]
    data: str  # which images it trains and is judged on
    train: Callable[[], Any]
    minutes: float  # about how long it trains here: the longest start first
    threads: int = 1  # torch threads (see the module's docstring)

    @property
    def key(self) -> str:
        return json.dumps({"config": self.config, "data": self.data}, sort_keys=True)


def open_set_job(method: str, minutes: float, threads: int = 1) -> Job:
    data = f"mnist train[:{OPEN_SET_TRAIN_IMAGES[method]}] split 0"
    return Job(open_set_config(method), data, lambda: train_open_set(method), minutes, threads)


JOBS: dict[str, Job] = {
    "difair": open_set_job("difair", 1.2),
    "openmax": open_set_job("openmax", 0.75),
    "crosr": open_set_job("crosr", 1.3),
    "clustnet": Job(CLUSTNET_CONFIG, "mnist whole-dataset split", train_clustnet, 1.8),
    "adversarial": Job(ADVERSARIAL_CONFIG, f"mnist train[:{ADVERSARIAL_TRAIN_IMAGES}] split 0", train_adversarial,
                       0.6),
    "cd": Job(CD_CONFIG, f"mnist train[:{CD_TRAIN}] + test[:{CD_TEST}], transductive", train_cd, 0.9,
              threads=2),
}


def run_job(name: str) -> Any:
    """Runs job ``name`` in this process (a worker's entry point)."""
    torch.set_num_threads(JOBS[name].threads)
    return JOBS[name].train()
