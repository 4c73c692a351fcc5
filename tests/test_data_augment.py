"""Device-side augmentation, resize and standardisation (difair.md §9)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data import DATASETS
from data.augment import (
    RANDAUGMENT_CHUNK,
    AugmentPolicy,
    Normalizer,
    augment,
    contrast_brightness,
    crop,
    default_policy,
    fit_normalizer,
    random_crop,
    resize,
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
    policy = default_policy(name)
    c, size = (1, 8) if name == "digits" else (1, 28) if name == "mnist" else (3, 32)
    x = _images(20, c, size, policy.max_value).to(device)
    y = augment(x, policy, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
    assert int(y.max()) <= policy.max_value
    assert not torch.equal(y, x)


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
    for path in (Path(__file__).resolve().parents[1] / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "ray" for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "ray", path
