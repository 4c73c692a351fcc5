"""ClustNet as clustnet.md specifies it: the shared encoder, gate and expert shapes (§3), the
straight-through hard selection with output gating (§4), the loss and its gate gradient (§4.5), the
alternating optimisers (§5) and training that never sees the class label (§2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from methods.base import DataInfo
from methods.clustnet import (
    ClustNet,
    ClustNetConfig,
    Encoder,
    ExpertBank,
    SamePadConv,
    binary_targets,
    clustnet_loss,
    gate_network,
    gated_log_probs,
    select_experts,
)

DIGITS = DataInfo(channels=1, image_size=8, num_known=10)


def make(info: DataInfo = DIGITS, **overrides) -> ClustNet:
    torch.manual_seed(0)
    return ClustNet(ClustNetConfig(**overrides), info)


@pytest.mark.parametrize(("channels", "size", "flat"), [(1, 8, 128), (1, 28, 1568), (3, 32, 2048)])
def test_encoder_pools_twice_and_maps_to_repr_size_without_activation(channels, size, flat):
    enc = Encoder(channels, size, layers=2, channels=32, kernel=4, repr_size=100)
    assert enc.fc.in_features == flat  # 32·(S/4)², §3: digits 128, MNIST 1568, CIFAR-10 2048
    h = enc(torch.randn(3, channels, size, size))
    assert h.shape == (3, 100)
    assert (h < 0).any()  # a plain linear map: no ReLU on the representation
    # Residual only where a layer's input and output channels match.
    assert enc.residual == [channels == 32, True]
    assert all(b.conv.bias is None for b in enc.blocks)


@pytest.mark.parametrize(("layers", "pools"), [(2, {0, 1}), (3, {0, 2}), (4, {1, 3}), (5, {1, 4})])
def test_encoder_pools_after_layer_half_minus_one_and_after_the_last(layers, pools):
    assert Encoder(1, 8, layers, 32, 4, 100).pool_after == pools


def test_same_padding_of_an_even_kernel_pads_one_before_and_two_after():
    # A kernel that copies its (1, 1) tap reproduces the input exactly only with (1 before, 2 after)
    # padding; (2, 1) would shift the image by one pixel.
    block = SamePadConv(1, 1, 4)
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.weight[0, 0, 1, 1] = 1.0
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 4] = 1.0
    out = block.conv(F.pad(x, block.pad))
    assert out.shape == x.shape
    assert torch.equal(out, x)


@pytest.mark.parametrize(("layers", "widths"), [(1, [(100, 5)]), (2, [(100, 64), (64, 5)]),
                                                  (4, [(100, 64), (64, 64), (64, 64), (64, 5)])])
def test_gate_is_dense_layers_of_width_64_ending_in_m_logits(layers, widths):
    gate = gate_network(100, layers, 64, 5)
    linears = [m for m in gate if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == widths
    assert sum(isinstance(m, nn.ReLU) for m in gate) == layers - 1


@pytest.mark.parametrize("capacity", ["linear", "hidden8", "hidden32"])
def test_expert_bank_equals_m_separate_small_nets(capacity):
    torch.manual_seed(1)
    bank = ExpertBank(5, 100, capacity)
    h = torch.randn(7, 100)
    out = bank(h)
    assert out.shape == (7, 5, 2)
    for i in range(5):  # the slow reference: expert i as its own chain of Linear layers
        z = h
        for layer, (w, b) in enumerate(zip(bank.weights, bank.biases, strict=True)):
            if layer:
                z = torch.relu(z)
            z = F.linear(z, w[i].T, b[i])
        torch.testing.assert_close(out[:, i], F.log_softmax(z, dim=1))
    widths = [w.shape[1:] for w in bank.weights]
    assert widths == ([(100, 2)] if capacity == "linear" else [(100, int(capacity[6:])), (int(capacity[6:]), 2)])


def test_straight_through_forward_is_one_hot_and_gradient_is_identity():
    pi = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], requires_grad=True)
    g = select_experts(pi, sample=False)
    assert torch.equal(g.detach(), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    weights = torch.randn(2, 3)
    (g * weights).sum().backward()
    torch.testing.assert_close(pi.grad, weights)  # ∂g/∂π = identity


def test_sampled_selection_follows_the_gate_distribution():
    pi = torch.tensor([0.6, 0.3, 0.1, 0.0]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    g = select_experts(pi, sample=True, generator=generator)
    assert torch.equal(g.sum(dim=1), torch.ones(20000))
    share = g.mean(dim=0)
    torch.testing.assert_close(share, torch.tensor([0.6, 0.3, 0.1, 0.0]), atol=0.015, rtol=0)


def test_loss_is_the_selected_experts_binary_nll_by_hand():
    log_probs = torch.log(torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.6, 0.4]]]))
    gate = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    mixed = gated_log_probs(log_probs, gate)
    torch.testing.assert_close(mixed, torch.log(torch.tensor([[0.2, 0.8], [0.3, 0.7]])))
    targets = torch.tensor([1, 0])
    expected = -(np.log(0.8) + np.log(0.3)) / 2
    assert clustnet_loss(mixed, targets).item() == pytest.approx(expected, rel=1e-6)
    # β: minus β times the entropy of the batch-mean gate distribution.
    pi = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    usage = np.array([0.7, 0.3])
    entropy = -(usage * np.log(usage)).sum()
    assert clustnet_loss(mixed, targets, pi, 0.5).item() == pytest.approx(expected - 0.5 * entropy, rel=1e-6)


def test_training_forward_uses_exactly_one_expert_per_sample_and_the_gate_gets_the_st_gradient():
    method = make()
    model = method.model
    model.train()
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([1, 0, 1])
    torch.manual_seed(5)
    mixed, log_probs, pi = method.forward(x, sample=True)
    pi.retain_grad()
    chosen = [int(torch.nonzero(torch.isclose(mixed[b], log_probs[b]).all(dim=1))[0]) for b in range(3)]
    for b, s in enumerate(chosen):  # the forward value is exactly the selected expert's output
        assert torch.equal(mixed[b], log_probs[b, s])
    loss = clustnet_loss(mixed, t)
    loss.backward()
    # ∂L/∂π_i = NLL_i / B for every expert i (straight-through), not only the chosen one.
    nll = -log_probs.detach()[torch.arange(3), :, t]
    torch.testing.assert_close(pi.grad, nll / 3)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.gate.parameters())
    # Experts no sample selected get no gradient: their outputs were multiplied by an exact 0.
    unused = sorted(set(range(5)) - set(chosen))
    assert unused
    for i in unused:
        assert all(float(p.grad[i].abs().sum()) == 0.0 for p in model.experts.parameters())
    for i in set(chosen):
        assert float(model.experts.weights[0].grad[i].abs().sum()) > 0


def test_gate_logit_gradient_moves_toward_below_average_experts():
    # §4.5: per sample ∂L/∂c_j = (1/B)·π_j·(NLL_j − Σ_i π_i·NLL_i).
    c = torch.tensor([[0.3, -0.2, 1.0]], requires_grad=True)
    pi = c.softmax(dim=1)
    log_probs = torch.log(torch.tensor([[[0.4, 0.6], [0.9, 0.1], [0.7, 0.3]]]))
    mixed = gated_log_probs(log_probs, select_experts(pi, sample=False))
    clustnet_loss(mixed, torch.tensor([1])).backward()
    p = pi.detach()[0]
    nll = torch.tensor([-np.log(0.6), -np.log(0.1), -np.log(0.3)], dtype=torch.float32)
    torch.testing.assert_close(c.grad[0], p * (nll - (p * nll).sum()))


def test_evaluation_uses_the_argmax_expert_deterministically():
    method = make()
    x = torch.randn(40, 1, 8, 8)
    first = method.evaluate([x[:25], x[25:]])
    second = method.evaluate([x])
    np.testing.assert_array_equal(first["expert"], second["expert"])
    np.testing.assert_allclose(first["log_probs"], second["log_probs"], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        method.model.eval()
        log_probs, pi = method.model(x)
    idx = pi.argmax(dim=1)
    np.testing.assert_array_equal(first["expert"], idx.numpy())
    np.testing.assert_allclose(first["log_probs"], log_probs[torch.arange(40), idx].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first["pred"], log_probs[torch.arange(40), idx].argmax(dim=1).numpy())


def test_soft_decision_mixes_every_expert():
    method = make(decision="SD")
    x = torch.randn(6, 1, 8, 8)
    method.model.eval()
    mixed, log_probs, pi = method.forward(x, sample=False)
    torch.testing.assert_close(mixed, (pi.unsqueeze(2) * log_probs).sum(dim=1))


def test_optimisers_alternate_with_the_batch_period():
    method = make(batch_period=2)
    order = ["gate" if method.optimizer_for_batch(i) == [method.opt_gate] else "det" for i in range(8)]
    assert order == ["gate", "gate", "det", "det"] * 2
    both = make(batch_period=0)
    assert both.optimizer_for_batch(3) == [both.opt_gate, both.opt_det]


def test_a_gate_step_never_moves_the_experts_and_a_detector_step_never_moves_the_gate():
    method = make(batch_period=1)
    model = method.model
    x = torch.randn(8, 1, 8, 8)
    t = torch.tensor([0, 1] * 4)

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    def moved(before: dict[str, torch.Tensor], prefix: str) -> bool:
        return any(not torch.equal(v, before[k]) for k, v in model.named_parameters() if k.startswith(prefix))

    before = snapshot()
    method.train_epoch([(x, t)], 0)  # batch 0: the gate side (E + G)
    assert moved(before, "gate.") and moved(before, "encoder.") and not moved(before, "experts.")
    before = snapshot()
    method.train_epoch([(x, t), (x, t)], 0)  # batch 0 gate again, batch 1 detectors
    assert moved(before, "experts.")
    # Two optimisers over the shared encoder keep separate momentum buffers (§5).
    enc = next(model.encoder.parameters())
    assert method.opt_gate.state[enc]["momentum_buffer"] is not method.opt_det.state[enc]["momentum_buffer"]
    assert method.opt_gate.param_groups[0]["momentum"] == 0.5 and method.opt_gate.param_groups[0]["weight_decay"] == 0


def test_lr_gate_is_tied_to_lr_unless_given():
    assert make(lr=0.03).opt_gate.param_groups[0]["lr"] == 0.03
    tied = make(lr=0.03, lr_gate=0.001)
    assert tied.opt_gate.param_groups[0]["lr"] == 0.001 and tied.opt_det.param_groups[0]["lr"] == 0.03


def test_binary_targets_follow_the_configurable_groups():
    labels = torch.arange(10)
    assert binary_targets(labels, (0, 1, 2, 3, 4)).tolist() == [1] * 5 + [0] * 5
    method = make(positive_classes=(0, 2, 4, 6, 8), negative_classes=(1, 3, 5, 7, 9))
    assert method.training_targets(labels).tolist() == [1, 0] * 5


@pytest.mark.parametrize("groups", [((0, 1, 2), (3, 4, 5, 6, 7, 8)), ((0, 1, 2, 3, 4), (4, 5, 6, 7, 8, 9)),
                                    ((), tuple(range(10)))])
def test_groups_must_be_disjoint_and_cover_the_ten_classes(groups):
    with pytest.raises(ValueError, match="disjoint, non-empty lists covering the classes 0-9"):
        ClustNetConfig(positive_classes=groups[0], negative_classes=groups[1])


def test_config_round_trips_lists_through_plain_values():
    config = ClustNetConfig.from_dict({"positive_classes": [5, 6, 7, 8, 9], "negative_classes": [0, 1, 2, 3, 4],
                                       "lr_gate": 1})
    assert config.positive_classes == (5, 6, 7, 8, 9) and config.lr_gate == 1.0
    assert config.to_dict()["positive_classes"] == [5, 6, 7, 8, 9]
    assert ClustNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="must be a list"):
        ClustNetConfig.from_dict({"positive_classes": 3})


@pytest.fixture(scope="module")
def digits_clustnet():
    from data import load_pool
    from trainables.device_data import DataBundle
    from trainables.tasks import task_splits

    pool = load_pool("digits", "unused")
    return DataBundle.from_pool(pool, task_splits(pool, "clustnet", [0]))


def test_training_never_sees_the_class_label(digits_clustnet):
    """Swapping classes inside P and inside N leaves the binary target, hence training, unchanged."""
    from trainables.tasks import trial_runs

    bundle = digits_clustnet
    lut = np.array([1, 2, 3, 4, 0, 9, 5, 6, 7, 8])
    scrambled = dataclasses.replace(bundle, train_y=lut[bundle.train_y])
    config = {"method": "clustnet", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 1, "batch_size": 16}
    losses = []
    weights = []
    classes = []
    for b in (bundle, scrambled):
        runs = trial_runs(config, b, torch.device("cpu"))
        classes.append(runs.runs[0].y["train"].clone())
        losses.append(runs.runs[0].train_epoch(16, 0)["train_loss"])
        weights.append(runs.runs[0].method.model.state_dict())
    assert not torch.equal(classes[0], classes[1])  # the runs did see different classes
    assert losses[0] == losses[1]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_clustnet_needs_a_ten_class_dataset():
    with pytest.raises(ValueError, match="10-class dataset"):
        ClustNet(ClustNetConfig(), DataInfo(channels=1, image_size=8, num_known=6))
