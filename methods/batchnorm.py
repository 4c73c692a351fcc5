"""Evaluation-mode BatchNorm statistics that reflect the current weights on any dataset size.

A running average with momentum m has, after n training updates, kept (1 − m)^n of its initial (0, 1).
DIFAIR's trunk uses m = 0.01 (the Keras reference's 0.99), chosen for epochs of ~230 steps; on a small
dataset at a large batch (digits at 256: 3 steps an epoch) the statistics evaluation reads are still
mostly the initial ones after the first epochs. While that share is noticeable, the statistics are
recomputed over the training partition with the current weights before anything evaluates the model;
once it is small, nothing is recomputed and the running averages are the spec's."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Recompute while the initial values still weigh more than this in some layer's running statistics.
# With m = 0.01 that is the first 459 updates: the first two epochs at the spec's ~230 steps an epoch.
INITIAL_SHARE_LIMIT = 0.01


def batchnorm_layers(networks: Iterable[nn.Module]) -> list[_BatchNorm]:
    """The BatchNorm layers of ``networks`` that keep running statistics, each once."""
    layers: dict[int, _BatchNorm] = {}
    for network in networks:
        for module in network.modules():
            if isinstance(module, _BatchNorm) and module.track_running_stats:
                layers.setdefault(id(module), module)
    return list(layers.values())


def initial_share(layer: _BatchNorm) -> float:
    """The weight the initial values still have in ``layer``'s running statistics after its
    ``num_batches_tracked`` training updates: (1 − m)^n; a cumulative average (momentum None) drops
    them at its first update."""
    n = int(layer.num_batches_tracked)
    if layer.momentum is None:
        return 1.0 if n == 0 else 0.0
    return (1.0 - layer.momentum) ** n


def statistics_stale(networks: Iterable[nn.Module], limit: float = INITIAL_SHARE_LIMIT) -> bool:
    return any(initial_share(layer) > limit for layer in batchnorm_layers(networks))


class _Moments:
    """Per-channel count, mean and sum of squared deviations of a layer's inputs, merged batch by batch
    in float64 (Chan et al.'s pairwise update), so the result is that of the concatenated inputs."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total


@torch.no_grad()
def recompute_statistics(networks: Iterable[nn.Module], forward: Callable[[torch.Tensor], Any],
                         batches: Iterable[torch.Tensor]) -> None:
    """Sets every BatchNorm layer's running mean and variance to the mean and the unbiased variance (what
    PyTorch's own update uses) of its inputs over all ``batches``, with the current weights.

    ``forward`` runs the networks on one batch. They run as in evaluation (dropout off) except that each
    BatchNorm normalises by its batch's own statistics, as in training, so every layer sees the
    inputs training gives it. Parameters, momenta and ``num_batches_tracked`` (the count of training
    updates, which decides ``statistics_stale``) are left as they were. Single-image batches are
    skipped: BatchNorm cannot normalise one image by its own statistics."""
    networks = list(networks)
    layers = batchnorm_layers(networks)
    if not layers:
        return
    modes = [(m, m.training) for network in networks for m in network.modules()]
    saved = [(layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone())
             for layer in layers]
    moments = [_Moments() for _ in layers]
    hooks = [layer.register_forward_pre_hook(m) for layer, m in zip(layers, moments, strict=True)]
    done = False
    try:
        for network in networks:
            network.eval()
        for layer in layers:
            layer.train()
        for x in batches:
            if len(x) > 1:
                forward(x)
        for layer, m in zip(layers, moments, strict=True):
            if m.mean is None or m.m2 is None:
                raise ValueError("no batch of two or more training images to recompute BatchNorm statistics on")
            layer.running_mean.copy_(m.mean)
            layer.running_var.copy_(m.m2 / max(m.count - 1, 1))
        done = True
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes:
            module.train(training)
        for layer, (mean, var, tracked) in zip(layers, saved, strict=True):
            layer.num_batches_tracked.copy_(tracked)
            if not done:
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)


def refresh_statistics(networks: Iterable[nn.Module], forward: Callable[[torch.Tensor], Any],
                       batches: Callable[[], Iterable[torch.Tensor]], limit: float = INITIAL_SHARE_LIMIT) -> bool:
    """``recompute_statistics`` over ``batches()`` if the running statistics are ``statistics_stale``;
    returns whether it did."""
    networks = list(networks)
    if not statistics_stale(networks, limit):
        return False
    recompute_statistics(networks, forward, batches())
    return True
