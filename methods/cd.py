"""Contrastive Disentangling (contrastive_disentangling.md): unsupervised representation learning with
no class priors. A backbone h feeds an instance projector z, which feeds a sigmoid feature predictor f;
training contrasts two augmented views per image at the instance level (rows of z) and at the feature
level (columns of f) and maximises f's per-element entropy. Labels are never read in training: the
batches this method is given carry zeros (``training_targets``). Its clustering readout (k-means on h
and on f) is trainables/clustering.py's."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.augment import AugmentPolicy
from data.views import ViewPolicy, two_views, view_policy
from methods.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    UP_TO_ONE,
    DataInfo,
    DivergedError,
    Method,
    MethodConfig,
    Range,
)
from methods.optim import constant_or_cosine
from methods.presets import REFERENCE, Preset
from methods.registry import register

# §2.1. "auto" is the reference backbone except on the offline digits set, which the spec runs with the
# CIFAR-stem option at its native 8 px (§4 digits DECISION). ``cnn4_native`` is the project's own small
# net for CPU tests and benchmarks; like the native ResNet-18 its results are not comparable to the paper's.
BACKBONES = ("auto", "resnet18_imagenet224", "resnet34_imagenet224", "resnet50_imagenet224",
             "resnet18_cifar_native", "cnn4_native")
REFERENCE_BACKBONE = "resnet34_imagenet224"
REFERENCE_IMAGE_SIZE = 224
REFERENCE_EPOCHS = 1000
LR_SCHEDULES = ("none", "cosine")
ENTROPY_EPS = 1e-12


@dataclass(frozen=True)
class CDConfig(MethodConfig):
    """Defaults are the reference's (§5); ``entropy_weight`` is λ_NE."""

    ranges: ClassVar[dict[str, Range]] = {
        "hidden_dim": AT_LEAST_ONE, "feature_dim": Range(2), "tau_instance": POSITIVE, "tau_feature": POSITIVE,
        "entropy_weight": NON_NEGATIVE, "grad_clip": Range(0, low_open=True, example=1.0),
        "crop_scale_min": UP_TO_ONE, "batch_size": Range(2),  # InfoNCE needs a second image
    }


    backbone: str = "auto"
    hidden_dim: int = 128  # z
    feature_dim: int = 128  # K_f, the predictor's sigmoid outputs
    tau_instance: float = 0.5
    tau_feature: float = 1.0
    entropy_weight: float = 1.0
    lr: float = 3e-4
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    grad_clip: float | None = None  # the option: clip the gradient norm at this value (1.0)
    batch_size: int = 128
    epochs: int = 1000
    crop_scale_min: float = 0.08  # RandomResizedCrop's smallest area fraction (torchvision default)
    blur: bool = False  # §4: on for ImageNet-10 only
    # False: train on the train split and cluster held-out validation/test images (search, §6.2).
    # True: the published protocol: train on train+test without labels, cluster all of them (§6).
    transductive: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.tau_instance <= 0 or self.tau_feature <= 0:
            raise ValueError("tau_instance and tau_feature must be > 0")
        if self.entropy_weight < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("entropy_weight and weight_decay must be >= 0 and lr > 0")
        if self.batch_size < 2 or self.epochs < 1 or self.hidden_dim < 1 or self.feature_dim < 2:
            raise ValueError("batch_size must be >= 2, epochs and hidden_dim >= 1, feature_dim >= 2")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"crop_scale_min must be in (0, 1], got {self.crop_scale_min}")


def resolve_cd_backbone(name: str, dataset: str) -> str:
    if name != "auto":
        return name
    return "resnet18_cifar_native" if dataset == "digits" else REFERENCE_BACKBONE


def backbone_image_size(backbone: str, native_size: int) -> int:
    """The side the backbone sees: 224 for the ImageNet-stem ResNets (every dataset is resized, §2.1),
    the dataset's own for the native options."""
    return REFERENCE_IMAGE_SIZE if backbone.endswith("_imagenet224") else native_size


def setting(backbone: str, image_size: int, epochs: int, transductive: bool) -> dict[str, Any]:
    """What a CD result must carry (§2.1, §5): its backbone, image size, epochs and protocol. Whether that
    is the paper's setting is the ``setting`` label every method's result carries (methods/presets.py)."""
    return {"backbone": backbone, "image_size": image_size, "epochs": epochs, "transductive": transductive}


# Datasets of the paper's numbers that the project has (§6; STL-10 and ImageNet-10 are not here).
REFERENCE_DATASETS = ("cifar10", "cifar100_20")


