"""Two augmented views per image for contrastive learning (contrastive_disentangling.md §4), batched on
the images' device: RandomResizedCrop -> horizontal flip -> colour jitter (p 0.8) -> grayscale (p 0.2)
-> optional Gaussian blur (p 0.5). Inputs and outputs are float images in [0, 1].

The operations follow torchvision's definitions (crop sampling, jitter factors, the ITU-R 601-2 grey
weights, the blur kernel) but draw per image in one batched pass. One difference: torchvision applies the
four jitter operations in a fresh random order per image; here one random order is drawn per batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data.augment import DIGIT_DATASETS, _uniform, hsv_to_rgb, random_flip, rgb_to_hsv

GREY_WEIGHTS = (0.2989, 0.587, 0.114)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10  # torchvision's attempts before it falls back to the whole (centre) image
JITTER_P = 0.8
GREYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_KERNEL = 23
BLUR_SIGMA = (0.1, 2.0)
# §4: colour strength s 0.5 for CIFAR and Tiny-ImageNet, 1.0 (torchvision SimCLR default) otherwise. The
# digit datasets are our DECISION (the spec leaves MNIST and SVHN open): 0.5, like the 32-px sets.
COLOR_STRENGTH = {"cifar10": 0.5, "cifar+10": 0.5, "cifar+50": 0.5, "cifar100_20": 0.5, "tiny_imagenet": 0.5,
                  "mnist": 0.5, "svhn": 0.5, "digits": 0.5}


@dataclass(frozen=True)
class ViewPolicy:
    """What one view's pipeline does: output side ``size``, crop area range, flips, colour strength
    (0 = no jitter), which jitter operations, grayscale and blur."""

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    strength: float = 1.0
    hue_saturation: bool = True  # saturation and hue jitter (RGB images only)
    greyscale: bool = True
    blur: bool = False

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.size < 1 or self.strength < 0:
            raise ValueError(f"size must be >= 1 and strength >= 0, got {self.size}, {self.strength}")


def view_policy(dataset: str, channels: int, size: int, crop_scale_min: float = 0.08, blur: bool = False
                ) -> ViewPolicy:
    """§4 per dataset. Digit datasets (DECISION for digits, extended to MNIST and SVHN): no flip; the digits
    set and grey-scale images also jitter brightness and contrast only and are never made grey."""
    rgb = channels == 3
    digit = dataset in DIGIT_DATASETS
    colourful = rgb and dataset != "digits"
    return ViewPolicy(size=size, crop_scale=(crop_scale_min, 1.0), flip=not digit,
                      strength=COLOR_STRENGTH.get(dataset, 1.0), hue_saturation=colourful, greyscale=colourful,
                      blur=blur)


def crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], generator: torch.Generator | None,
               device: torch.device) -> torch.Tensor:
    """RandomResizedCrop boxes (B, 4) as (top, left, height, width) in pixels: area fraction ~ U(scale),
    log aspect ratio ~ U(log 3/4, log 4/3), the first of CROP_TRIES draws that fits; the whole image if none
    does (torchvision's fallback for a square image)."""
    area = h * w
    target = area * _uniform(b * CROP_TRIES, scale[0], scale[1], generator, device).view(b, CROP_TRIES)
    log_ratio = _uniform(b * CROP_TRIES, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator, device)
    ratio = torch.exp(log_ratio).view(b, CROP_TRIES)
    cw = torch.sqrt(target * ratio).round()
    ch = torch.sqrt(target / ratio).round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), torch.full((b,), -1, dtype=torch.long, device=device))
    pick = first.clamp_min(0).unsqueeze(1)
    cw = torch.where(first >= 0, cw.gather(1, pick).squeeze(1), torch.full((b,), float(w), device=device))
    ch = torch.where(first >= 0, ch.gather(1, pick).squeeze(1), torch.full((b,), float(h), device=device))
    # torchvision: top ~ randint(0, h - ch + 1), left ~ randint(0, w - cw + 1)
    top = torch.floor(_uniform(b, 0.0, 1.0, generator, device) * (h - ch + 1))
    left = torch.floor(_uniform(b, 0.0, 1.0, generator, device) * (w - cw + 1))
    return torch.stack([top, left, ch, cw], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box resampled bilinearly to ``size`` × ``size`` (pixel centres aligned as in
    torchvision's resize, align_corners False)."""
    b, _, h, w = x.shape
    top, left, ch, cw = boxes.to(torch.float32).unbind(dim=1)
    # Normalised [-1, 1] coordinates of the box's outer edges; affine_grid maps the output onto them.
    sx, sy = cw / w, ch / h
    cx = (2 * left + cw) / w - 1
    cy = (2 * top + ch) / h - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, cx], dim=1), torch.stack([zero, sy, cy], dim=1)], dim=1)
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of RGB images (torchvision rgb_to_grayscale); grey images pass through."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp_(0, 1)


