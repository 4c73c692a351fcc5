"""Deterministic "random" selections that are identical on every machine and numpy version.

The validation hold-out and the balanced subsamples of protocol.md §6/§7 must be the same everywhere,
but the labels of the torchvision datasets are not available when the code is written, so they cannot
be stored as index lists. Instead each selection is a pure function of (a text key, image index): every
image gets a 64-bit splitmix64 hash of ``index XOR key``, and "random" choices take the smallest hashes.
numpy's Generator streams are not guaranteed stable across releases (NEP 19); integer arithmetic is.

The same functions generate the stored digits splits (``data/make_digits_splits.py``), so there is one
mechanism for every dataset.
"""

from __future__ import annotations

import zlib

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def splitmix64_int(z: int) -> int:
    """Reference (pure Python) splitmix64 finaliser of one 64-bit integer; the vectorised one must agree."""
    z = (z + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK
    return z ^ (z >> 31)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 on uint64 (array arithmetic wraps modulo 2**64 without warnings)."""
    z = np.asarray(z, dtype=np.uint64) + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
    return z ^ (z >> np.uint64(31))


def key_of(name: str) -> int:
    """64-bit key of a selection name such as ``"mnist/0/val"``."""
    return splitmix64_int(zlib.crc32(name.encode("utf-8")))


def keyed_hash(indices: np.ndarray, name: str) -> np.ndarray:
    """uint64 hash of each index under the key ``name``."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and idx.min() < 0:
        raise ValueError("indices must be non-negative")
    return splitmix64(idx.astype(np.uint64) ^ np.uint64(key_of(name)))


def hash_order(indices: np.ndarray, name: str) -> np.ndarray:
    """``indices`` reordered by increasing hash; ties (never seen in practice) fall back to the index."""
    idx = np.asarray(indices, dtype=np.int64)
    order = np.lexsort((idx, keyed_hash(idx, name)))
    return idx[order]


def round_fraction(n: int, num: int, den: int) -> int:
    """round(n * num / den), halves rounded up, in exact integer arithmetic."""
    return (2 * n * num + den) // (2 * den)


def stratified_holdout(
    indices: np.ndarray, labels: np.ndarray, name: str, num: int, den: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held_out): per class, the round(num/den) smallest-hash images are held out.

    ``labels[i]`` is the class of ``indices[i]``. Both outputs are sorted.
    """
    idx = np.asarray(indices, dtype=np.int64)
    lab = np.asarray(labels)
    if idx.shape != lab.shape:
        raise ValueError("indices and labels must have the same shape")
    held = []
    for c in np.unique(lab):
        members = idx[lab == c]
        held.append(hash_order(members, name)[: round_fraction(members.size, num, den)])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    kept = np.setdiff1d(idx, held_out)
    return kept.astype(np.int64), held_out.astype(np.int64)


def balance(known: np.ndarray, unknown: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """protocol.md §6: subsample the larger set without replacement to the size of the smaller.

    The subsample keeps the smallest-hash images of the larger set; the smaller set is returned whole.
    Both outputs are sorted.
    """
    k = np.sort(np.asarray(known, dtype=np.int64))
    u = np.sort(np.asarray(unknown, dtype=np.int64))
    n = min(k.size, u.size)
    if k.size > n:
        k = np.sort(hash_order(k, name)[:n])
    if u.size > n:
        u = np.sort(hash_order(u, name)[:n])
    return k, u
