"""CROSR spec tests (crosr_openmax.md §3–§5, §10): DHRNet's layout, the loss, the activation vector,
the recipe, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from methods import DataInfo, get_method
from methods.crosr import CrosrConfig, DHRNet, activation_vector, crosr_loss, resolve_dhrnet
from methods.optim import step_lr


def conv(ci: int, co: int) -> int:
    return ci * co * 9 + co  # 3×3 with bias


def test_reference_dhrnet_has_exactly_the_spec_layers():
    bn = 2  # γ and β per channel
    expected = (
        conv(3, 64) + bn * 64 + conv(64, 64) + bn * 64
        + conv(64, 128) + bn * 128 + conv(128, 128) + bn * 128
        + conv(128, 256) + bn * 256 + 2 * (conv(256, 256) + bn * 256)
        + (4096 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
        + conv(256, 32) + conv(128, 32) + conv(64, 32)  # bottlenecks
        + conv(32, 256) + conv(32, 128) + conv(32, 64)  # projections back up
        + (256 * 128 * 4 + 128) + (128 * 64 * 4 + 64) + (64 * 3 * 4 + 3)  # 2×2 transposed convs
    )
    net = DHRNet(3, 10, 32)
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize(("channels", "size", "widths", "fc"), [
    (3, 32, (64, 128, 256), 1024), (1, 8, (16, 32, 64), 256), (3, 64, (64, 128, 256), 1024)])
def test_dhrnet_shapes(channels, size, widths, fc):
    net = DHRNet(channels, 6, size, widths, fc).eval()
    logits, recon, (z3, z2, z1) = net(torch.randn(2, channels, size, size))
    assert logits.shape == (2, 6)
    assert recon.shape == (2, channels, size, size)
    assert z3.shape == (2, 32, size // 8, size // 8)
    assert z2.shape == (2, 32, size // 4, size // 4)
    assert z1.shape == (2, 32, size // 2, size // 2)
    # 64 px is pooled to 4×4 before the head, which therefore keeps 16·w₃ inputs.
    assert net.head[1].in_features == widths[2] * min(size // 8, 4) ** 2
    assert (z1 >= 0).all() and (z2 >= 0).all() and (z3 >= 0).all()  # post-ReLU latents


def test_dhrnet_rejects_sides_the_decoder_cannot_mirror():
    with pytest.raises(ValueError, match="divisible by 8"):
        DHRNet(1, 6, 28)


def test_reconstruction_output_is_linear_and_can_match_a_signed_target():
    net = DHRNet(1, 3, 8, (4, 4, 4), 8).eval()
    with torch.no_grad():
        net.up1.bias.fill_(-5.0)
    _, recon, _ = net(torch.zeros(1, 1, 8, 8))
    assert (recon < 0).all()  # a final ReLU (the reference's bug) would clip these to 0


def test_reconstruction_flows_through_every_latent():
    net = DHRNet(1, 3, 8, (4, 4, 4), 8).eval()
    with torch.no_grad():
        for b in net.bottlenecks:
            b.bias.fill_(1.0)  # keep every ReLU'd latent alive so a missing path cannot hide
    x = torch.randn(1, 1, 8, 8)
    for i in range(3):
        net.zero_grad()
        _, recon, _ = net(x)
        recon.sum().backward()
        assert net.bottlenecks[i].weight.grad.abs().sum() > 0, f"z{i + 1} does not reach the reconstruction"


def test_loss_is_cross_entropy_plus_weighted_pixel_mse_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    recon = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])
    target = torch.tensor([[[[0.0, 2.0]]], [[[1.0, -1.0]]]])
    ce = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    mse = (1 + 0 + 1 + 1) / 4  # mean over all 4 pixels
    assert crosr_loss(logits, recon, labels, target, 0.5).item() == pytest.approx(ce + 0.5 * mse, rel=1e-6)
    assert crosr_loss(logits, recon, labels, target, 0.0).item() == pytest.approx(ce, rel=1e-6)


def test_activation_vector_is_logits_then_pooled_z3_z2_z1():
    logits = torch.tensor([[1.0, -2.0]])
    z3 = torch.tensor([[[[0.0, 3.0]], [[1.0, 1.0]]]])  # (1, 2, 1, 2)
    z2 = torch.tensor([[[[5.0, 0.0]], [[0.0, 0.0]]]])
    z1 = torch.tensor([[[[2.0, 4.0]], [[6.0, 0.0]]]])
    assert activation_vector(logits, [z3, z2, z1]).tolist() == [[1, -2, 3, 1, 5, 0, 4, 6]]
    assert activation_vector(logits, [z3, z2, z1], pool="avg").tolist() == [[1, -2, 1.5, 1, 2.5, 0, 3, 3]]
    assert activation_vector(logits, [z3, z2, z1], kind="logits_only").tolist() == [[1, -2]]


def test_step_schedule_halves_every_30_epochs():
    assert [step_lr(e, 0.05, 30, 0.5) for e in (0, 29, 30, 59, 60, 90)] == [0.05, 0.05, 0.025, 0.025, 0.0125,
                                                                          0.00625]


def method(**overrides):
    info = DataInfo(channels=1, image_size=8, num_known=4)
    return get_method("crosr")(CrosrConfig.from_dict(overrides), info)


def test_recipe_defaults_are_the_references():
    c = CrosrConfig()
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs) == (0.05, 0.9, 5e-4, 128, 500)
    assert (c.step_epochs, c.step_gamma, c.recon_weight, c.latent_channels) == (30, 0.5, 1.0, 32)
    assert (c.tailsize, c.alpha_rank, c.distance, c.revision, c.av, c.av_pool) == (
        20, 10, "euclidean", "logit", "logits_latents", "max")
    m = method()
    # Coupled decay, as the reference's torch.optim.SGD (not the DIFAIR recipe's decoupled form).
    assert type(m.optimizer) is torch.optim.SGD
    assert m.optimizer.param_groups[0]["weight_decay"] == 5e-4
    assert [m.lr_for_epoch(e) for e in (0, 30)] == [0.05, 0.025]
    assert m.sampled_cell().alpha_rank == 4  # min(10, K)


def test_input_sizes_and_auto_widths():
    cls = get_method("crosr")
    assert cls.input_size(CrosrConfig(), "mnist", 28) == 32  # §3: 28 → 32, bilinear
    assert cls.input_size(CrosrConfig(), "digits", 8) == 8
    assert cls.input_size(CrosrConfig(), "cifar10", 32) == 32
    assert resolve_dhrnet("auto", 1) == "dhrnet_small"
    assert resolve_dhrnet("auto", 3) == "dhrnet"


def test_one_training_step_lowers_the_loss_it_reports():
    torch.manual_seed(0)
    m = method(lr=0.05, recon_weight=1.0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.arange(16) % 4
    before = m.loss(x, y).item()
    for epoch in range(5):
        logs = m.train_epoch([(x, y)], epoch)
    assert logs["train_loss"] < before


def test_evaluation_runs_with_dropout_off():
    torch.manual_seed(0)
    m = method()
    x = torch.randn(8, 1, 8, 8)
    y = torch.arange(8) % 4
    m.model.train()
    first, _ = m.activations(x)
    again, _ = m.activations(x)
    assert not torch.equal(first, again)  # dropout is live in train mode
    m.prepare_evaluation(lambda: [(x, y)])
    assert not m.model.training
    a = m.collect_outputs([x])
    b = m.collect_outputs([x])
    assert (a["logits"] == b["logits"]).all()


@pytest.mark.parametrize("bad", [{"recon_weight": -1.0}, {"backbone": "vgg32"}, {"av": "latents"},
                                 {"distance": "manhattan"}, {"tailsize": 1}, {"aug_mode": "mixup"},
                                 {"step_gamma": 0.0}, {"posthoc_objective": "test"}])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        CrosrConfig.from_dict(bad)


def test_recon_target_is_the_input_as_fed():
    torch.manual_seed(0)
    m = method()
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    m.model.eval()
    logits, recon, _ = m.model(x)
    assert m.loss(x, y).item() == pytest.approx((F.cross_entropy(logits, y) + F.mse_loss(recon, x)).item(), rel=1e-6)
