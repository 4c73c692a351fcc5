"""Contrastive Disentangling (contrastive_disentangling.md) pinned against slow reference loops and
values computed by hand: both InfoNCE losses, the entropy term, the heads, the views, the k-means
readout and the CIFAR-100 super-class table."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from data.pools import check_coarse_labels, cifar100_coarse_of_fine, read_cifar100_labels
from data.views import crop_boxes, gaussian_blur, make_view, view_policy
from methods import DataInfo, get_method
from methods.cd import (
    CDConfig,
    cd_objective,
    feature_loss,
    instance_loss,
    normalised_entropy,
    setting,
)
from methods.presets import describe_setting
from results_analysis.metrics import kmeans_readout


def slow_info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """Per pair, in float64 Python: rows of [a; b], cosine / τ, positive = the other view's row."""
    rows = [r.double() for r in torch.cat([a, b])]
    n2, n = len(rows), len(a)
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        sims = {j: float(rows[i] @ rows[j] / (rows[i].norm() * rows[j].norm())) / tau for j in range(n2) if j != i}
        total += -sims[pos] + math.log(sum(math.exp(s) for s in sims.values()))
    return total / n2


@pytest.mark.parametrize("tau", [0.5, 0.2, 1.0])
def test_instance_loss_equals_the_per_pair_loop(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert instance_loss(z1, z2, tau).item() == pytest.approx(slow_info_nce(z1, z2, tau), rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_feature_loss_contrasts_columns_and_equals_the_per_pair_loop(tau):
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.rand(7, 4, generator=g), torch.rand(7, 4, generator=g)  # B = 7 images, K_f = 4 columns
    expected = slow_info_nce(f1.T, f2.T, tau)  # 2K_f = 8 rows, each a column over the batch
    assert feature_loss(f1, f2, tau).item() == pytest.approx(expected, rel=1e-5)
    assert feature_loss(f1, f2, tau).item() != pytest.approx(slow_info_nce(f1, f2, tau), rel=1e-3)


def test_a_perfectly_aligned_pair_has_the_smallest_instance_loss():
    z = torch.eye(4) * 3.0
    aligned = instance_loss(z, z, 0.5).item()
    # Row i's positive has cosine 1 and its 6 negatives cosine 0: −2 + log(e² + 6).
    assert aligned == pytest.approx(-2.0 + math.log(math.exp(2.0) + 6), rel=1e-6)
    assert instance_loss(z, z.roll(1, dims=0), 0.5).item() > aligned


def test_normalised_entropy_on_hand_made_outputs():
    f1 = torch.tensor([[0.5, 0.25]])
    f2 = torch.tensor([[0.75, 1.0]])
    h_quarter = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)  # 0.8113 bits
    expected = (1.0 + h_quarter + h_quarter + 0.0) / 4
    assert normalised_entropy(f1, f2).item() == pytest.approx(expected, abs=1e-6)
    assert h_quarter == pytest.approx(0.811278, abs=1e-6)


def test_the_total_subtracts_the_weighted_entropy():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    f1, f2 = torch.rand(5, 4, generator=g), torch.rand(5, 4, generator=g)
    parts = cd_objective(z1, z2, f1, f2, 0.5, 1.0, 0.7)
    expected = instance_loss(z1, z2, 0.5) + feature_loss(f1, f2, 1.0) - 0.7 * normalised_entropy(f1, f2)
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["entropy"].item() == pytest.approx(normalised_entropy(f1, f2).item())


def _method(backbone: str, channels: int = 3, size: int = 32, dataset: str = "cifar10", **kw):
    config = CDConfig(backbone=backbone, **kw)
    return get_method("cd")(config, DataInfo(channels=channels, image_size=size, num_known=10, dataset=dataset))


def _label(m) -> str:
    return describe_setting(type(m), m.config, m.info)["label"]


def test_heads_are_the_specs_and_the_predictor_reads_z():
    m = _method("resnet18_cifar_native", feature_dim=64)
    proj, pred = m.model.projector, m.model.predictor
    assert [type(x) for x in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (proj[0].in_features, proj[0].out_features, proj[0].bias, proj[3].out_features) == (512, 512, None, 128)
    assert proj[3].bias is not None
    assert [type(x) for x in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.Sigmoid]
    assert (pred[0].in_features, pred[0].bias, pred[3].out_features, pred[3].bias) == (128, None, 64, None)
    m.model.eval()
    h, z, f = m.model(torch.rand(3, 3, 32, 32))
    assert h.shape == (3, 512) and z.shape == (3, 128) and f.shape == (3, 64)
    assert bool(((f > 0) & (f < 1)).all())
    torch.testing.assert_close(m.model.predictor(z), f)


def test_backbones_stems_and_image_sizes():
    native = _method("resnet18_cifar_native")
    conv = native.model.backbone.conv1
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1)) and isinstance(native.model.backbone.maxpool, nn.Identity)
    assert native.setting == setting("resnet18_cifar_native", 32, 1000, False)
    assert _label(native) == "reduced setting"
    ref = _method("resnet34_imagenet224", transductive=True)
    conv = ref.model.backbone.conv1
    assert (conv.kernel_size, conv.stride) == ((7, 7), (2, 2)) and isinstance(ref.model.backbone.maxpool, nn.MaxPool2d)
    assert sum(len(layer) for layer in (ref.model.backbone.layer1, ref.model.backbone.layer2,
                                        ref.model.backbone.layer3, ref.model.backbone.layer4)) == 3 + 4 + 6 + 3
    assert ref.image_size == 224 and ref.views.size == 224
    assert _label(ref) == "reference setting"
    assert _label(_method("resnet34_imagenet224", epochs=200, transductive=True)) == "reduced setting"
    assert _method("auto", channels=1, size=8, dataset="digits").backbone_name == "resnet18_cifar_native"
    assert _method("auto", channels=1, size=28, dataset="mnist").backbone_name == "resnet34_imagenet224"
    ref.model.eval()
    h, f = ref.model.readout(torch.rand(2, 3, 32, 32))  # native images are resized to 224 inside
    assert h.shape == (2, 512) and f.shape == (2, 128)


