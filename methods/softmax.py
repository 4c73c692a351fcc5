"""Cross-entropy baseline scored by MSP and by the maximum logit (baselines.md, matched recipe).

Same trunk, data pipeline, optimiser and schedule as the method it is compared with; only the head
(GAP → bias-free linear to K logits) and the loss change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from methods.backbones import FEATURE_CHANNELS, build_backbone
from methods.base import SupervisedMethod, TrainRecipe
from methods.registry import register


@dataclass(frozen=True)
class SoftmaxConfig(TrainRecipe):
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")


class LinearHeadNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(FEATURE_CHANNELS, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x).mean(dim=(2, 3)))


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """−max softmax probability (temperature 1): larger = more unknown."""
    return -logits.softmax(dim=1).max(dim=1).values


def mls_score(logits: torch.Tensor) -> torch.Tensor:
    """−max raw logit: larger = more unknown."""
    return -logits.max(dim=1).values


@register("softmax")
class Softmax(SupervisedMethod):
    Config = SoftmaxConfig
    config: SoftmaxConfig
    # Selection uses MLS (baselines.md §4); MSP comes from the same models.
    primary_score: ClassVar[str] = "mls"

    def build_model(self) -> nn.Module:
        c, info = self.config, self.info
        return LinearHeadNet(build_backbone(c.backbone, info.channels, info.image_size, c.dropout), info.num_known)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y, label_smoothing=self.config.label_smoothing)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(x)
        return {"pred": logits.argmax(dim=1), "score_mls": mls_score(logits), "score_msp": msp_score(logits)}
