"""Adversarial network separation (adversarial.md): two classifiers learn the same task on different
halves of every batch while a Siamese discriminator D, reading pairs of their block-3 maps, learns
whether the two images show the same class. The classifiers are pushed to make D answer "different",
which is meant to decorrelate their errors at equal accuracy.

The two are judged as an ensemble: the prediction is the argmax of the averaged logits, the open-set
score its MSP (§8), and their disagreement (Jensen–Shannon divergence) a second score. An in-run
baseline — the same two networks from the same initial weights, trained on the same batches with the
adversarial weight at zero — is evaluated alongside under the ``base/`` output view, so every report
shows what the adversary changed."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import softmax
from torch import nn
from torch.nn import functional as F

from data.augment import AUG_MODES
from methods.base import (
    AT_LEAST_ONE,
    POSITIVE,
    UP_TO_ONE,
    DataInfo,
    DivergedError,
    Method,
    MethodConfig,
    Range,
)
from methods.execution import Execution
from methods.optim import constant_or_cosine
from methods.presets import REFERENCE, Preset
from methods.registry import register
from results_analysis.metrics import (
    accuracy,
    disagreement_rate,
    error_correlation,
    independent_tpa_reference,
    jensen_shannon,
    tp_agreement,
)

MODES = ("alternating", "joint", "none")
ADV_TARGETS = ("different", "flipped")
PAIR_WEIGHTINGS = ("balanced", "none")
LR_SCHEDULES = ("none", "cosine")
# Base width (channels of the first conv) of the §3 classifier: the reference's, and a quarter-width
# version of the same architecture for the grey-scale digit datasets on a CPU.
CLASSIFIER_WIDTHS = {"three_block": 32, "three_block_small": 8}
BASELINE_VIEW = "base"  # output view of the in-run baseline pair (see Method.evaluate)


@dataclass(frozen=True)
class AdversarialConfig(MethodConfig):
    """Defaults are the project's (§7): the reference recipe with w = 0.8, its best reported weight."""

    ranges: ClassVar[dict[str, Range]] = {
        "lr_cls": POSITIVE, "lr_d": POSITIVE, "ce_weight": UP_TO_ONE, "d_steps": AT_LEAST_ONE,
        "d_width": Range(1, example=16), "batch_size": Range(2),  # each classifier gets half of a batch
    }


    mode: str = "alternating"  # alternating | joint (the reference's single step) | none (independent)
    ce_weight: float = 0.8  # w; the adversarial term weighs 1 − w
    adv_target: str = "different"  # different (the reference's) | flipped (fool D, GAN style)
    d_steps: int = 1
    pair_weighting: str = "balanced"  # D loss: positive and negative pairs weigh half each | none
    classifier: str = "auto"  # three_block | three_block_small | auto: small for 1-channel images
    d_width: int | None = None  # c; None: a quarter of the representation's channels (64 for three_block)
    lr_cls: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4  # coupled, as the reference's torch.optim.SGD
    lr_schedule: str = "none"  # none (the reference's) | cosine over the epochs (search studies)
    lr_d: float = 3e-3  # Adam, betas (0.5, 0.999)
    batch_size: int = 256  # total; each classifier gets half
    epochs: int = 300
    aug_mode: str = "crop_flip"  # §2: random crop (4 px padding), flips except on digit datasets
    in_run_baseline: bool = True  # also train the same pair with adversarial weight 0 (not in mode none)

    def __post_init__(self) -> None:
        for key, value, valid in (("mode", self.mode, MODES), ("adv_target", self.adv_target, ADV_TARGETS),
                                  ("pair_weighting", self.pair_weighting, PAIR_WEIGHTINGS),
                                  ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                  ("classifier", self.classifier, ("auto", *CLASSIFIER_WIDTHS)),
                                  ("aug_mode", self.aug_mode, AUG_MODES)):
            if value not in valid:
                raise ValueError(f"{key} must be one of {', '.join(valid)}; got {value!r}")
        if not 0.0 < self.ce_weight <= 1.0:
            raise ValueError(f"ce_weight must be in (0, 1], got {self.ce_weight}")
        if self.lr_cls <= 0 or self.lr_d <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("lr_cls and lr_d must be > 0, weight_decay >= 0, momentum in [0, 1)")
        if self.d_steps < 1 or self.epochs < 1 or (self.d_width is not None and self.d_width < 1):
            raise ValueError("d_steps, epochs and d_width must be >= 1")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (each classifier gets half), got {self.batch_size}")

    @property
    def trains_baseline(self) -> bool:
        return self.in_run_baseline and self.mode != "none"


