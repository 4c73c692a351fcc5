"""CROSR: the DHRNet classification-reconstruction network scored by OpenMax (crosr_openmax.md §2–§5).

DHRNet is a VGG-style classifier with three latent bottlenecks z₁..z₃ and a top-down decoder that
rebuilds the input from them. It trains on cross-entropy + λ·MSE(reconstruction, normalised input);
at test time OpenMax runs on the activation vector [logits, pooled z₃, z₂, z₁]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from data.augment import AUG_MODES
from methods.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    UP_TO_ONE,
    DataInfo,
    MethodConfig,
    Range,
    SupervisedMethod,
)
from methods.openmax import OpenMaxScoring, OpenMaxSettings
from methods.optim import step_lr
from methods.presets import REFERENCE, Preset
from methods.registry import register

# (stage widths, FC width): the reference's, and a quarter-width version for CPU-sized experiments.
DHRNET_WIDTHS: dict[str, tuple[tuple[int, int, int], int]] = {
    "dhrnet": ((64, 128, 256), 1024),
    "dhrnet_small": ((16, 32, 64), 256),
}
AV_KINDS = ("logits_latents", "logits_only")
AV_POOLS = ("max", "avg")


@dataclass(frozen=True)
class CrosrConfig(OpenMaxSettings):
    """Defaults are the reference recipe (§4, §10) with its bugs fixed (shuffle, eval-mode dropout,
    linear reconstruction output)."""

    ranges: ClassVar[dict[str, Range]] = {
        "latent_channels": AT_LEAST_ONE, "recon_weight": NON_NEGATIVE, "step_epochs": AT_LEAST_ONE,
        "step_gamma": UP_TO_ONE,
    }


    backbone: str = "auto"  # dhrnet | dhrnet_small | auto: dhrnet_small for 1-channel images
    latent_channels: int = 32
    recon_weight: float = 1.0  # λ; 0 gives the matched plain-CNN baseline (baselines.md §2)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4  # coupled, as the reference's torch.optim.SGD
    batch_size: int = 128
    epochs: int = 500
    step_epochs: int = 30
    step_gamma: float = 0.5
    aug_mode: str = "crosr"
    av: str = "logits_latents"
    av_pool: str = "max"

    def __post_init__(self) -> None:
        self.check_openmax()
        if self.backbone not in ("auto", *DHRNET_WIDTHS):
            raise ValueError(f"backbone must be auto, {', '.join(DHRNET_WIDTHS)}; got {self.backbone!r}")
        if self.aug_mode not in AUG_MODES:
            raise ValueError(f"aug_mode must be one of {', '.join(AUG_MODES)}, got {self.aug_mode!r}")
        if self.av not in AV_KINDS or self.av_pool not in AV_POOLS:
            raise ValueError(f"av must be one of {AV_KINDS} and av_pool one of {AV_POOLS}")
        if self.recon_weight < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("recon_weight and weight_decay must be >= 0, lr > 0")
        if self.batch_size < 1 or self.epochs < 1 or self.step_epochs < 1 or self.latent_channels < 1:
            raise ValueError("batch_size, epochs, step_epochs and latent_channels must be >= 1")
        if not 0.0 < self.step_gamma <= 1.0:
            raise ValueError(f"step_gamma must be in (0, 1], got {self.step_gamma}")


def resolve_dhrnet(name: str, channels: int) -> str:
    """``auto``: the small net for the grey-scale digit datasets (digits, MNIST), like the other
    methods' small CNN there, and the reference widths for colour images."""
    if name == "auto":
        return "dhrnet_small" if channels == 1 else "dhrnet"
    return name


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)


