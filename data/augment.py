"""Batched, device-side augmentation and standardisation (difair.md §9). No per-image PIL work.

Training order (§9.1): photometric policy (contrast+brightness, or torchvision RandAugment) -> per-image
random crop from a zero-padded image -> per-image random horizontal flip. Values stay in the raw
intensity range (0..255, digits 0..16) in uint8 until the Normalizer scales and standardises them.

The CROSR reference recipe (crosr_openmax.md §4/§10) is the ``jitter_affine`` kind: per-image brightness and
hue jitter, then one batched affine warp (rotation, translation, scale), then the flip. ``policy_for`` maps
a method's ``aug_mode`` and the dataset to the policy, so callers never choose kinds themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data.pools import DATASETS

KINDS = ("contrast_brightness", "randaugment", "jitter_affine", "none")
# ``aug_mode`` values a method config may name (see ``policy_for``).
AUG_MODES = ("torchvision", "crosr", "crop_flip", "vaze", "none")
# Datasets that are never flipped: flipping changes what a digit means (also difair.md §9.1).
DIGIT_DATASETS = ("mnist", "svhn", "digits")
# torchvision ColorJitter(brightness=0.5, hue=0.3) and RandomAffine(30, (0.2, 0.2), (0.75, 1.0)).
JITTER_BRIGHTNESS = 0.5
JITTER_HUE = 0.3
AFFINE_DEGREES = 30.0
AFFINE_TRANSLATE = 0.2
AFFINE_SCALE = (0.75, 1.0)
# torchvision's RandAugment draws one op and one magnitude sign per call and applies them to the whole
# tensor it is given. Calling it on chunks of this many images gives different images different ops
# (a whole batch sharing one op would correlate the batch) at a few kernel launches per chunk.
RANDAUGMENT_CHUNK = 8


@dataclass(frozen=True)
class AugmentPolicy:
    kind: str
    crop_padding: int
    flip: bool
    magnitude: int = 9
    max_value: int = 255

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"augmentation kind must be one of {KINDS}, got {self.kind!r}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not 0 <= self.magnitude <= 30:
            raise ValueError(f"RandAugment magnitude must be in 0..30, got {self.magnitude}")
        if not 1 <= self.max_value <= 255:
            raise ValueError(f"max_value must be in 1..255, got {self.max_value}")
        if self.kind == "randaugment" and self.max_value != 255:
            raise ValueError("RandAugment works on 0..255 images only (max_value must be 255)")


def default_policy(dataset: str, magnitude: int = 9) -> AugmentPolicy:
    """difair.md §9.1/9.2: contrast+brightness for MNIST and digits, RandAugment elsewhere; flips only
    for natural images (CIFAR10, CIFAR+N, TinyImageNet); 1 px crop padding for 8x8 digits, else 4 px."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if dataset == "digits":
        return AugmentPolicy("contrast_brightness", 1, False, magnitude, 16)
    if dataset == "mnist":
        return AugmentPolicy("contrast_brightness", 4, False, magnitude, 255)
    return AugmentPolicy("randaugment", 4, dataset != "svhn", magnitude, 255)


def policy_for(aug_mode: str, dataset: str, magnitude: int = 9) -> AugmentPolicy | None:
    """The training augmentation for a method's ``aug_mode`` on ``dataset``; None means no augmentation.

    "torchvision": ``default_policy`` (difair.md §9). "vaze": RandAugment, crop and flip on every dataset
    (baselines.md §2). "crop_flip": the adversarial reference's random crop
    (4 px zero padding) and horizontal flip (adversarial.md §2), not flipped on digit datasets. "crosr": the CROSR reference recipe (crosr_openmax.md §4):
    ``jitter_affine`` without crop, flipped except for digit datasets (mnist, svhn, digits), and none
    at all on 8×8 digits. "none": None.
    """
    if aug_mode not in AUG_MODES:
        raise ValueError(f"unknown aug_mode {aug_mode!r}; valid modes: {', '.join(AUG_MODES)}")
    if aug_mode == "none":
        return None
    if aug_mode == "torchvision":
        return default_policy(dataset, magnitude)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if aug_mode == "vaze":
        # baselines.md §2, Vaze's recipe: RandAugment on every dataset (MNIST too), 4 px crop, flip.
        return AugmentPolicy("randaugment", 4, True, magnitude, 255)
    if aug_mode == "crop_flip":
        return AugmentPolicy("none", 4, dataset not in DIGIT_DATASETS, magnitude, 16 if dataset == "digits" else 255)
    if dataset == "digits":
        # A ±30°, 20%-shift warp of an 8×8 glyph leaves little of it: DHRNet-small reached 63% clean
        # training accuracy after 20 epochs with it on digits split 0, 100% without (measured 2026-11-23).
        return None
    return AugmentPolicy("jitter_affine", 0, dataset not in DIGIT_DATASETS, magnitude, 255)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device (a CPU generator cannot feed CUDA kernels), then move.
    dev = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=dev)
    return (low + (high - low) * u).to(device)