def resolve_classifier(name: str, channels: int) -> str:
    if name == "auto":
        return "three_block_small" if channels == 1 else "three_block"
    return name


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)


class ThreeBlockNet(nn.Module):
    """§3, at base width w (the reference's w = 32): three conv blocks to the 8w×4×4 representation h
    that D reads, then the FC head. Not residual, despite the reference's name for it."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32, width: int = 32) -> None:
        super().__init__()
        if image_size < 32 or image_size % 8:
            raise ValueError(f"the three-block net needs a side >= 32 and divisible by 8, got {image_size}")
        w = width
        self.block1 = nn.Sequential(_conv3(in_channels, w), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                    _conv3(w, 2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(_conv3(2 * w, 4 * w), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
                                    _conv3(4 * w, 4 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout2d(0.05))
        self.block3 = nn.Sequential(_conv3(4 * w, 8 * w), nn.BatchNorm2d(8 * w), nn.ReLU(inplace=True),
                                    _conv3(8 * w, 8 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        # 64 px inputs (TinyImageNet) give 8×8 maps, pooled to the 4×4 that the head and D expect (§2).
        self.pool = nn.AdaptiveAvgPool2d(4) if image_size > 32 else nn.Identity()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * w * 16, 32 * w), nn.ReLU(inplace=True),
            nn.Linear(32 * w, 16 * w), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(16 * w, num_classes),
        )
        self.representation_channels = 8 * w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, h) with h the (N, 8w, 4, 4) block-3 map."""
        h = self.pool(self.block3(self.block2(self.block1(x))))
        return self.head(h), h


class SiameseDiscriminator(nn.Module):
    """§4: a shared branch b on each representation, |b(h1) − b(h2)|, a conv head to one logit per pair
    (the logit of "same class"). DCGAN initialisation."""

    def __init__(self, in_channels: int = 256, width: int = 64) -> None:
        super().__init__()
        c = width
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, c, 2, padding=1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1, bias=False), nn.BatchNorm2d(4 * c), nn.LeakyReLU(0.2, inplace=True),
        )
        # The final conv keeps a bias (zero at start): the spec leaves it open, and it lets D learn the
        # base rate of same-class pairs (1/K) directly.
        self.head = nn.Sequential(
            nn.Conv2d(4 * c, 8 * c, 4, bias=False), nn.BatchNorm2d(8 * c), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * c, 1, 2),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        # Two branch calls, not one on the concatenation: each side keeps its own BatchNorm batch
        # statistics, as the reference's two calls of the shared branch do.
        merged = (self.branch(h1) - self.branch(h2)).abs()
        return self.head(merged).flatten()


