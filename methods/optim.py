"""SGD with decoupled weight decay and the warm-up + cosine-with-restarts schedule (difair.md §8)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class DecoupledSGD(torch.optim.SGD):
    """SGD (PyTorch momentum form, no dampening/Nesterov) whose decay shrinks weights before each step.

    θ ← θ·(1 − η·λ), then the plain momentum update. Unlike SGD's own ``weight_decay`` the decay is not
    fed through the momentum buffer, which would amplify it about tenfold (difair.md §8.1).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            shrink = 1.0 - group["lr"] * group["decoupled_weight_decay"]
            if shrink != 1.0:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, shrink)
        return super().step(closure)


# No cosine cycle is shorter than this: a one-epoch cycle would be a restart in place of a decay.
MIN_CYCLE_EPOCHS = 2


@dataclass(frozen=True)
class CycleShape:
    """How a budget of ``epochs`` is cut into cosine cycles: ``cycles`` of ``period`` epochs, the last one
    absorbing the remainder, and a warm-up of ``warmup`` epochs inside the first."""

    cycles: int
    period: int
    warmup: int

    @property
    def restarts(self) -> int:
        return self.cycles - 1


def cycle_shape(epochs: int, warmup: int = 10, restarts: int = 2) -> CycleShape:
    """The schedule's shape for a budget: the requested ``restarts`` when every cycle gets at least
    ``MIN_CYCLE_EPOCHS`` epochs, fewer otherwise; the warm-up cut to less than half the first cycle so the
    cycle still decays after it. E = 600 keeps the spec's shape (T = 200, W = 10, difair.md §8.2)."""
    cycles = max(1, min(restarts + 1, epochs // MIN_CYCLE_EPOCHS))
    period = max(epochs // cycles, 1)
    return CycleShape(cycles=cycles, period=period, warmup=max(0, min(warmup, (period - 1) // 2)))


def lr_at_epoch(
    epoch: int,
    base_lr: float,
    epochs: int,
    warmup: int = 10,
    restarts: int = 2,
    variant: str = "cosine_restarts",
) -> float:
    """Learning rate of 0-indexed ``epoch``.

    ``cosine_restarts`` is the project's clean schedule (``cycle_shape`` says how a budget is cut, so the
    last epochs never begin a new cycle); ``cosine_restarts_reference`` replicates the reference code
    (restarts one epoch late, floor 1e-3·lr₀², period ⌊E/3⌋ whatever E), kept only for the replication
    preset at the reference's E = 600.
    """
    eta_min = 1e-3 * base_lr
    if variant == "cosine_restarts_reference":
        period = max(epochs // (restarts + 1), 1)
        if warmup > 0 and epoch <= warmup:
            return _warmup_lr(epoch, base_lr, eta_min, warmup, period)
        alpha = 1e-3 * base_lr
        phase = ((epoch - 1) % period) / period
        return base_lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * phase)) + alpha)
    if variant != "cosine_restarts":
        raise ValueError(f"unknown lr schedule {variant!r}")
    shape = cycle_shape(epochs, warmup, restarts)
    if shape.warmup > 0 and epoch <= shape.warmup:
        return _warmup_lr(epoch, base_lr, eta_min, shape.warmup, shape.period)
    cycle = min(epoch // shape.period, shape.cycles - 1)
    start = cycle * shape.period
    length = shape.period if cycle < shape.cycles - 1 else max(epochs - start, 1)
    return eta_min + (base_lr - eta_min) * 0.5 * (1 + math.cos(math.pi * (epoch - start) / length))


def _warmup_lr(epoch: int, base_lr: float, eta_min: float, warmup: int, period: int) -> float:
    # Linear from η_min to where the first cosine cycle stands at the end of the warm-up (difair.md §8.2).
    target = eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * warmup / period)) / 2
    return eta_min + epoch * (target - eta_min) / warmup


def constant_or_cosine(epoch: int, base_lr: float, epochs: int, schedule: str) -> float:
    """``base_lr`` throughout (``"none"``, the references' choice) or one cosine cycle over ``epochs`` with no
    warm-up and no restarts (``"cosine"``, the search studies' option)."""
    if schedule == "none":
        return base_lr
    if schedule == "cosine":
        return lr_at_epoch(epoch, base_lr, epochs, warmup=0, restarts=0)
    raise ValueError(f"unknown lr schedule {schedule!r}")


def step_lr(epoch: int, base_lr: float, step_epochs: int, gamma: float) -> float:
    """StepLR: ``base_lr·gamma^⌊epoch/step_epochs⌋`` for 0-indexed ``epoch`` (crosr_openmax.md §4)."""
    if step_epochs < 1:
        raise ValueError(f"step_epochs must be >= 1, got {step_epochs}")
    return base_lr * gamma ** (epoch // step_epochs)