def test_training_targets_hide_the_labels():
    m = _method("cnn4_native", channels=1, size=8, dataset="digits")
    assert torch.equal(m.training_targets(torch.tensor([3, 1, 4, 1, 5])), torch.zeros(5, dtype=torch.int64))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="backbone must be one of"):
        CDConfig(backbone="vgg")
    with pytest.raises(ValueError, match="tau"):
        CDConfig(tau_feature=0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        CDConfig(lr_schedule="step")


def test_crop_boxes_fit_and_cover_the_area_range():
    boxes = crop_boxes(4000, 32, 32, (0.08, 1.0), torch.Generator().manual_seed(0), torch.device("cpu"))
    top, left, h, w = boxes.T
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32) & (h >= 1) & (w >= 1)).all())
    area = (h * w / 1024).numpy()
    assert area.min() < 0.12 and area.max() > 0.95  # the whole 8%-100% range is drawn
    ratio = (w / h).numpy()
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)


def test_views_keep_range_shape_and_are_reproducible():
    x = torch.rand(16, 3, 32, 32)
    policy = view_policy("cifar10", 3, 32)
    assert (policy.strength, policy.flip, policy.greyscale, policy.hue_saturation) == (0.5, True, True, True)
    v = make_view(x, policy, torch.Generator().manual_seed(3))
    assert v.shape == x.shape and float(v.min()) >= 0 and float(v.max()) <= 1
    torch.testing.assert_close(v, make_view(x, policy, torch.Generator().manual_seed(3)))
    assert not torch.allclose(v, make_view(x, policy, torch.Generator().manual_seed(4)))
    up = make_view(x, view_policy("cifar10", 3, 224), torch.Generator().manual_seed(3))
    assert up.shape == (16, 3, 224, 224)


def test_digit_views_do_not_flip_or_touch_colour_and_a_full_crop_is_the_identity():
    policy = view_policy("digits", 1, 8)
    assert (policy.flip, policy.greyscale, policy.hue_saturation) == (False, False, False)
    assert view_policy("svhn", 3, 32).flip is False and view_policy("svhn", 3, 32).hue_saturation is True
    x = torch.rand(8, 1, 8, 8)
    whole = make_view(x, policy.__class__(size=8, crop_scale=(1.0, 1.0), flip=False, strength=0.0, greyscale=False),
                      torch.Generator().manual_seed(0))
    torch.testing.assert_close(whole, x)  # a box over the whole image resampled at its own size


def test_blur_keeps_a_flat_image_flat_and_smooths_an_impulse():
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.5, 2.0])), flat)
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1.0
    out = gaussian_blur(impulse, torch.tensor([1.0]))
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    # A 2-D Gaussian with σ = 1 puts 1/(2π) at its centre.
    assert out[0, 0, 15, 15].item() == pytest.approx(1 / (2 * math.pi), rel=0.02)


def test_kmeans_readout_on_separated_blobs_and_on_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    centres = np.eye(3) * 10
    h = centres[labels] + rng.normal(0, 0.1, (90, 3))
    f = rng.normal(0, 1, (90, 5))
    metrics, clusters = kmeans_readout({"h": h, "f": f}, labels, 3, prefix="val_")
    assert metrics["val_backbone_nmi"] == pytest.approx(1.0) and metrics["val_backbone_cluster_acc"] == 1.0
    assert metrics["val_backbone_ari"] == pytest.approx(1.0)
    assert metrics["val_feature_nmi"] < 0.2  # noise has no class structure
    assert set(clusters) == {"backbone", "feature"} and clusters["backbone"].shape == (90,)


def test_cifar100_super_classes_follow_the_official_table(tmp_path):
    coarse = cifar100_coarse_of_fine()
    assert sorted(np.bincount(coarse).tolist()) == [5] * 20
    assert (coarse[4], coarse[30], coarse[1], coarse[89], coarse[8], coarse[14]) == (0, 0, 1, 19, 18, 7)
    fine = np.array([4, 1, 54, 89, 0])
    good = coarse[fine]
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({"fine_labels": fine.tolist(), "coarse_labels": good.tolist()}))
    read_fine, read_coarse = read_cifar100_labels(path)
    np.testing.assert_array_equal(read_fine, fine)
    check_coarse_labels(read_fine, read_coarse)
    bad = good.copy()
    bad[2] = 3
    with pytest.raises(ValueError, match="fine 54, coarse 3, expected 2"):
        check_coarse_labels(fine, bad)