def color_jitter(x: torch.Tensor, strength: float, hue_saturation: bool, generator: torch.Generator | None
                 ) -> torch.Tensor:
    """ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) on every image: brightness, contrast (around the mean grey
    level), saturation (towards the per-pixel grey), hue rotation; factors drawn per image, the order
    once per batch. Saturation and hue only where ``hue_saturation``."""
    b, dev = x.shape[0], x.device
    s = 0.8 * strength
    ops = ["brightness", "contrast"] + (["saturation", "hue"] if hue_saturation and x.shape[1] == 3 else [])
    order = torch.randperm(len(ops), generator=generator, device=generator.device if generator else "cpu")
    for i in order.tolist():
        op = ops[i]
        if op == "hue":
            shift = _uniform(b, -0.2 * strength, 0.2 * strength, generator, dev).view(b, 1, 1)
            hsv = rgb_to_hsv(x)
            x = hsv_to_rgb(torch.stack([hsv[:, 0] + shift, hsv[:, 1], hsv[:, 2]], dim=1)).clamp_(0, 1)
            continue
        factor = _uniform(b, max(0.0, 1 - s), 1 + s, generator, dev)
        if op == "brightness":
            x = _blend(x, torch.zeros_like(x), factor)
        elif op == "contrast":
            x = _blend(x, grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factor)
        else:
            x = _blend(x, grey(x).expand_as(x), factor)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int = BLUR_KERNEL) -> torch.Tensor:
    """Separable Gaussian blur, one σ per image, reflect padding (torchvision GaussianBlur)."""
    b, c, h, w = x.shape
    half = (kernel - 1) / 2
    pos = torch.linspace(-half, half, kernel, device=x.device)
    k = torch.exp(-0.5 * (pos.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, kernel)
    pad = kernel // 2
    flat = x.reshape(1, b * c, h, w)
    # Reflect padding needs pad < side; smaller images are padded by replication instead.
    mode = "reflect" if pad < min(h, w) else "replicate"
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode=mode), k.view(b * c, 1, 1, kernel), groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode=mode), k.view(b * c, 1, kernel, 1), groups=b * c)
    return flat.view(b, c, h, w)


def make_view(x: torch.Tensor, policy: ViewPolicy, generator: torch.Generator | None = None) -> torch.Tensor:
    """One augmented view of a float batch (B, C, H, W) in [0, 1]: (B, C, size, size) in [0, 1]."""
    if not x.is_floating_point() or x.dim() != 4:
        raise ValueError(f"make_view expects a float (B, C, H, W) tensor in [0, 1], got {x.dtype} {tuple(x.shape)}")
    b, _, h, w = x.shape
    dev = x.device
    out = resized_crop(x, crop_boxes(b, h, w, policy.crop_scale, generator, dev), policy.size)
    if policy.flip:
        out = random_flip(out, generator)
    if policy.strength > 0:
        jittered = color_jitter(out, policy.strength, policy.hue_saturation, generator)
        out = torch.where((_uniform(b, 0, 1, generator, dev) < JITTER_P).view(b, 1, 1, 1), jittered, out)
    if policy.greyscale and out.shape[1] == 3:
        out = torch.where((_uniform(b, 0, 1, generator, dev) < GREYSCALE_P).view(b, 1, 1, 1),
                          grey(out).expand_as(out), out)
    if policy.blur:
        sigma = _uniform(b, *BLUR_SIGMA, generator, dev)
        out = torch.where((_uniform(b, 0, 1, generator, dev) < BLUR_P).view(b, 1, 1, 1),
                          gaussian_blur(out, sigma), out)
    return out.contiguous()


def two_views(x: torch.Tensor, policy: ViewPolicy, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent draws of ``make_view`` of the same images."""
    return make_view(x, policy, generator), make_view(x, policy, generator)
