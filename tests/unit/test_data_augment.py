"""Device-side augmentation, resize and standardisation (difair.md §9)."""

from __future__ import annotations

import ast
import colorsys

import pytest
import torch
import torch.nn.functional as F
from repo_paths import ROOT

import data.augment as augment_module
from data import DATASETS
from data.augment import (
    AUG_MODES,
    RANDAUGMENT_CHUNK,
    AugmentPolicy,
    Normalizer,
    affine,
    augment,
    color_jitter,
    contrast_brightness,
    crop,
    default_policy,
    fit_normalizer,
    hsv_to_rgb,
    jitter_affine,
    policy_for,
    random_crop,
    resize,
    rgb_to_hsv,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(b: int, c: int, size: int, max_value: int = 255, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max_value + 1, (b, c, size, size), generator=g, dtype=torch.int64).to(torch.uint8)


def test_default_policies() -> None:
    assert default_policy("digits") == AugmentPolicy("contrast_brightness", 1, False, 9, 16)
    assert default_policy("mnist") == AugmentPolicy("contrast_brightness", 4, False, 9, 255)
    assert default_policy("svhn", magnitude=6) == AugmentPolicy("randaugment", 4, False, 6, 255)
    for name in ("cifar10", "cifar+10", "cifar+50", "tiny_imagenet"):
        p = default_policy(name)
        assert p.kind == "randaugment" and p.flip and p.crop_padding == 4
    with pytest.raises(ValueError):
        default_policy("imagenet")
    with pytest.raises(ValueError):
        AugmentPolicy("randaugment", 4, False, 9, 16)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", DATASETS)
def test_augment_keeps_shape_dtype_device_range(name: str, device: str) -> None:
    _check_augment_keeps_shape_dtype_device_range(default_policy(name), name, device)


def _check_augment_keeps_shape_dtype_device_range(policy: AugmentPolicy, name: str, device: str) -> torch.Tensor:
    """Augments a batch shaped like ``name``'s images; returns that input batch."""
    c, size = (1, 8) if name == "digits" else (1, 28) if name == "mnist" else (3, 32)
    x = _images(20, c, size, policy.max_value).to(device)
    y = augment(x, policy, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
    assert int(y.max()) <= policy.max_value
    assert not torch.equal(y, x)
    return x


def test_augment_is_reproducible_and_leaves_global_rng_alone() -> None:
    x = _images(32, 3, 32)
    for policy in (default_policy("cifar10"), default_policy("mnist")):
        xin = x[:, :1] if policy.kind == "contrast_brightness" else x
        state = torch.get_rng_state()
        a = augment(xin, policy, torch.Generator().manual_seed(7))
        assert torch.equal(torch.get_rng_state(), state)
        b = augment(xin, policy, torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
        assert not torch.equal(a, augment(xin, policy, torch.Generator().manual_seed(8)))
    augment(x, default_policy("cifar10"))  # no generator: global RNG, still works


def test_crop_matches_hand_computed_offsets() -> None:
    x = _images(3, 2, 6)
    offsets = torch.tensor([[0, 0], [4, 1], [2, 3]])
    out = crop(x, 2, offsets)
    padded = F.pad(x, (2, 2, 2, 2))
    for i, (r, c) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, r:r + 6, c:c + 6])
    assert torch.equal(crop(x, 2, torch.full((3, 2), 2)), x)  # centred crop is the identity
    # hand-checked corner: offset (0, 0) shifts the image down-right by 2, zero-filling the top rows
    assert torch.equal(out[0, :, 2:, 2:], x[0, :, :4, :4]) and int(out[0, :, :2].abs().sum()) == 0


def test_random_crop_differs_per_image() -> None:
    x = _images(1, 1, 8).expand(64, 1, 8, 8).contiguous()
    y = random_crop(x, 4, torch.Generator().manual_seed(0))
    distinct = {tuple(img.flatten().tolist()) for img in y}
    assert len(distinct) > 20  # one offset per image: 81 possible crops for 64 identical images
    padded = F.pad(x[:1], (4, 4, 4, 4))[0]
    crops = {tuple(padded[:, r:r + 8, c:c + 8].flatten().tolist()) for r in range(9) for c in range(9)}
    assert distinct <= crops


def test_flip_policy() -> None:
    x = _images(64, 3, 16)
    same = augment(x, AugmentPolicy("none", 0, False), torch.Generator().manual_seed(0))
    assert torch.equal(same, x)
    y = augment(x, AugmentPolicy("none", 0, True), torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_contrast_brightness_range_and_per_image_factors() -> None:
    for max_value in (16, 255):
        x = _images(256, 1, 8, max_value)
        y = contrast_brightness(x, max_value, torch.Generator().manual_seed(3))
        assert y.dtype == torch.uint8 and int(y.min()) >= 0 and int(y.max()) <= max_value
    x = torch.full((64, 1, 4, 4), 8, dtype=torch.uint8)
    x[:, :, 0, 0] = 0
    y = contrast_brightness(x, 16, torch.Generator().manual_seed(4))
    assert len({tuple(img.flatten().tolist()) for img in y}) > 32


def test_randaugment_chunks_get_their_own_ops() -> None:
    x = _images(1, 3, 32).expand(8 * RANDAUGMENT_CHUNK, 3, 32, 32).contiguous()
    y = augment(x, AugmentPolicy("randaugment", 0, False, magnitude=15), torch.Generator().manual_seed(5))
    chunks = y.split(RANDAUGMENT_CHUNK)
    assert all(torch.equal(c, c[:1].expand_as(c)) for c in chunks)  # one op per chunk...
    assert len({tuple(c[0].flatten().tolist()) for c in chunks}) > 2  # ...different across chunks


def test_policy_for() -> None:
    assert AUG_MODES == ("torchvision", "crosr", "crop_flip", "vaze", "none")
    # baselines.md §2 vaze recipe: RandAugment on every dataset, MNIST too, 4 px crop and a flip.
    assert policy_for("vaze", "mnist", 8) == AugmentPolicy("randaugment", 4, True, 8, 255)
    assert policy_for("vaze", "svhn", 18) == AugmentPolicy("randaugment", 4, True, 18, 255)
    for name in DATASETS:
        assert policy_for("none", name) is None
        assert policy_for("torchvision", name, 6) == default_policy(name, 6)
        crop_flip = policy_for("crop_flip", name)
        assert (crop_flip.kind, crop_flip.crop_padding) == ("none", 4)
        assert crop_flip.flip == (name not in ("mnist", "svhn", "digits"))
        p = policy_for("crosr", name, 7)
        if name == "digits":
            assert p is None  # 8×8 glyphs do not survive the reference warp
            continue
        assert p == AugmentPolicy("jitter_affine", 0, name not in ("mnist", "svhn"), 7, 255)
    assert policy_for("crosr", "cifar10").flip and not policy_for("crosr", "svhn").flip
    with pytest.raises(ValueError, match="torchvision, crosr, crop_flip, vaze, none"):
        policy_for("mixup", "cifar10")
    with pytest.raises(ValueError):
        policy_for("crosr", "imagenet")
    with pytest.raises(ValueError):
        policy_for("torchvision", "imagenet")


def test_rgb_hsv_round_trip_and_reference_values() -> None:
    x = _images(4, 3, 16, seed=11).float()
    hsv = rgb_to_hsv(x)
    assert float(hsv[:, 0].min()) >= 0 and float(hsv[:, 0].max()) < 1
    back = hsv_to_rgb(hsv)
    assert float((back - x).abs().max()) < 1e-3 and torch.equal(back.round(), x)
    # against the standard library on a sample of pixels (colorsys works on [0, 1], V scales with the input)
    px = x.permute(0, 2, 3, 1).reshape(-1, 3)[::37]
    ours = hsv.permute(0, 2, 3, 1).reshape(-1, 3)[::37]
    for rgb, (h, s, v) in zip(px.tolist(), ours.tolist(), strict=True):
        rh, rs, rv = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
        assert min(abs(h - rh), 1 - abs(h - rh)) < 1e-5 and s == pytest.approx(rs, abs=1e-5)
        assert v / 255 == pytest.approx(rv, abs=1e-6)
    primaries = torch.tensor([[255.0, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [40, 40, 40]]).view(5, 3, 1, 1)
    assert torch.allclose(rgb_to_hsv(primaries)[:, 0].flatten(), torch.tensor([0, 1 / 3, 2 / 3, 1 / 6, 0]))
    # a third of the circle turns red into green and green into blue
    shifted = hsv_to_rgb(rgb_to_hsv(primaries[:2]) + torch.tensor([1 / 3, 0, 0]).view(1, 3, 1, 1))
    assert torch.allclose(shifted, primaries[1:3], atol=1e-3)


def test_color_jitter_brightness_bounds() -> None:
    x = torch.full((3, 1, 4, 4), 100, dtype=torch.uint8)
    y = color_jitter(x, torch.tensor([0.5, 1.5, 3.0]), None, 255)
    assert torch.allclose(y, torch.tensor([50.0, 150.0, 255.0]).view(3, 1, 1, 1).expand_as(y))
    assert torch.equal(color_jitter(x, torch.tensor([0.5, 1.0, 2.0]), None, 160).amax(dim=(1, 2, 3)),
                       torch.tensor([50.0, 100.0, 160.0]))  # clipped at max_value


def test_hue_shift_keeps_grey_and_value() -> None:
    x = _images(8, 3, 16, seed=12)
    x[:, :, :4] = x[:, :1, :4]  # the top rows are grey (R = G = B)
    hue = torch.linspace(-0.3, 0.3, 8)
    y = color_jitter(x, torch.ones(8), hue, 255)
    assert torch.allclose(y[:, :, :4], x[:, :, :4].float(), atol=1e-3)
    assert float((y.amax(dim=1) - x.amax(dim=1).float()).abs().max()) < 1e-3  # V kept
    assert float((y.amin(dim=1) - x.amin(dim=1).float()).abs().max()) < 1e-3  # so is S (hence the min)
    assert float((y[:, :, 4:] - x[:, :, 4:].float()).abs().amax(dim=(1, 2, 3)).min()) > 20  # colours did move
    assert torch.equal(color_jitter(x[:, :1], torch.ones(8), hue, 255), x[:, :1].float())  # no hue on 1 channel


def test_affine_identity_rotation_translation_scale() -> None:
    x = _images(3, 2, 7, seed=13)
    zero, one = torch.zeros(3), torch.ones(3)
    assert torch.equal(affine(x, zero, torch.zeros(3, 2), one), x)
    for size in (4, 5):
        sq = _images(2, 3, size, seed=size)
        for k in (1, 2, 3):  # positive angles turn counter-clockwise as displayed, like torch.rot90
            out = affine(sq, torch.full((2,), 90.0 * k), torch.zeros(2, 2), torch.ones(2))
            assert torch.equal(out, torch.rot90(sq, k, dims=(-2, -1)))
    # non-square: the aspect ratio is respected (4x6 turned by 90 degrees covers the middle 4 columns)
    rect = _images(1, 1, 6, seed=14)[:, :, :4] | 1
    out = affine(rect, torch.tensor([90.0]), torch.zeros(1, 2), torch.ones(1))
    assert torch.equal(out[..., 1:5], torch.rot90(rect[..., 1:5], 1, dims=(-2, -1)))
    assert int(out[..., [0, 5]].abs().sum()) == 0
    # translation (dx, dy) = (2, 1) moves content right and down, zero fill
    out = affine(x, zero, torch.tensor([[2.0, 1.0]]).expand(3, 2), one)
    assert torch.equal(out[:, :, 1:, 2:], x[:, :, :-1, :-2])
    assert int(out[:, :, :1].abs().sum()) == 0 and int(out[:, :, :, :2].abs().sum()) == 0
    # translation is applied after the rotation, in output coordinates
    out = affine(x, torch.full((3,), 90.0), torch.tensor([[0.0, 1.0]]).expand(3, 2), one)
    assert torch.equal(out[:, :, 1:], torch.rot90(x, 1, dims=(-2, -1))[:, :, :-1])
    # scale 0.5 about the centre of a 9x9 image: every other input pixel lands on the middle 5x5
    big = _images(2, 1, 9, seed=15) | 1
    out = affine(big, torch.zeros(2), torch.zeros(2, 2), torch.full((2,), 0.5))
    assert torch.equal(out[:, :, 2:7, 2:7], big[:, :, ::2, ::2])
    assert int(out.abs().sum()) == int(big[:, :, ::2, ::2].sum())  # zeros elsewhere
    # parameters are per image
    angles, shifts, scales = torch.tensor([90.0, 0.0, 180.0]), torch.tensor([[0.0, 0], [1, 0], [0, 0]]), one
    batch = affine(x, angles, shifts, scales)
    for i in range(3):
        assert torch.equal(batch[i:i + 1], affine(x[i:i + 1], angles[i:i + 1], shifts[i:i + 1], scales[i:i + 1]))
    assert affine(x.float(), angles, shifts, scales).dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [d for d in DATASETS if d != "digits"])
def test_crosr_augment_keeps_shape_dtype_device_range(name: str, device: str) -> None:
    policy = policy_for("crosr", name)
    x = _check_augment_keeps_shape_dtype_device_range(policy, name, device)
    assert augment(x[:0], policy, torch.Generator().manual_seed(1)).shape == (0, *x.shape[1:])


def test_crosr_augment_is_reproducible_and_leaves_global_rng_alone() -> None:
    x = _images(32, 3, 32)
    for name in ("cifar10", "mnist"):
        policy = policy_for("crosr", name)
        xin = x[:, :1] if name == "mnist" else x
        state = torch.get_rng_state()
        a = augment(xin, policy, torch.Generator().manual_seed(7))
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a, augment(xin, policy, torch.Generator().manual_seed(7)))
        assert not torch.equal(a, augment(xin, policy, torch.Generator().manual_seed(8)))
    augment(x, policy_for("crosr", "cifar10"))  # no generator: global RNG, still works


def test_jitter_affine_brightness_bounds_and_per_image_draws() -> None:
    # A constant image: each output pixel is either fill (0) or the image value times that image's brightness
    # factor in [0.5, 1.5], clipped; the centre pixel is never filled (|shift| <= 0.2 * size, scale >= 0.75).
    for value, max_value, channels in ((100, 255, 1), (100, 255, 3), (12, 16, 1)):
        x = torch.full((256, channels, 16, 16), value, dtype=torch.uint8)
        y = jitter_affine(x, max_value, torch.Generator().manual_seed(21))
        centre = y[:, :, 8, 8]
        assert bool((centre == centre[:, :1]).all())  # grey stays grey under the hue shift
        centre = centre[:, 0].float()
        lo, hi = round(0.5 * value), min(round(1.5 * value), max_value)
        assert float(centre.min()) >= lo and float(centre.max()) <= hi
        assert float(centre.min()) < lo + 0.1 * value and float(centre.max()) > hi - 0.1 * value
        assert bool(((y == 0) | (y == centre.to(torch.uint8).view(-1, 1, 1, 1))).all())  # one factor per image
        assert int((y == 0).sum()) > 0  # zero fill from the warp
    # identical images get different warps
    x = _images(1, 3, 16, seed=22).expand(64, 3, 16, 16).contiguous()
    y = jitter_affine(x, 255, torch.Generator().manual_seed(23))
    assert len({tuple(img.flatten().tolist()) for img in y}) == 64


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_affine_draw_ranges(channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, torch.Tensor | None] = {}
    real_jitter, real_affine = augment_module.color_jitter, augment_module.affine

    def spy_jitter(x, brightness, hue, max_value):
        seen.update(brightness=brightness, hue=hue)
        return real_jitter(x, brightness, hue, max_value)

    def spy_affine(x, angle, translate, scale):
        seen.update(angle=angle, translate=translate, scale=scale)
        return real_affine(x, angle, translate, scale)

    monkeypatch.setattr(augment_module, "color_jitter", spy_jitter)
    monkeypatch.setattr(augment_module, "affine", spy_affine)
    n, h, w = 2000, 20, 30
    jitter_affine(torch.zeros((n, channels, h, w), dtype=torch.uint8), 255, torch.Generator().manual_seed(26))

    def spans(t: torch.Tensor, lo: float, hi: float) -> bool:  # inside [lo, hi] and close to both ends
        return lo <= float(t.min()) < lo + 0.02 * (hi - lo) and hi - 0.02 * (hi - lo) < float(t.max()) <= hi

    assert spans(seen["brightness"], 0.5, 1.5)
    assert seen["hue"] is None if channels == 1 else spans(seen["hue"], -0.3, 0.3)
    assert spans(seen["angle"], -30, 30) and spans(seen["scale"], 0.75, 1.0)
    dx, dy = seen["translate"].unbind(1)  # whole pixels, up to 0.2 of the width / height
    assert torch.equal(dx, dx.round()) and torch.equal(dy, dy.round())
    assert (int(dx.min()), int(dx.max()), int(dy.min()), int(dy.max())) == (-6, 6, -4, 4)
    assert len({round(float(v), 6) for v in seen["angle"]}) == n  # one draw per image


def test_crosr_flip_only_for_natural_images() -> None:
    # Flip is the last step and draws last: with equal seeds, a flipping policy's output is the
    # non-flipping one's, mirrored for some images and unchanged for the others.
    x = _images(64, 3, 16, seed=24)
    flipped = augment(x, policy_for("crosr", "cifar10"), torch.Generator().manual_seed(25))
    plain = augment(x, policy_for("crosr", "svhn"), torch.Generator().manual_seed(25))
    mirrored = torch.tensor([torch.equal(flipped[i], plain[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(flipped[i], plain[i]) for i in range(64)])
    assert bool((mirrored | kept).all()) and 10 < int(mirrored.sum()) < 54
    for name in ("mnist", "svhn"):
        assert not policy_for("crosr", name).flip


def test_resize() -> None:
    x = torch.full((5, 1, 28, 28), 77, dtype=torch.uint8)
    y = resize(x, 32)
    assert y.shape == (5, 1, 32, 32) and y.dtype == torch.uint8 and bool((y == 77).all())
    z = resize(_images(4, 3, 28), 32, chunk=3)
    assert z.shape == (4, 3, 32, 32) and z.dtype == torch.uint8
    ref = F.interpolate(_images(4, 3, 28).float(), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.equal(z, ref.round().clamp(0, 255).to(torch.uint8))


def test_normalizer_standardises_its_own_data() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(0, 100, (200, 8, 8), generator=g),
                     torch.randint(100, 256, (200, 8, 8), generator=g),
                     torch.randint(0, 256, (200, 8, 8), generator=g)], dim=1).to(torch.uint8)
    norm = fit_normalizer(x, 255)
    xf = x.double() / 255
    assert norm.mean == pytest.approx(xf.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert norm.std == pytest.approx(xf.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)
    z = norm(x)
    assert z.dtype == torch.float32
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (z.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-5
    digits = fit_normalizer(torch.tensor([[[[0, 16]]], [[[8, 8]]]], dtype=torch.uint8), 16)
    assert digits.mean == (0.5,) and digits.std == pytest.approx((0.125 ** 0.5,))  # values 0, 1, .5, .5
    assert isinstance(digits, Normalizer)


def test_data_package_does_not_import_ray() -> None:
    for path in (ROOT / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "ray" for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "ray", path