def _randint(n: int, high: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=dev).to(device)


def contrast_brightness(x: torch.Tensor, max_value: int, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """Per image: contrast factor U[0.5, 1.5] around the image mean, then brightness U[-0.5, 0.5] * max_value,
    clipped to [0, max_value] and rounded (difair.md §9.2)."""
    b = x.shape[0]
    xf = x.float()
    mean = xf.mean(dim=(1, 2, 3), keepdim=True)
    f = _uniform(b, 0.5, 1.5, generator, x.device).view(b, 1, 1, 1)
    shift = _uniform(b, -0.5, 0.5, generator, x.device).view(b, 1, 1, 1) * max_value
    out = (xf - mean) * f + mean + shift
    return out.clamp_(0, max_value).round_().to(x.dtype)


def randaugment(x: torch.Tensor, magnitude: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision.transforms.v2.RandAugment(num_ops=1, magnitude), one draw per RANDAUGMENT_CHUNK images."""
    from torchvision.transforms import v2

    op = v2.RandAugment(num_ops=1, magnitude=magnitude)
    if generator is None:
        return torch.cat([op(c) for c in x.split(RANDAUGMENT_CHUNK)]) if x.shape[0] else x.clone()
    # torchvision draws from the global CPU generator; reseed a forked copy of it from ``generator`` so the
    # result is reproducible and the caller's global RNG stream is left untouched.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return torch.cat([op(c) for c in x.split(RANDAUGMENT_CHUNK)]) if x.shape[0] else x.clone()


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """Float (B, 3, H, W) RGB -> HSV with H in [0, 1) (fraction of the hue circle), S in [0, 1] and V = the
    max channel, in the input's own units (any non-negative scale: H and S do not depend on it)."""
    r, g, b = rgb.unbind(dim=1)
    v, top = rgb.max(dim=1)
    chroma = v - rgb.min(dim=1).values
    # v == 0 implies chroma == 0, so the clamp only avoids 0/0 there.
    s = chroma / v.clamp_min(torch.finfo(rgb.dtype).tiny)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # Sector position in 0..6 measured from red, computed from whichever channel is the maximum. When two
    # channels tie for the maximum both formulas agree, so the index ``max`` picks does not matter.
    sectors = torch.stack([torch.remainder((g - b) / safe, 6.0), (b - r) / safe + 2.0, (r - g) / safe + 4.0], dim=1)
    h = sectors.gather(1, top.unsqueeze(1)).squeeze(1) / 6.0
    h = torch.where(chroma > 0, torch.remainder(h, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hsv`` (any real H: it is taken modulo 1)."""
    h, s, v = (t.unsqueeze(1) for t in hsv.unbind(dim=1))
    # Channel c's distance below V, as a fraction of the chroma V*S, is a trapezoid in the hue: with
    # k = (n_c + 6H) mod 6 and n = 5, 3, 1 for R, G, B it is clamp(min(k, 4 - k), 0, 1).
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v * (1.0 - s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, hue: torch.Tensor | None, max_value: int
                 ) -> torch.Tensor:
    """Per image: multiply by ``brightness`` (B,) and clip to [0, max_value]; then, when ``hue`` (B,) is given
    and the images have 3 channels, rotate the hue by that fraction of the circle (V and S are kept).
    Returns float32, unrounded."""
    b = x.shape[0]
    out = (x.float() * brightness.to(device=x.device, dtype=torch.float32).view(b, 1, 1, 1)).clamp_(0, max_value)
    if hue is not None and x.shape[1] == 3:
        hsv = rgb_to_hsv(out)
        shift = hue.to(device=x.device, dtype=torch.float32).view(b, 1, 1)
        hsv = torch.stack([hsv[:, 0] + shift, hsv[:, 1], hsv[:, 2]], dim=1)
        out = hsv_to_rgb(hsv).clamp_(0, max_value)
    return out


def affine(x: torch.Tensor, angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-image affine warp about the image centre, nearest sampling, zero fill; same dtype out (integer
    inputs are copied exactly, since nearest sampling never blends).

    ``angle`` (B,) in degrees, positive = counter-clockwise as displayed (row 0 at the top), the convention of
    torchvision and of ``torch.rot90(x, 1, dims=(-2, -1))``; ``translate`` (B, 2) = (dx, dy) in pixels,
    positive = right/down; ``scale`` (B,), < 1 shrinks. As in torchvision the image is rotated and scaled
    about its centre first and then translated: output point p = scale * R(angle) q + t for input point q.
    """
    b, _, h, w = x.shape
    if b == 0:
        return x.clone()
    dev = x.device
    rad = torch.deg2rad(angle.to(device=dev, dtype=torch.float64))
    cos, sin = torch.cos(rad), torch.sin(rad)
    k = scale.to(device=dev, dtype=torch.float64)
    t = translate.to(device=dev, dtype=torch.float64)
    # affine_grid maps output to input points in normalised coordinates (align_corners=False), which are
    # centred pixel coordinates divided by (W/2, H/2). In centred pixel coordinates (y down) the inverse map is
    # q = R^T (p - t) / scale with R^T = [[cos, -sin], [sin, cos]]; conjugating by diag(W/2, H/2) gives theta.
    theta = torch.stack([
        torch.stack([cos / k, -sin * (h / w) / k, -(cos * t[:, 0] - sin * t[:, 1]) * (2 / w) / k], dim=1),
        torch.stack([sin * (w / h) / k, cos / k, -(sin * t[:, 0] + cos * t[:, 1]) * (2 / h) / k], dim=1),
    ], dim=1).float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out if x.is_floating_point() else out.round_().to(x.dtype)


def jitter_affine(x: torch.Tensor, max_value: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The CROSR reference photometric + geometric augmentation (crosr_openmax.md §4), per image:
    brightness U[0.5, 1.5] (clipped to [0, max_value]); hue shift U[-0.3, 0.3] of the circle for 3-channel
    images only; then rotation U[-30, 30] degrees, translation U[-0.2, 0.2] * (W, H) rounded to whole pixels
    (as torchvision), scale U[0.75, 1.0]. Rounded back to uint8 in [0, max_value]."""
    b, c, h, w = x.shape
    if b == 0:
        return x.clone()
    dev = x.device
    brightness = _uniform(b, 1 - JITTER_BRIGHTNESS, 1 + JITTER_BRIGHTNESS, generator, dev)
    hue = _uniform(b, -JITTER_HUE, JITTER_HUE, generator, dev) if c == 3 else None
    angle = _uniform(b, -AFFINE_DEGREES, AFFINE_DEGREES, generator, dev)
    translate = torch.stack([_uniform(b, -AFFINE_TRANSLATE * w, AFFINE_TRANSLATE * w, generator, dev),
                             _uniform(b, -AFFINE_TRANSLATE * h, AFFINE_TRANSLATE * h, generator, dev)],
                            dim=1).round_()
    scale = _uniform(b, *AFFINE_SCALE, generator, dev)
    out = affine(color_jitter(x, brightness, hue, max_value), angle, translate, scale)
    return out.round_().clamp_(0, max_value).to(x.dtype)


def crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop each image back to its size from its zero-padded version; ``offsets`` (B, 2) holds the (row, col)
    of each crop's top-left corner in the padded image, each in 0..2*padding."""
    b, c, h, w = x.shape
    if padding == 0:
        return x.clone()
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(device=x.device, dtype=torch.long)
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # Advanced indices split by a slice put their broadcast dims first: the result is (B, H, W, C).
    out = padded[batch, :, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop (one offset per image, no loop over images) from a zero-padded image."""
    if padding == 0:
        return x.clone()
    b = x.shape[0]
    offsets = torch.stack([_randint(b, 2 * padding + 1, generator, x.device) for _ in range(2)], dim=1)
    return crop(x, padding, offsets)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2, independently."""
    mask = _uniform(x.shape[0], 0.0, 1.0, generator, x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def augment(x: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation of a uint8 batch (B, C, H, W) on any device; same dtype, shape and device out."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"augment expects a uint8 (B, C, H, W) tensor, got {x.dtype} with shape {tuple(x.shape)}")
    if policy.kind == "contrast_brightness":
        x = contrast_brightness(x, policy.max_value, generator)
    elif policy.kind == "randaugment":
        x = randaugment(x, policy.magnitude, generator)
    elif policy.kind == "jitter_affine":
        x = jitter_affine(x, policy.max_value, generator)
    x = random_crop(x, policy.crop_padding, generator)
    if policy.flip:
        x = random_flip(x, generator)
    return x


def resize(x: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W) to (N, C, size, size), rounded and clamped back to uint8.

    Used once at load time (MNIST 28 -> 32 for VGG32); chunked so a whole dataset fits in memory.
    """
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"resize expects a uint8 (N, C, H, W) tensor, got {x.dtype} with shape {tuple(x.shape)}")
    if x.shape[-2:] == (size, size):
        return x.clone()
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = F.interpolate(x[start:start + chunk].float(), size=(size, size), mode="bilinear",
                             align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


@dataclass(frozen=True)
class Normalizer:
    """float32 (x / max_value - mean) / std per channel (difair.md §4 steps 1-2)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_value: int

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        c = len(self.mean)
        if x_uint8.dim() != 4 or x_uint8.shape[1] != c:
            raise ValueError(f"expected (B, {c}, H, W), got shape {tuple(x_uint8.shape)}")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x_uint8.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x_uint8.device).view(1, c, 1, 1)
        return (x_uint8.float() / self.max_value - mean) / std


def unit_scaler(channels: int, max_value: int) -> Normalizer:
    """x / max_value, no standardisation: images in [0, 1]."""
    return Normalizer((0.0,) * channels, (1.0,) * channels, max_value)


def fit_normalizer(x_uint8: torch.Tensor, max_value: int) -> Normalizer:
    """Per-channel population mean/std of x / max_value over the given images (difair.md §9.3: pass the
    training images actually used, i.e. the split's known-class training partition)."""
    if x_uint8.dim() != 4 or x_uint8.shape[0] == 0:
        raise ValueError(f"fit_normalizer needs a non-empty (N, C, H, W) tensor, got shape {tuple(x_uint8.shape)}")
    if x_uint8.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
        raise ValueError(f"fit_normalizer expects integer images, got {x_uint8.dtype}")
    c = x_uint8.shape[1]
    # Integer sums are exact (255**2 * 1e5 images * 4096 px stays far below 2**63), so the statistics do
    # not depend on summation order or device.
    s = torch.zeros(c, dtype=torch.int64, device=x_uint8.device)
    ss = torch.zeros(c, dtype=torch.int64, device=x_uint8.device)
    for part in x_uint8.split(4096):
        v = part.to(torch.int64).transpose(0, 1).reshape(c, -1)
        s += v.sum(dim=1)
        ss += (v * v).sum(dim=1)
    n = x_uint8.numel() // c
    means, stds = [], []
    for total, squares in zip(s.tolist(), ss.tolist(), strict=True):
        var = (n * squares - total * total) / (n * n)  # exact in Python integers until the division
        means.append(total / n / max_value)
        # A constant channel would divide by zero; leaving it unscaled keeps the input finite.
        stds.append(var ** 0.5 / max_value if var > 0 else 1.0)
    return Normalizer(tuple(means), tuple(stds), max_value)
