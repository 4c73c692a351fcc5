"""ClustNet: a weakly supervised mixture of low-capacity experts whose gate learns to cluster
(clustnet.md, the shared-encoder variant of §3).

A conv encoder feeds a dense gate that picks one of M experts per image; each expert is a tiny
binary classifier (P vs N) reading the same features. Training sees only the binary weak label; the
gate is judged by how well its choice matches the hidden classes (trainables/gate_clustering.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.augment import AUG_MODES
from methods.base import AT_LEAST_ONE, NON_NEGATIVE, DataInfo, DivergedError, Method, MethodConfig, Range
from methods.presets import REFERENCE, Preset
from methods.registry import register

NUM_CLASSES = 10  # every dataset ClustNet runs on has ten classes, split into the P and N groups
DATASETS = ("digits", "mnist", "svhn", "cifar10")
DECISIONS = ("DE", "FD", "FS", "SD")  # sample/argmax in training × at evaluation; SD = soft gating
DN_CAPACITIES = ("linear", "hidden8", "hidden16", "hidden32")


@dataclass(frozen=True)
class ClustNetConfig(MethodConfig):
    """Defaults are spec §6 (the README's setting: batch size 4, lr 0.01)."""

    ranges: ClassVar[dict[str, Range]] = {
        "n_experts": AT_LEAST_ONE, "enc_layers": Range(2), "enc_channels": AT_LEAST_ONE, "enc_kernel": AT_LEAST_ONE,
        "repr_size": AT_LEAST_ONE, "gate_layers": AT_LEAST_ONE, "gate_width": AT_LEAST_ONE,
        "lr_gate": Range(0, low_open=True, example=0.01), "batch_period": NON_NEGATIVE, "balance_weight": NON_NEGATIVE,
    }


    positive_classes: tuple[int, ...] = (0, 1, 2, 3, 4)  # P: binary target 1
    negative_classes: tuple[int, ...] = (5, 6, 7, 8, 9)  # N: binary target 0
    n_experts: int = 5
    enc_layers: int = 2
    enc_channels: int = 32
    enc_kernel: int = 4
    repr_size: int = 100
    gate_layers: int = 2
    gate_width: int = 64
    dn_capacity: str = "linear"
    decision: str = "DE"
    lr: float = 0.01
    lr_gate: float | None = None  # None: tied to lr (the search space has a single lr)
    momentum: float = 0.5
    batch_period: int = 2  # P: gate steps on batches with (index mod 2P) < P, detectors on the rest
    batch_size: int = 4
    epochs: int = 100
    balance_weight: float = 0.0  # β of the optional load-balancing bonus −β·H(mean π)
    aug_mode: str = "none"  # clustnet.md §2/§6: the reference trains on the plain images

    def __post_init__(self) -> None:
        p, n = set(self.positive_classes), set(self.negative_classes)
        if not p or not n or p & n or p | n != set(range(NUM_CLASSES)):
            raise ValueError(
                f"positive_classes and negative_classes must be two disjoint, non-empty lists covering the "
                f"classes 0-{NUM_CLASSES - 1}; got {list(self.positive_classes)} and {list(self.negative_classes)}")
        if self.aug_mode not in AUG_MODES:
            raise ValueError(f"aug_mode must be one of {', '.join(AUG_MODES)}, got {self.aug_mode!r}")
        if self.dn_capacity not in DN_CAPACITIES:
            raise ValueError(f"dn_capacity must be one of {', '.join(DN_CAPACITIES)}, got {self.dn_capacity!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if self.enc_layers < 2:
            raise ValueError(f"enc_layers must be >= 2 (two max-pools, as the reference builds), got {self.enc_layers}")
        if min(self.n_experts, self.gate_layers, self.gate_width, self.enc_channels, self.enc_kernel,
               self.repr_size, self.batch_size, self.epochs) < 1:
            raise ValueError("n_experts, gate_layers, gate_width, enc_*, repr_size, batch_size and epochs must be >= 1")
        if self.lr <= 0 or (self.lr_gate is not None and self.lr_gate <= 0):
            raise ValueError("lr and lr_gate must be > 0")
        if self.momentum < 0 or self.batch_period < 0 or self.balance_weight < 0:
            raise ValueError("momentum, batch_period and balance_weight must be >= 0")

    @property
    def gate_lr(self) -> float:
        return self.lr if self.lr_gate is None else self.lr_gate


class SamePadConv(nn.Module):
    """Conv → BN → ReLU with "same" padding; an even kernel k pads (k−1)//2 before and k//2 after (§3)."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.pad = ((kernel - 1) // 2, kernel // 2, (kernel - 1) // 2, kernel // 2)  # left, right, top, bottom
        self.conv = nn.Conv2d(c_in, c_out, kernel, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, self.pad))))


class Encoder(nn.Module):
    """§3: ``layers`` same-padded conv blocks, residual where the channels match, max-pooled after
    layer ⌊n/2⌋−1 and after the last, then a linear map (no activation) to ``repr_size``."""

    def __init__(self, in_channels: int, image_size: int, layers: int, channels: int, kernel: int,
                 repr_size: int) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the ClustNet encoder pools twice: the image side must be divisible by 4, got {image_size}")
        self.blocks = nn.ModuleList(
            [SamePadConv(in_channels if i == 0 else channels, channels, kernel) for i in range(layers)])
        self.residual = [block.conv.in_channels == channels for block in self.blocks]
        self.pool_after = {layers // 2 - 1, layers - 1}
        self.fc = nn.Linear(channels * (image_size // 4) ** 2, repr_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (block, residual) in enumerate(zip(self.blocks, self.residual, strict=True)):
            x = block(x) + x if residual else block(x)
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


def gate_network(repr_size: int, layers: int, width: int, n_experts: int) -> nn.Sequential:
    """L = 1: Linear(repr → M); L ≥ 2: Linear(repr → w)+ReLU, (L−2)×[Linear(w → w)+ReLU], Linear(w → M)."""
    if layers == 1:
        return nn.Sequential(nn.Linear(repr_size, n_experts))
    modules: list[nn.Module] = [nn.Linear(repr_size, width), nn.ReLU()]
    for _ in range(layers - 2):
        modules += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*modules, nn.Linear(width, n_experts))


class ExpertBank(nn.Module):
    """M detecting nets evaluated together: expert i is Linear(repr → 2) (``linear``) or
    Linear(repr → w) + ReLU + Linear(w → 2) (``hidden<w>``), held as stacked weights so all M run in
    one batched matmul. Initialised like ``nn.Linear``. Returns log-probabilities (B, M, 2)."""

    def __init__(self, n_experts: int, repr_size: int, capacity: str) -> None:
        super().__init__()
        hidden = None if capacity == "linear" else int(capacity.removeprefix("hidden"))
        widths = [repr_size, 2] if hidden is None else [repr_size, hidden, 2]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n_experts, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_experts, fan_out).uniform_(-bound, bound)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = h.unsqueeze(1).expand(-1, self.weights[0].shape[0], -1)  # (B, M, repr)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if i:
                z = F.relu(z)
            z = torch.einsum("bmi,mio->bmo", z, w) + b
        return F.log_softmax(z, dim=-1)


class ClustNetModel(nn.Module):
    def __init__(self, config: ClustNetConfig, info: DataInfo) -> None:
        super().__init__()
        c = config
        self.encoder = Encoder(info.channels, info.image_size, c.enc_layers, c.enc_channels, c.enc_kernel, c.repr_size)
        self.gate = gate_network(c.repr_size, c.gate_layers, c.gate_width, c.n_experts)
        self.experts = ExpertBank(c.n_experts, c.repr_size, c.dn_capacity)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert log-probabilities ℓ (B, M, 2), gate distribution π (B, M))."""
        h = self.encoder(x)
        return self.experts(h), self.gate(h).softmax(dim=1)


def select_experts(pi: torch.Tensor, sample: bool, soft: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The gate weights g of §4. Hard: g = e_s + π − stopgrad(π), whose forward value is exactly the
    one-hot e_s of s ~ Categorical(π) (``sample``) or of argmax π, and whose gradient is the identity
    into π (straight-through). ``soft``: g = π."""
    if soft:
        return pi
    choice = torch.multinomial(pi.detach(), 1, generator=generator).squeeze(1) if sample else pi.argmax(dim=1)
    one_hot = F.one_hot(choice, pi.shape[1]).to(pi.dtype)
    return one_hot + (pi - pi.detach())  # exactly one_hot in the forward pass; (a + π) − π may round


def gated_log_probs(log_probs: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Output gating o = Σ_i g_i ℓ_i (B, 2): with a one-hot forward g, the selected expert's ℓ_s.
    No second log_softmax (§4 DECISION: it would change the gate's gradient)."""
    return torch.einsum("bm,bmc->bc", gate, log_probs)


def clustnet_loss(mixed: torch.Tensor, targets: torch.Tensor, pi: torch.Tensor | None = None,
                  balance_weight: float = 0.0) -> torch.Tensor:
    """Binary NLL of the gated output, −(1/B) Σ_b o_b[t_b], minus β·H(mean_b π) when β > 0."""
    loss = F.nll_loss(mixed, targets)
    if balance_weight > 0 and pi is not None:
        usage = pi.mean(dim=0)
        loss = loss + balance_weight * (usage * usage.clamp_min(1e-12).log()).sum()
    return loss


def binary_targets(labels: torch.Tensor, positive_classes: Iterable[int]) -> torch.Tensor:
    """t = 1 for a class in P, else 0 (§2)."""
    positive = torch.as_tensor(list(positive_classes), dtype=labels.dtype, device=labels.device)
    return torch.isin(labels, positive).long()


@register("clustnet")
class ClustNet(Method):
    task: ClassVar[str] = "gate_clustering"
    Config = ClustNetConfig
    config: ClustNetConfig
    datasets: ClassVar[tuple[str, ...] | None] = DATASETS
    search_seeds: ClassVar[int] = 3  # §11: the seed variance is high

    @classmethod
    def rerun_seeds(cls, dataset: str) -> int:
        return 5  # §5: final evaluation uses at least 5 seeds per configuration

    def __init__(self, config: ClustNetConfig, info: DataInfo) -> None:
        super().__init__(config, info)
        if info.num_known != NUM_CLASSES:
            raise ValueError(f"clustnet needs a {NUM_CLASSES}-class dataset for its P/N groups, got {info.num_known}")
        self.model = ClustNetModel(config, info).to(info.device, memory_format=torch.channels_last)
        c = config
        # §5: two SGD optimisers that share the encoder, each with its own momentum state.
        encoder = list(self.model.encoder.parameters())
        self.opt_gate = torch.optim.SGD(encoder + list(self.model.gate.parameters()), lr=c.gate_lr,
                                        momentum=c.momentum)
        self.opt_det = torch.optim.SGD(encoder + list(self.model.experts.parameters()), lr=c.lr,
                                       momentum=c.momentum)

    @classmethod
    def input_size(cls, config: MethodConfig, dataset: str, native_size: int) -> int:
        return native_size

    @classmethod
    def presets(cls, dataset: str) -> dict[str, Preset]:
        """§6 on MNIST, the reference's dataset: the README's reported setting (batch 4, lr 0.01)."""
        if dataset != "mnist":
            return {}
        config = {"positive_classes": [0, 1, 2, 3, 4], "negative_classes": [5, 6, 7, 8, 9], "n_experts": 5,
                  "enc_layers": 2, "enc_channels": 32, "enc_kernel": 4, "repr_size": 100, "gate_layers": 2,
                  "gate_width": 64, "dn_capacity": "linear", "decision": "DE", "lr": 0.01, "lr_gate": None,
                  "momentum": 0.5, "batch_period": 2, "batch_size": 4, "epochs": 100, "balance_weight": 0.0}
        return {REFERENCE: Preset("clustnet.md §6", config, run={"input_size": 28})}

    def training_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return binary_targets(labels, self.config.positive_classes)

    def forward(self, x: torch.Tensor, sample: bool, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gated log-probabilities o, expert log-probabilities ℓ, gate distribution π)."""
        log_probs, pi = self.run_network(self.model, x)
        gate = select_experts(pi, sample, soft=self.config.decision == "SD", generator=generator)
        return gated_log_probs(log_probs, gate), log_probs, pi

    def optimizer_for_batch(self, index: int) -> list[torch.optim.Optimizer]:
        """§5 alternation: with period P the gate side steps on batches 0..P−1, the detectors on
        P..2P−1, and so on; P = 0 steps both on every batch."""
        period = self.config.batch_period
        if period == 0:
            return [self.opt_gate, self.opt_det]
        return [self.opt_gate] if index % (2 * period) < period else [self.opt_det]

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        c = self.config
        self.model.train()
        sample = c.decision in ("DE", "FS")
        total = torch.zeros((), device=self.info.device)
        seen = 0
        for index, (x, t) in enumerate(batches):
            mixed, _, pi = self.forward(x, sample)
            loss = clustnet_loss(mixed, t, pi, c.balance_weight)
            self.opt_gate.zero_grad(set_to_none=True)
            self.opt_det.zero_grad(set_to_none=True)
            self.execution.backward_step(loss, *self.optimizer_for_batch(index))
            total += loss.detach() * len(t)  # summed on the device: no sync per step
            seen += len(t)
        train_loss = (total / max(seen, 1)).item()
        if not math.isfinite(train_loss):
            raise DivergedError(f"clustnet: train loss became {train_loss} at epoch {epoch} (lr {c.lr:.4g})")
        return {"train_loss": train_loss, "lr": c.lr, "lr_gate": c.gate_lr}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        """Per image: ``pred`` (argmax of o: 1 = P), ``log_probs`` o (N, 2), ``gate_probs`` π (N, M)
        and ``expert``, the gate's choice argmax π, which is the cluster assignment (§7)."""
        self.model.eval()
        # FS samples at evaluation too: from a fixed stream, so evaluating never moves training's RNG.
        generator = None
        if self.config.decision == "FS":
            generator = torch.Generator(device=self.info.device)
            generator.manual_seed(0)
        parts: dict[str, list[torch.Tensor]] = {"log_probs": [], "gate_probs": []}
        for x in batches:
            mixed, _, pi = self.forward(x, sample=self.config.decision == "FS", generator=generator)
            parts["log_probs"].append(mixed)
            parts["gate_probs"].append(pi)
        out = {k: torch.cat(v).float().cpu().numpy() for k, v in parts.items()}
        out["pred"] = out["log_probs"].argmax(axis=1)
        out["expert"] = out["gate_probs"].argmax(axis=1)
        return out

    def batchnorm_networks(self) -> list[nn.Module]:
        return [self.model]

    def batchnorm_forward(self, x: torch.Tensor) -> None:
        self.run_network(self.model.encoder, x)  # the only BatchNorm layers; gate and experts read its output

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt_gate": self.opt_gate.state_dict(),
                "opt_det": self.opt_det.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt_gate.load_state_dict(state["opt_gate"])
        self.opt_det.load_state_dict(state["opt_det"])