class CNN4(nn.Module):
    """Four 3×3 conv-BN-ReLU stages (32-64-128-256, the last three stride 2), average-pooled to 2×2 and
    flattened (1024-d). A 1×1 global pool left k-means on h at NMI 0.35–0.37 on MNIST after 4,000
    images × 10 epochs (raw pixels 0.51): where the strokes are is what tells digits apart."""

    out_dim = 1024

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((in_channels, 32, 1), (32, 64, 2), (64, 128, 2), (128, 256, 2)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_cd_backbone(name: str, in_channels: int) -> tuple[nn.Module, int]:
    """(network mapping images to h, dim of h). torchvision's ResNets as the spec describes them:
    Kaiming-normal (fan_out) convs, BN 1/0, no zero-init residual, fc removed; the CIFAR stem is a 3×3
    stride-1 conv without max-pool. Grey-scale images get a one-channel first conv."""
    if name == "cnn4_native":
        return CNN4(in_channels), CNN4.out_dim
    depth = {"resnet18": 18, "resnet34": 34, "resnet50": 50}[name.split("_")[0]]
    # Imported here: torchvision's import (it loads torch._dynamo) costs every process that imports the
    # method registry ~2.5 core-seconds, the ResNets are built only for CD's reference backbones.
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    if name.endswith("_cifar_native"):
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


class CDNetwork(nn.Module):
    """Backbone h, instance projector g (z, §2.2) and sigmoid feature predictor q reading z (f)."""

    def __init__(self, backbone: nn.Module, h_dim: int, hidden_dim: int, feature_dim: int, image_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.projector = nn.Sequential(nn.Linear(h_dim, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                       nn.Linear(512, hidden_dim))
        self.predictor = nn.Sequential(nn.Linear(hidden_dim, 512, bias=False), nn.BatchNorm1d(512),
                                       nn.ReLU(inplace=True), nn.Linear(512, feature_dim, bias=False),
                                       nn.BatchNorm1d(feature_dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, z, f) of a batch already at ``image_size``."""
        h = self.backbone(x)
        z = self.projector(h)
        return h, z, self.predictor(z)

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        """Un-augmented native images resized to ``image_size`` (§4 evaluation transform), in fp32: the
        network then runs on them at the run's precision (``Method.run_network``)."""
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x

    def readout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, f) of un-augmented native images, resized to ``image_size`` first."""
        h, _, f = self(self.resized(x))
        return h, f


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over 2N rows (§3.1-2): rows of [a; b] L2-normalised, similarities / τ, row i's positive is
    its counterpart i ± N, every other row but itself a negative; mean over the 2N rows of
    −S_pos + log Σ_{j≠i} exp S_ij."""
    n = a.shape[0]
    rows = F.normalize(torch.cat([a, b]), dim=1)
    sim = rows @ rows.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positives = torch.arange(2 * n, device=sim.device).add(n).remainder(2 * n)
    return F.cross_entropy(sim, positives)


def instance_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """L_inst: the two views of an image are positives among the 2B projected rows."""
    return nt_xent(z1, z2, temperature)


def feature_loss(f1: torch.Tensor, f2: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """L_fcl: column k of view 1's predictor outputs is positive with column k of view 2's, over the 2K_f
    columns (each a vector over the batch)."""
    return nt_xent(f1.T, f2.T, temperature)


def normalised_entropy(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """NE: mean over every entry p of both views' outputs of the Bernoulli entropy in bits,
    [−p ln(p + ε) − (1 − p) ln(1 − p + ε)] / ln 2 (§3.3)."""
    p = torch.cat([f1, f2])
    bits = -(p * torch.log(p + ENTROPY_EPS) + (1 - p) * torch.log(1 - p + ENTROPY_EPS)) / math.log(2)
    return bits.mean()


def cd_objective(z1: torch.Tensor, z2: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, tau_instance: float,
                 tau_feature: float, entropy_weight: float) -> dict[str, torch.Tensor]:
    """L = L_inst + L_fcl − λ_NE·NE (§3.4), with its parts."""
    inst = instance_loss(z1, z2, tau_instance)
    feat = feature_loss(f1, f2, tau_feature)
    entropy = normalised_entropy(f1, f2)
    return {"loss": inst + feat - entropy_weight * entropy, "instance": inst, "feature": feat, "entropy": entropy}


@register("cd")
class ContrastiveDisentangling(Method):
    task: ClassVar[str] = "clustering"
    Config = CDConfig
    standardise_inputs: ClassVar[bool] = False  # §2.1: [0, 1] inputs, no mean/std normalisation
    config: CDConfig

    def __init__(self, config: CDConfig, info: DataInfo) -> None:
        super().__init__(config, info)
        self.backbone_name = resolve_cd_backbone(config.backbone, info.dataset)
        self.image_size = backbone_image_size(self.backbone_name, info.image_size)
        backbone, h_dim = build_cd_backbone(self.backbone_name, info.channels)
        # channels_last: the layout oneDNN (CPU) and tensor cores (GPU) run convolutions fastest in.
        self.model = CDNetwork(backbone, h_dim, config.hidden_dim, config.feature_dim, self.image_size).to(
            info.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.views: ViewPolicy = view_policy(info.dataset, info.channels, self.image_size, config.crop_scale_min,
                                             config.blur)

    @classmethod
    def input_size(cls, config: MethodConfig, dataset: str, native_size: int) -> int:
        """Native: the data stay small on the device; views are cropped to and readouts resized to the
        backbone's size in the model (``image_size``)."""
        return native_size

    @classmethod
    def presets(cls, dataset: str) -> dict[str, Preset]:
        """§5 reference column: ResNet-34 at 224 px, 1000 epochs, the transductive protocol (§6)."""
        if dataset not in REFERENCE_DATASETS:
            return {}
        config = {"backbone": REFERENCE_BACKBONE, "hidden_dim": 128, "feature_dim": 128, "tau_instance": 0.5,
                  "tau_feature": 1.0, "entropy_weight": 1.0, "lr": 3e-4, "weight_decay": 0.0, "lr_schedule": "none",
                  "grad_clip": None, "batch_size": 128, "epochs": REFERENCE_EPOCHS, "blur": False,
                  "transductive": True}
        return {REFERENCE: Preset("contrastive_disentangling.md §5, §6", config,
                                  run={"input_size": REFERENCE_IMAGE_SIZE})}

    @classmethod
    def effective_config(cls, config: MethodConfig, info: DataInfo) -> dict[str, Any]:
        backbone = resolve_cd_backbone(config.backbone, info.dataset)  # type: ignore[attr-defined]
        return {**config.to_dict(), "backbone": backbone, "input_size": backbone_image_size(backbone, info.image_size)}

    @property
    def setting(self) -> dict[str, Any]:
        c = self.config
        return setting(self.backbone_name, self.image_size, c.epochs, c.transductive)

    @classmethod
    def augmentation(cls, config: MethodConfig, dataset: str) -> AugmentPolicy | None:
        return None  # the two views are made in train_epoch (data/views.py)

    def training_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Zeros: the class labels never reach training (§1)."""
        return torch.zeros_like(labels)

    def lr_for_epoch(self, epoch: int) -> float:
        c = self.config
        return constant_or_cosine(epoch, c.lr, c.epochs, c.lr_schedule)

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        c = self.config
        lr = self.lr_for_epoch(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        totals = torch.zeros(4, device=self.info.device)
        steps = 0
        for x, _ in batches:
            if len(x) < c.batch_size:
                continue  # drop_last, as the reference (§3.1): every step contrasts a full batch
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in two_views(x, self.views))
            # One forward per view, as the reference: BatchNorm statistics are per view.
            _, z1, f1 = self.run_network(self.model, v1)
            _, z2, f2 = self.run_network(self.model, v2)
            parts = cd_objective(z1, z2, f1, f2, c.tau_instance, c.tau_feature, c.entropy_weight)
            self.optimizer.zero_grad(set_to_none=True)
            self.execution.backward(parts["loss"])
            if c.grad_clip is not None:
                self.execution.unscale(self.optimizer)  # clip the true gradients, not fp16's scaled ones
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.execution.step(self.optimizer)
            self.execution.update()
            totals += torch.stack([parts[k].detach() for k in ("loss", "instance", "feature", "entropy")])
            steps += 1
        if steps == 0:
            raise ValueError(f"cd: batch_size {c.batch_size} is larger than the training set; no full batch")
        loss, inst, feat, entropy = (totals / steps).tolist()
        if not math.isfinite(loss):
            raise DivergedError(f"cd: train loss became {loss} at epoch {epoch} (lr {lr:.4g})")
        return {"train_loss": loss, "loss_instance": inst, "loss_feature": feat, "entropy": entropy, "lr": lr}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        """``h`` (N, dim h) and ``f`` (N, K_f) of every image, eval mode (BN running statistics)."""
        self.model.eval()
        hs, fs = [], []
        for x in batches:
            h, _, f = self.run_network(self.model, self.model.resized(x))
            hs.append(h.float())
            fs.append(f.float())
        return {"h": torch.cat(hs).cpu().numpy(), "f": torch.cat(fs).cpu().numpy()}

    def batchnorm_networks(self) -> list[nn.Module]:
        return [self.model]

    def batchnorm_forward(self, x: torch.Tensor) -> None:
        self.run_network(self.model, self.model.resized(x))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
