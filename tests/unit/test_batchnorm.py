"""Evaluation-mode BatchNorm statistics reflect the trained weights on any dataset size (issue 14, item 7):
on digits at batch 256 an epoch is 3 steps, too few for momentum-0.01 running averages to forget their
initial (0, 1). methods/batchnorm.py recomputes them over the training partition while they would still
remember those; trainables/runs.py ``Run.evaluate`` does so once per weight change."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from data import load_pool
from methods.base import InvalidCellError
from methods.batchnorm import (
    INITIAL_SHARE_LIMIT,
    batchnorm_layers,
    initial_share,
    recompute_statistics,
    refresh_statistics,
    statistics_stale,
)
from methods.registry import method_names
from trainables.device_data import DataBundle
from trainables.split_run import SplitRun
from trainables.tasks import task_splits, trial_runs

# What a default 30-epoch search gives the recipe methods (spaces.recipe_fixed), at the largest batch
# the spaces offer; ASHA's first rung is 3 epochs. Not crosr: at 6 steps a class of the training images
# has no correctly classified example yet, which OpenMax cannot score in either mode (the coverage test
# below checks its networks).
RUNG_EPOCHS = 3
AT_BATCH_256 = {
    "difair": {"epochs": 30, "warmup_epochs": 3},
    "softmax": {"epochs": 30, "warmup_epochs": 3},
    "openmax": {"epochs": 30, "warmup_epochs": 3},
    "adversarial": {"epochs": 30, "lr_cls": 0.02, "lr_schedule": "cosine"},
    "clustnet": {"epochs": 30},
}


@pytest.fixture(scope="module")
def pool():
    return load_pool("digits", "unused")


def _batchnorm_layers(method: object) -> list[_BatchNorm]:
    """Every BatchNorm layer of every network the method holds, found without asking the method."""
    return [m for v in vars(method).values() if isinstance(v, nn.Module) for m in v.modules()
            if isinstance(m, _BatchNorm)]


def _batch_statistics_predictions(run: SplitRun) -> np.ndarray:
    """``pred`` on the training images with every BatchNorm normalising by its batch's statistics (what
    training sees) and everything else as in evaluation: a copy whose running buffers are removed, which
    PyTorch's BatchNorm then treats as "use the batch" in eval mode too, without updating anything."""
    method = copy.deepcopy(run.method)
    for layer in _batchnorm_layers(method):
        layer.running_mean = None
        layer.running_var = None
    method.prepare_evaluation(lambda: run.labelled_batches("train"))
    return method.evaluate(run.eval_batches("train"))["pred"]


@pytest.mark.parametrize("method", sorted(AT_BATCH_256))
def test_eval_mode_accuracy_matches_batch_statistics_after_the_first_rung(pool, method):
    run = _runs(pool, method, batch_size=256, **AT_BATCH_256[method]).runs[0]
    for epoch in range(RUNG_EPOCHS):
        run.train_epoch(256, epoch)
    targets = run.method.training_targets(run.y["train"]).cpu().numpy()
    batch_acc = float(np.mean(_batch_statistics_predictions(run) == targets))
    eval_acc = float(np.mean(run.evaluate("train")["pred"] == targets))
    print(f"{method}: eval-mode {eval_acc:.4f}, batch-statistics {batch_acc:.4f}")
    assert abs(eval_acc - batch_acc) <= 0.02, (eval_acc, batch_acc)


def _runs(pool, method: str, **config):
    config = {"method": method, "dataset": "digits", "splits": [0], "seeds": [0], **config}
    return trial_runs(config, DataBundle.from_pool(pool, task_splits(pool, method, [0])), torch.device("cpu"))


@pytest.mark.parametrize("method", method_names())
def test_the_refresh_covers_exactly_the_batchnorm_layers_evaluation_reads(pool, method):
    """``batchnorm_networks`` holds every BatchNorm layer that evaluation runs in eval mode (so reads the
    running statistics of) and no other, and ``batchnorm_forward`` reaches each of them."""
    run = _runs(pool, method).runs[0]
    m = run.method
    x, y = next(run.labelled_batches("train"))
    every = _batchnorm_layers(m)
    called: list[tuple[int, bool]] = []
    hooks = [layer.register_forward_hook(lambda mod, *_: called.append((id(mod), mod.training))) for layer in every]
    with torch.no_grad():
        m.batchnorm_forward(x)
    reached = {i for i, _ in called}
    called.clear()
    with contextlib.suppress(InvalidCellError):  # an untrained OpenMax head: the forward passes ran
        m.prepare_evaluation(lambda: [(x, y)])
        m.evaluate([x])
    for hook in hooks:
        hook.remove()
    read = {i for i, training in called if not training}
    declared = {id(layer) for layer in batchnorm_layers(m.batchnorm_networks())}
    assert read, "evaluation read no BatchNorm layer"
    assert declared == read
    assert read <= reached