def _stage(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [_conv(c_in if i == 0 else c_out, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Dropout(0.25))


class DHRNet(nn.Module):
    """§3: three conv stages (2, 2, 3 convs, each max-pooled), an FC head, ReLU bottlenecks z_l on the
    stage outputs, 3×3 projections back up and stride-2 transposed convs that mirror the pooling."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, widths: tuple[int, int, int] = (64, 128, 256),
                 fc_width: int = 1024, latent_channels: int = 32) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"DHRNet needs an image side divisible by 8 (three poolings), got {image_size}")
        w1, w2, w3 = widths
        self.stages = nn.ModuleList([_stage(in_channels, w1, 2), _stage(w1, w2, 2), _stage(w2, w3, 3)])
        side = image_size // 8
        # 64 px inputs (TinyImageNet) are pooled to 4×4 so the head keeps the reference's 4096 inputs.
        self.pool = nn.AdaptiveAvgPool2d(4) if side > 4 else nn.Identity()
        flat = w3 * min(side, 4) ** 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, fc_width), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(fc_width, num_classes),
        )
        self.bottlenecks = nn.ModuleList([_conv(w, latent_channels) for w in widths])
        self.unbottlenecks = nn.ModuleList([_conv(latent_channels, w) for w in widths])
        self.up3 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.up2 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        # No final activation: the target is the normalised image, which is signed (§4 DECISION).
        self.up1 = nn.ConvTranspose2d(w1, in_channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(logits, reconstruction, [z₃, z₂, z₁])."""
        stage_out = []
        for stage in self.stages:
            x = stage(x)
            stage_out.append(x)
        logits = self.head(self.pool(x))
        z = [F.relu(b(s)) for b, s in zip(self.bottlenecks, stage_out, strict=True)]
        j1, j2, j3 = (u(zl) for u, zl in zip(self.unbottlenecks, z, strict=True))
        g2 = F.relu(self.up3(j3))
        g1 = F.relu(self.up2(j2 + g2))
        recon = self.up1(j1 + g1)
        return logits, recon, [z[2], z[1], z[0]]


def activation_vector(logits: torch.Tensor, latents: list[torch.Tensor], kind: str = "logits_latents",
                      pool: str = "max") -> torch.Tensor:
    """§5: [logits, pool(z₃), pool(z₂), pool(z₁)], globally max- (or average-) pooled per channel."""
    if kind == "logits_only":
        return logits
    pooled = [z.amax(dim=(2, 3)) if pool == "max" else z.mean(dim=(2, 3)) for z in latents]
    return torch.cat([logits, *pooled], dim=1)


def crosr_loss(logits: torch.Tensor, recon: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               recon_weight: float) -> torch.Tensor:
    """CE(logits, y) + λ·MSE(reconstruction, target), the MSE mean-reduced over every pixel (§4)."""
    return F.cross_entropy(logits, labels) + recon_weight * F.mse_loss(recon, target)


@register("crosr")
class Crosr(OpenMaxScoring, SupervisedMethod):
    Config = CrosrConfig
    config: CrosrConfig

    @classmethod
    def input_size(cls, config: MethodConfig, dataset: str, native_size: int) -> int:
        # §3: MNIST is resized 28 → 32; every other dataset is already divisible by 8.
        return 32 if dataset == "mnist" else native_size

    @classmethod
    def presets(cls, dataset: str) -> dict[str, Preset]:
        """The reference recipe (§4, §10) on the full-width DHRNet; digits is the project's 8 px stand-in."""
        if dataset in ("digits", "cifar100_20"):
            return {}
        config = {"backbone": "dhrnet", "latent_channels": 32, "recon_weight": 1.0, "lr": 0.05, "momentum": 0.9,
                  "weight_decay": 5e-4, "batch_size": 128, "epochs": 500, "step_epochs": 30, "step_gamma": 0.5,
                  "aug_mode": "crosr", "av": "logits_latents", "av_pool": "max", **OpenMaxSettings.reference_head()}
        run = {"input_size": 64 if dataset == "tiny_imagenet" else 32, "final_train_fraction": 1.0}
        return {REFERENCE: Preset("crosr_openmax.md §4, §10", config, run)}

    @classmethod
    def resolved_backbone(cls, name: str, info: DataInfo) -> str:
        return resolve_dhrnet(name, info.channels)

    def build_model(self) -> nn.Module:
        c, info = self.config, self.info
        widths, fc = DHRNET_WIDTHS[self.resolved_backbone(c.backbone, info)]
        return DHRNet(info.channels, info.num_known, info.image_size, widths, fc, c.latent_channels)

    def build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def lr_for_epoch(self, epoch: int) -> float:
        return step_lr(epoch, self.config.lr, self.config.step_epochs, self.config.step_gamma)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, recon, _ = self.run_network(self.model, x)
        return crosr_loss(logits, recon, y, x, self.config.recon_weight)

    def activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _, latents = self.run_network(self.model, x)
        return logits, activation_vector(logits, latents, self.config.av, self.config.av_pool)
