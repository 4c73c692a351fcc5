"""The dataset as a trial holds it: shipped once per search through Ray's object store (``DataBundle``),
copied onto the trial's device once per worker (``on_device``)."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from data import ImagePool, Split
from data.augment import resize

# Evaluation batch per device type: on a CPU the activations of 1024 images overflow the caches and
# inference runs 1.3–1.6× slower than at 256 (bench/eval_batch.py); a GPU wants the large batch.
EVAL_BATCH = {"cpu": 256}
EVAL_BATCH_DEFAULT = 1024


def eval_batch_size(device: torch.device) -> int:
    return EVAL_BATCH.get(device.type, EVAL_BATCH_DEFAULT)


@dataclass(frozen=True)
class DataBundle:
    """What a search ships to its trials once, through Ray's object store: the dataset as uint8 numpy
    arrays (zero-copy out of the store) and the class splits of the experiment."""

    dataset: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    max_value: int
    splits: Mapping[int, Split]

    @classmethod
    def from_pool(cls, pool: ImagePool, splits: Mapping[int, Split]) -> DataBundle:
        return cls(
            dataset=pool.name,
            train_x=pool.train_x.numpy(),
            train_y=pool.train_y.numpy(),
            test_x=pool.test_x.numpy(),
            test_y=pool.test_y.numpy(),
            max_value=pool.max_value,
            splits=dict(splits),
        )

    @functools.cached_property
    def fingerprint(self) -> tuple:
        """What device copies of this bundle's arrays are copies of. A reused worker keeps them between
        trials of one search; a bundle of other contents but the same dataset and shapes (a relabelled
        copy) must not be handed them, so the contents count (CRC-32: 15–19 ms for MNIST, once per bundle; bench/RESULTS.md)."""
        arrays = (self.train_x, self.train_y, self.test_x, self.test_y)
        return (self.dataset, *(zlib.crc32(np.ascontiguousarray(a)) for a in arrays), tuple(sorted(self.splits)))


# With reuse_actors=True the same worker runs many trials: keep the dataset on the device between them.
_DEVICE_CACHE: dict[tuple, torch.Tensor] = {}


def on_device(bundle: DataBundle, part: str, device: torch.device, size: int) -> torch.Tensor:
    """``bundle``'s array ``part`` (train_x, train_y, test_x, test_y) on ``device``, images resized to
    ``size``; one copy per worker, freed when another bundle arrives."""
    key = (bundle.fingerprint, part, str(device), size)
    if key not in _DEVICE_CACHE:
        if any(k[0] != key[0] for k in _DEVICE_CACHE):  # another bundle: free the old one's copies
            _DEVICE_CACHE.clear()
        x = torch.from_numpy(np.array(getattr(bundle, part))).to(device)
        if part.endswith("_x") and x.shape[-1] != size:
            x = resize(x, size)
        _DEVICE_CACHE[key] = x
    return _DEVICE_CACHE[key]