def _slow_statistics(net: nn.Module, batches: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every BatchNorm layer's inputs over all batches of two or more images (dropout off, BatchNorm on
    batch statistics, on a copy), concatenated: their per-channel mean and unbiased variance."""
    net = copy.deepcopy(net).eval()
    inputs: dict[str, list[torch.Tensor]] = {}
    for name, layer in net.named_modules():
        if isinstance(layer, _BatchNorm):
            layer.train()
            layer.register_forward_pre_hook(lambda mod, args, name=name: inputs.setdefault(name, []).append(
                args[0].detach().double().movedim(1, -1).reshape(-1, args[0].shape[1])))
    with torch.no_grad():
        for x in batches:
            if len(x) > 1:
                net(x)
    return {name: (torch.cat(v).mean(dim=0), torch.cat(v).var(dim=0, correction=1)) for name, v in inputs.items()}


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(5 * 4 * 4, 6), nn.BatchNorm1d(6, momentum=None), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


def _trained_net(steps: int = 3) -> _Net:
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():
        for layer in batchnorm_layers([net]):
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.uniform_(-1.0, 1.0)
        for _ in range(steps):  # a few training updates, so the buffers hold something to restore
            net(torch.randn(8, 3, 8, 8) * 3 + 1)
    return net


def test_recompute_gives_the_statistics_of_the_concatenated_inputs():
    net = _trained_net()
    torch.manual_seed(1)
    # Unequal batches, one of a single image (skipped, as BatchNorm cannot normalise it), and inputs far
    # from the initial (0, 1).
    batches = [torch.randn(n, 3, 8, 8) * 4 - 2 for n in (7, 16, 3, 1)]
    params = {k: v.clone() for k, v in net.named_parameters()}
    momenta = {name: layer.momentum for name, layer in net.named_modules() if isinstance(layer, _BatchNorm)}
    tracked = {name: int(layer.num_batches_tracked) for name, layer in net.named_modules()
               if isinstance(layer, _BatchNorm)}
    expected = _slow_statistics(net, batches)
    net.train()

    recompute_statistics([net], net, batches)

    layers = dict(net.named_modules())
    assert set(expected) == set(momenta) == {"convs.1", "convs.5", "fc.1"}
    for name, (mean, var) in expected.items():
        layer = layers[name]
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert layer.momentum == momenta[name]
        assert int(layer.num_batches_tracked) == tracked[name] == 3
    assert all(torch.equal(params[k], v) for k, v in net.named_parameters())
    assert all(m.training for m in net.modules())  # modes restored


def test_recompute_runs_dropout_off_whatever_the_rng():
    net = _trained_net()
    batches = [torch.randn(10, 3, 8, 8) for _ in range(2)]
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        recompute_statistics([net], net, batches)
        results.append([t.clone() for layer in batchnorm_layers([net]) for t in (layer.running_mean, layer.running_var)])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_a_failed_recompute_leaves_the_buffers_and_modes_as_they_were():
    net = _trained_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def fails_late(x: torch.Tensor) -> None:
        net(x)
        if len(x) == 5:
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        recompute_statistics([net], fails_late, [torch.randn(4, 3, 8, 8), torch.randn(5, 3, 8, 8)])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m.training for m in net.modules())


def test_the_refresh_stops_once_the_initial_values_weigh_little():
    """(1 − m)^n: m = 0.01 crosses 1% between 458 and 459 updates (~2 epochs at the spec's ~230 steps),
    m = 0.1 between 43 and 44; a cumulative average (momentum None) forgets them at its first update."""
    layer = nn.BatchNorm2d(3, momentum=0.01)
    for n, stale in ((0, True), (3 * 9, True), (458, True), (459, False), (600 * 230, False)):
        layer.num_batches_tracked.fill_(n)
        assert initial_share(layer) == pytest.approx(0.99**n)
        assert statistics_stale([layer]) is stale
    layer.momentum = 0.1
    layer.num_batches_tracked.fill_(43)
    assert statistics_stale([layer])
    layer.num_batches_tracked.fill_(44)
    assert not statistics_stale([layer])
    cumulative = nn.BatchNorm1d(3, momentum=None)
    assert statistics_stale([cumulative])
    cumulative.num_batches_tracked.fill_(1)
    assert not statistics_stale([cumulative])
    assert INITIAL_SHARE_LIMIT == 0.01

    net = _trained_net()
    for layer in batchnorm_layers([net]):
        layer.num_batches_tracked.fill_(10_000)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert not refresh_statistics([net], net, lambda: pytest.fail("read the training data"))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.convs[1].num_batches_tracked.fill_(100)  # one stale layer: every layer is recomputed
    assert refresh_statistics([net], net, lambda: [torch.randn(6, 3, 8, 8)])
    assert not torch.equal(before["fc.1.running_mean"], net.fc[1].running_mean)


@pytest.mark.parametrize(("method", "config"), [("difair", {}), ("adversarial", {"lr_cls": 0.02})])
def test_a_restored_checkpoint_evaluates_and_continues_exactly(pool, method, config):
    """The refreshed statistics are part of the checkpoint and are recomputed identically after a load;
    training continues from them as the uninterrupted run does."""
    config = {"batch_size": 256, "epochs": 4, **config}
    straight = _runs(pool, method, **config)
    run = straight.runs[0]
    run.train_epoch(256, 0)
    first = run.evaluate("val_known")
    saved = copy.deepcopy(straight.state_dict(0))
    run.train_epoch(256, 1)
    second = run.evaluate("val_known")

    resumed = _runs(pool, method, **config)
    assert resumed.load_state_dict(saved) == 0
    again = resumed.runs[0]
    _assert_same_outputs(again.evaluate("val_known"), first)
    again.train_epoch(256, 1)
    _assert_same_outputs(again.evaluate("val_known"), second)
    a, b = run.method.state_dict(), again.method.state_dict()
    for part in a:
        if "optimizer" not in part:
            assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def _assert_same_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
