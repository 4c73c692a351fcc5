"""Convolutional trunks that end in a 128-channel feature map (heads are the methods' business)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

FEATURE_CHANNELS = 128


def _conv_bn_act(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    # Keras defaults of the reference: BN momentum 0.99 (PyTorch 0.01), eps 1e-3; bias-free convs.
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out, momentum=0.01, eps=1e-3),
        nn.LeakyReLU(0.2),
    ]


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.05)


class VGG32(nn.Module):
    """DIFAIR's VGG32 trunk (difair.md §4): three blocks of element-wise dropout and three 3×3
    conv-BN-LeakyReLU layers, the third with stride 2. 32 → 4 px (64 → 8, 8 → 1)."""

    spatial_dropout = False

    def __init__(self, in_channels: int, dropout: float = 0.2) -> None:
        super().__init__()
        widths = [(in_channels, 64), (64, 64), (64, 128), (128, 128), (128, 128), (128, 128),
                  (128, 128), (128, 128), (128, FEATURE_CHANNELS)]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(widths):
            if i % 3 == 0:
                layers.append(nn.Dropout2d(dropout) if self.spatial_dropout else nn.Dropout(dropout))
            layers += _conv_bn_act(c_in, c_out, stride=2 if i % 3 == 2 else 1)
        self.body = nn.Sequential(*layers)
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Classifier32(VGG32):
    """ARPL/Vaze's "classifier32" (baselines.md §2, difair.md §4 porting notes): VGG32 with spatial
    dropout (whole channels) and BatchNorm γ drawn from N(1, 0.02) instead of 1."""

    spatial_dropout = True

    def __init__(self, in_channels: int, dropout: float = 0.2) -> None:
        super().__init__(in_channels, dropout)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)


class SmallCNN(nn.Module):
    """A five-conv trunk for 8×8 and 28×28 inputs, cheap enough to train on a laptop CPU.

    Same building blocks and initialisation as VGG32, two stride-2 stages (28 → 7, 8 → 2)."""

    def __init__(self, in_channels: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Dropout(dropout),
            *_conv_bn_act(in_channels, 32),
            *_conv_bn_act(32, 32, stride=2),
            nn.Dropout(dropout),
            *_conv_bn_act(32, 64),
            *_conv_bn_act(64, 64, stride=2),
            *_conv_bn_act(64, FEATURE_CHANNELS),
        )
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


BACKBONES: dict[str, Callable[[int, float], nn.Module]] = {"vgg32": VGG32, "classifier32": Classifier32,
                                                           "small": SmallCNN}


def resolve_backbone(name: str, image_size: int) -> str:
    """``auto`` picks the small CNN below 32 px (digits, MNIST at 28) and VGG32 otherwise."""
    if name == "auto":
        return "small" if image_size < 32 else "vgg32"
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: auto, {', '.join(BACKBONES)}")
    return name


def build_backbone(name: str, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return BACKBONES[resolve_backbone(name, image_size)](in_channels, dropout)