def same_class_targets(y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    """1.0 where the paired images share a class: an equality test, right for any number of classes
    (the reference's XOR is right for {0, 1} labels only, §5)."""
    return (y1 == y2).float()


def discriminator_loss(logits: torch.Tensor, same: torch.Tensor, weighting: str = "balanced") -> torch.Tensor:
    """BCE of D's same-class logits. ``balanced``: the mean over positive pairs and the mean over
    negative pairs weigh half each (the plain mean when the batch holds only one kind); ``none``: the
    plain mean. Written without a data-dependent branch, so it never syncs the GPU."""
    losses = F.binary_cross_entropy_with_logits(logits, same, reduction="none")
    if weighting == "none":
        return losses.mean()
    positive = same > 0.5
    n_pos = positive.sum()
    n_neg = len(same) - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    per_kind = torch.where(positive, 0.5 / n_pos.clamp(min=1), 0.5 / n_neg.clamp(min=1))
    weights = torch.where(both, per_kind, torch.full_like(per_kind, 1.0 / len(same)))
    return (weights * losses).sum()


def adversarial_term(logits: torch.Tensor, same: torch.Tensor, target: str = "different") -> torch.Tensor:
    """A, the classifiers' adversarial loss (§5): ``different`` — BCE towards "different" for every
    pair; ``flipped`` — BCE towards the opposite of the truth (fool D)."""
    goal = torch.zeros_like(logits) if target == "different" else 1.0 - same
    return F.binary_cross_entropy_with_logits(logits, goal)


def classifier_objective(ce1: torch.Tensor, ce2: torch.Tensor, adv: torch.Tensor, ce_weight: float) -> torch.Tensor:
    """L_C = w·CE₁ + w·CE₂ + (1 − w)·A: the shared adversarial term counted once (§6.1)."""
    return ce_weight * (ce1 + ce2) + (1.0 - ce_weight) * adv


def joint_objective(d_loss: torch.Tensor, ce1: torch.Tensor, ce2: torch.Tensor, adv: torch.Tensor,
                    ce_weight: float) -> torch.Tensor:
    """J = L_D + L₁ + L₂ with L_k = w·CE_k + (1 − w)·A: what all three networks descend in the
    reference's single joint step (§6.2), so A counts twice."""
    return d_loss + ce_weight * (ce1 + ce2) + 2.0 * (1.0 - ce_weight) * adv


def ensemble_outputs(logits1: np.ndarray, logits2: np.ndarray) -> dict[str, np.ndarray]:
    """§8, from the two members' logits: the ensemble prediction (argmax of the averaged logits), each
    member's prediction, and the open-set scores (higher = more unknown): ``msp`` (the primary,
    −max softmax of the averaged logits), ``jsd`` (JSD(p₁, p₂), the members' disagreement) and each
    member's own MSP."""
    mean = (logits1 + logits2) / 2
    p1, p2 = softmax(logits1, axis=1), softmax(logits2, axis=1)
    return {
        "pred": mean.argmax(axis=1), "pred_c1": logits1.argmax(axis=1), "pred_c2": logits2.argmax(axis=1),
        "score_msp": -softmax(mean, axis=1).max(axis=1), "score_jsd": jensen_shannon(p1, p2).astype(np.float32),
        "score_msp_c1": -p1.max(axis=1), "score_msp_c2": -p2.max(axis=1),
    }


def diversity_metrics(outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Per-member accuracy, the ensemble's gain over their mean, the TP-agreement histogram next to the
    one independent errors would give, the disagreement rate and the correlation of the errors (§8)."""
    acc1, acc2 = accuracy(labels, outputs["pred_c1"]), accuracy(labels, outputs["pred_c2"])
    correct = np.stack([outputs["pred_c1"] == labels, outputs["pred_c2"] == labels])
    metrics = {"acc_c1": acc1, "acc_c2": acc2,
               "ensemble_gain": accuracy(labels, outputs["pred"]) - (acc1 + acc2) / 2,
               "disagreement": disagreement_rate(outputs["pred_c1"], outputs["pred_c2"])}
    metrics.update(tp_agreement(correct))
    reference = independent_tpa_reference([acc1, acc2])
    metrics.update({f"tpa_indep_{k.removeprefix('tpa_')}": v for k, v in reference.items()})
    metrics.update(error_correlation(outputs["pred_c1"], outputs["pred_c2"], labels))
    return metrics


class ClassifierPair(nn.Module):
    """C1 and C2: two separately initialised classifiers of the same architecture."""

    def __init__(self, make: Callable[[], ThreeBlockNet]) -> None:
        super().__init__()
        self.c1, self.c2 = make(), make()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        l1, h1 = self.c1(x1)
        l2, h2 = self.c2(x2)
        return l1, h1, l2, h2


@register("adversarial")
class Adversarial(Method):
    Config = AdversarialConfig
    config: AdversarialConfig
    primary_score: ClassVar[str] = "msp"  # §8: ensemble-MSP, as the baselines' MSP convention

    def __init__(self, config: AdversarialConfig, info: DataInfo) -> None:
        super().__init__(config, info)
        kind = resolve_classifier(config.classifier, info.channels)
        width = CLASSIFIER_WIDTHS[kind]
        self.pair = ClassifierPair(lambda: ThreeBlockNet(info.channels, info.num_known, info.image_size, width))
        rep = self.pair.c1.representation_channels
        self.discriminator = SiameseDiscriminator(rep, config.d_width or rep // 4)
        # The baseline starts from the very same weights, so the two pairs differ only by the adversary.
        self.baseline = copy.deepcopy(self.pair) if config.trains_baseline else None
        for module in (self.pair, self.discriminator, self.baseline):
            if module is not None:
                module.to(info.device, memory_format=torch.channels_last)
        self.optimizer = self._sgd(self.pair)
        self.baseline_optimizer = self._sgd(self.baseline) if self.baseline is not None else None
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=(0.5, 0.999))

    @classmethod
    def report_notes(cls, metrics: Collection[str]) -> list[str]:
        if not any(m.startswith("base_") for m in metrics):
            return []  # trained without its in-run baseline (trains_baseline: false)
        return ["base: the in-run baseline, the same pair trained with adversarial weight 0; "
                "Δ: the paired difference, method − base"]

    @classmethod
    def input_size(cls, config: MethodConfig, dataset: str, native_size: int) -> int:
        # §2: inputs below 32 px (digits 8, MNIST 28) are resized to 32, so h is 4×4 as D expects.
        return max(native_size, 32)

    @classmethod
    def presets(cls, dataset: str) -> dict[str, Preset]:
        """§7 reference column: the joint update at the best-reported w = 0.8 on the full-width net. The
        reference's own numbers are on cat vs dog (§9), a task the project does not run."""
        if dataset in ("digits", "cifar100_20"):
            return {}
        config = {"mode": "joint", "ce_weight": 0.8, "adv_target": "different", "d_steps": 1,
                  "pair_weighting": "none", "classifier": "three_block", "d_width": 64, "lr_cls": 1e-3,
                  "momentum": 0.9, "weight_decay": 5e-4, "lr_schedule": "none", "lr_d": 3e-3, "batch_size": 256,
                  "epochs": 300, "aug_mode": "crop_flip"}
        run = {"input_size": 64 if dataset == "tiny_imagenet" else 32, "final_train_fraction": 1.0}
        return {REFERENCE: Preset("adversarial.md §7", config, run)}

    @classmethod
    def effective_config(cls, config: MethodConfig, info: DataInfo) -> dict[str, Any]:
        effective = super().effective_config(config, info)
        kind = resolve_classifier(effective["classifier"], info.channels)
        # d_width None is a quarter of the representation's channels (8 × the classifier's base width).
        return {**effective, "classifier": kind, "d_width": effective["d_width"] or 2 * CLASSIFIER_WIDTHS[kind]}

    def _sgd(self, pair: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(pair.parameters(), lr=c.lr_cls, momentum=c.momentum, weight_decay=c.weight_decay)

    def lr_for_epoch(self, epoch: int) -> float:
        c = self.config
        return constant_or_cosine(epoch, c.lr_cls, c.epochs, c.lr_schedule)

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        lr = self.lr_for_epoch(epoch)
        for optimizer in (self.optimizer, self.baseline_optimizer):
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
        for module in (self.pair, self.discriminator, self.baseline):
            if module is not None:
                module.train()
        totals: dict[str, torch.Tensor] = {}
        pairs = 0
        for x, y in batches:
            half = len(y) // 2  # §2: an odd leftover image is dropped
            x1, y1, x2, y2 = x[:half], y[:half], x[half:2 * half], y[half:2 * half]
            logs = self.step(x1, y1, x2, y2)
            if self.baseline is not None:
                base = independent_step(self.baseline, self.baseline_optimizer, x1, y1, x2, y2,
                                        self.config.ce_weight, self.execution)
                logs.update({f"base_{k}": v for k, v in base.items()})
            for key, value in logs.items():
                # Summed on the device: a .item() per step would sync the GPU every batch.
                totals[key] = totals.get(key, 0) + value.detach() * half
            pairs += half
        logs = {k: (v / max(pairs, 1)).item() for k, v in totals.items()}
        for key in ("train_loss", "base_train_loss"):
            if key in logs and not math.isfinite(logs[key]):
                raise DivergedError(f"{self.name}: {key} became {logs[key]} at epoch {epoch} (lr {lr:.4g})")
        return {**logs, "lr": lr}

    def step(self, x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step of the configured mode on the two half-batches; returns its losses."""
        if self.config.mode == "none":
            return independent_step(self.pair, self.optimizer, x1, y1, x2, y2, execution=self.execution)
        if self.config.mode == "joint":
            return self.joint_step(x1, y1, x2, y2)
        return self.alternating_step(x1, y1, x2, y2)

    def alternating_step(self, x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """§6.1: D learns on detached representations; then the classifiers step against the updated D,
        whose weights take no gradient in that pass."""
        c = self.config
        l1, h1, l2, h2 = self.run_network(self.pair, x1, x2)
        same = same_class_targets(y1, y2)
        for _ in range(c.d_steps):
            d_logits = self.run_network(self.discriminator, h1.detach(), h2.detach())
            d_loss = discriminator_loss(d_logits, same, c.pair_weighting)
            self.d_optimizer.zero_grad(set_to_none=True)
            self.execution.backward_step(d_loss, self.d_optimizer)
        self.discriminator.requires_grad_(False)
        try:
            d_logits = self.run_network(self.discriminator, h1, h2)
        finally:
            self.discriminator.requires_grad_(True)
        ce1, ce2 = F.cross_entropy(l1, y1), F.cross_entropy(l2, y2)
        adv = adversarial_term(d_logits, same, c.adv_target)
        loss = classifier_objective(ce1, ce2, adv, c.ce_weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.execution.backward_step(loss, self.optimizer)
        return {"train_loss": loss, "ce_c1": ce1, "ce_c2": ce2, "adv_loss": adv, "d_loss": d_loss,
                **_d_readout(d_logits.detach(), same)}

    def joint_step(self, x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """§6.2, the reference's update: one forward of D on the non-detached representations, one
        backward of J into all three networks, then all three step. Not a min–max game."""
        c = self.config
        l1, h1, l2, h2 = self.run_network(self.pair, x1, x2)
        same = same_class_targets(y1, y2)
        d_logits = self.run_network(self.discriminator, h1, h2)
        d_loss = discriminator_loss(d_logits, same, "none")  # the reference's unweighted mean
        ce1, ce2 = F.cross_entropy(l1, y1), F.cross_entropy(l2, y2)
        adv = adversarial_term(d_logits, same, c.adv_target)
        loss = joint_objective(d_loss, ce1, ce2, adv, c.ce_weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.execution.backward_step(loss, self.d_optimizer, self.optimizer)
        return {"train_loss": loss, "ce_c1": ce1, "ce_c2": ce2, "adv_loss": adv, "d_loss": d_loss,
                **_d_readout(d_logits.detach(), same)}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        """The ensemble's outputs (``ensemble_outputs``), and the in-run baseline's under ``base/``."""
        pairs = {"": self.pair}
        if self.baseline is not None:
            pairs[f"{BASELINE_VIEW}/"] = self.baseline
        for pair in pairs.values():
            pair.eval()
        logits: dict[str, list[list[torch.Tensor]]] = {prefix: [[], []] for prefix in pairs}
        for x in batches:
            for prefix, pair in pairs.items():
                l1, _, l2, _ = self.run_network(pair, x, x)
                logits[prefix][0].append(l1.float())
                logits[prefix][1].append(l2.float())
        result: dict[str, np.ndarray] = {}
        for prefix, (first, second) in logits.items():
            out = ensemble_outputs(torch.cat(first).cpu().numpy(), torch.cat(second).cpu().numpy())
            out["score"] = out[f"score_{self.primary_score}"]
            result.update({f"{prefix}{k}": v for k, v in out.items()})
        return result

    def diagnostics(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        return diversity_metrics(outputs, labels)

    def batchnorm_networks(self) -> list[nn.Module]:
        # Both pairs, which evaluation runs. Not D: it only ever runs in training mode (§6.1, batch
        # statistics), so its running statistics are never read.
        return [pair for pair in (self.pair, self.baseline) if pair is not None]

    def batchnorm_forward(self, x: torch.Tensor) -> None:
        for pair in self.batchnorm_networks():
            self.run_network(pair, x, x)

    def state_dict(self) -> dict[str, Any]:
        state = {"pair": self.pair.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "discriminator": self.discriminator.state_dict(), "d_optimizer": self.d_optimizer.state_dict()}
        if self.baseline is not None:
            state["baseline"] = self.baseline.state_dict()
            state["baseline_optimizer"] = self.baseline_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pair.load_state_dict(state["pair"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        if self.baseline is not None:
            self.baseline.load_state_dict(state["baseline"])
            self.baseline_optimizer.load_state_dict(state["baseline_optimizer"])


def independent_step(pair: ClassifierPair, optimizer: torch.optim.Optimizer, x1: torch.Tensor, y1: torch.Tensor,
                     x2: torch.Tensor, y2: torch.Tensor, ce_weight: float = 1.0,
                     execution: Execution | None = None) -> dict[str, torch.Tensor]:
    """§6.3: each classifier on cross-entropy of its own half-batch, no discriminator. ``ce_weight`` w
    makes it the adversarial objective w·CE₁ + w·CE₂ with A = 0 (the in-run baseline), so the baseline
    differs from the pair by the adversary alone and not by a learning rate w times larger. ``execution``:
    the method's precision and loss scaling (None: fp32 on the pair's device, uncompiled)."""
    if execution is None:
        execution = Execution("fp32", next(pair.parameters()).device)
    l1, _, l2, _ = execution.run(pair, x1, x2)
    ce1, ce2 = F.cross_entropy(l1, y1), F.cross_entropy(l2, y2)
    loss = ce_weight * (ce1 + ce2)
    optimizer.zero_grad(set_to_none=True)
    execution.backward_step(loss, optimizer)
    return {"train_loss": loss, "ce_c1": ce1, "ce_c2": ce2}


def _d_readout(d_logits: torch.Tensor, same: torch.Tensor) -> dict[str, torch.Tensor]:
    """D's accuracy on the step's pairs and its mean "same class" probability (what A pushes down)."""
    return {"d_acc": ((d_logits > 0).float() == same).float().mean(), "d_same_prob": torch.sigmoid(d_logits).mean()}
