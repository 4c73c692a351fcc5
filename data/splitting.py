"""Known/unknown class splits and the index sets of protocol.md §2-§7."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from data.keyed_hash import balance, stratified_holdout
from data.pools import CLUSTERING_ONLY, DATASETS, DIGITS_SPLITS_FILE, SPLITS_DIR, ImagePool, _check_name

STANDARD_SPLITS_FILE = SPLITS_DIR / "standard.json"
NUM_SPLITS = 5
CIFAR_PLUS_KNOWN = ("arpl_vaze", "difair")
TIN_INDEX = ("sorted_wnids", "wnids_txt")
# CIFAR+N pools put CIFAR-100 fine label f at pool label 10 + f, after the 10 CIFAR-10 classes.
CIFAR100_OFFSET = 10
# protocol.md §7: 20% of each known class's training images are held out for validation.
VAL_FRACTION = (1, 5)


@dataclass(frozen=True, eq=False)
class Split:
    """One (dataset, split, convention): class lists and sorted int64 index arrays (do not modify them).

    ``train``, ``train_full``, ``val_known`` and ``val_unknown`` index ``pool.train_*``; the ``test_*``
    arrays index ``pool.test_*``. Training label k is the pool label ``known[k]``. In a whole-dataset
    split (ClustNet, clustering) every class is known: ``val_known`` is then the validation hold-out of
    all classes and ``unknown`` is empty.
    """

    dataset: str
    id: int  # the split's number (protocol.md §3), 0 for a whole-dataset split
    known: tuple[int, ...]
    unknown: tuple[int, ...]
    train: np.ndarray
    train_full: np.ndarray
    val_known: np.ndarray
    val_unknown: np.ndarray
    test_known: np.ndarray
    test_unknown: np.ndarray
    test_known_full: np.ndarray
    convention: dict = field(default_factory=dict)

    @property
    def num_known(self) -> int:
        return len(self.known)


def split_ids(name: str) -> list[int]:
    """The split ids of a dataset: five for every open-set dataset."""
    _check_name(name)
    if name in CLUSTERING_ONLY:
        raise ValueError(f"{name} has no open-set class splits: it is a clustering benchmark")
    return list(range(NUM_SPLITS))


@cache
def _stored(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def standard_splits() -> dict:
    """The exact JSON of protocol.md §2 (a fresh copy, so callers cannot corrupt the cache)."""
    return json.loads(json.dumps(_stored(str(STANDARD_SPLITS_FILE))))


def digits_splits() -> dict:
    """The stored digits splits, partition and index lists (see data/make_digits_splits.py)."""
    return json.loads(json.dumps(_stored(str(DIGITS_SPLITS_FILE))))


def _entry(entries: list[dict], split: int) -> dict:
    for e in entries:
        if e["split"] == split:
            return e
    raise ValueError(f"no split {split}")


def class_lists(
    pool: ImagePool, split: int, cifar_plus_known: str = "arpl_vaze", tin_index: str = "sorted_wnids"
) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(known, unknown, convention) in pool labels; known keeps the order of the spec's list."""
    name = pool.name
    _check_name(name)
    if split not in range(NUM_SPLITS):
        raise ValueError(f"split must be one of {list(range(NUM_SPLITS))}, got {split!r}")
    if cifar_plus_known not in CIFAR_PLUS_KNOWN:
        raise ValueError(f"cifar_plus_known must be one of {CIFAR_PLUS_KNOWN}, got {cifar_plus_known!r}")
    if tin_index not in TIN_INDEX:
        raise ValueError(f"tin_index must be one of {TIN_INDEX}, got {tin_index!r}")
    convention: dict = {"cifar_plus_known": None, "tin_index": None}
    if name == "digits":
        e = _entry(_stored(str(DIGITS_SPLITS_FILE))["digits"], split)
        return tuple(e["known"]), tuple(e["unknown"]), convention
    e = _entry(_stored(str(STANDARD_SPLITS_FILE))[name], split)
    if name in ("mnist", "svhn", "cifar10"):
        return tuple(e["known"]), tuple(e["unknown"]), convention
    if name in ("cifar+10", "cifar+50"):
        convention["cifar_plus_known"] = cifar_plus_known
        known = tuple(e[f"known_cifar10_{cifar_plus_known}"])
        return known, tuple(CIFAR100_OFFSET + f for f in e["unknown_cifar100"]), convention
    convention["tin_index"] = tin_index
    spec_known = e["known"]
    if tin_index == "wnids_txt":
        if not pool.wnids_txt:
            raise ValueError("tin_index='wnids_txt' needs the pool's wnids.txt order (pool.wnids_txt is empty)")
        label_of = {w: i for i, w in enumerate(pool.class_names)}
        known = tuple(label_of[pool.wnids_txt[i]] for i in spec_known)
    else:
        known = tuple(spec_known)
    unknown = tuple(sorted(set(range(len(pool.class_names))) - set(known)))
    return known, unknown, convention


def selection_key(dataset: str, split: int, convention: dict) -> str:
    """Prefix of the keyed-hash names for one (dataset, convention, split); see data/keyed_hash.py."""
    parts = [dataset] + [str(v) for k, v in sorted(convention.items()) if v is not None] + [str(split)]
    return "/".join(parts)


def select_indices(
    key: str, train_y: np.ndarray, test_y: np.ndarray, known: tuple[int, ...], unknown: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """The index sets of protocol.md §6-§7 as a pure function of the labels and ``key``.

    Validation: per known class the 20% smallest-hash training images (name ``key/val``); validation and
    test sets are balanced by keeping the smallest hashes of the larger side (``key/balance_val``,
    ``key/balance_test``).
    """
    train_y = np.asarray(train_y)
    test_y = np.asarray(test_y)
    known_train = np.flatnonzero(np.isin(train_y, known)).astype(np.int64)
    train, held_out = stratified_holdout(known_train, train_y[known_train], f"{key}/val", *VAL_FRACTION)
    unknown_train = np.flatnonzero(np.isin(train_y, unknown)).astype(np.int64)
    val_known, val_unknown = balance(held_out, unknown_train, f"{key}/balance_val")
    test_known_full = np.flatnonzero(np.isin(test_y, known)).astype(np.int64)
    test_unknown_all = np.flatnonzero(np.isin(test_y, unknown)).astype(np.int64)
    test_known, test_unknown = balance(test_known_full, test_unknown_all, f"{key}/balance_test")
    return {
        "train": train,
        "train_full": known_train,
        "val_holdout": held_out,
        "val_known": val_known,
        "val_unknown": val_unknown,
        "test_known": test_known,
        "test_unknown": test_unknown,
        "test_known_full": test_known_full,
    }


def _int64(a: np.ndarray | list[int]) -> np.ndarray:
    # Left writable on purpose: torch warns about read-only arrays it indexes with or wraps.
    return np.array(a, dtype=np.int64)


def make_split(
    pool: ImagePool, split: int, *, cifar_plus_known: str = "arpl_vaze", tin_index: str = "sorted_wnids"
) -> Split:
    """The class lists and index sets of ``split`` of ``pool`` (protocol.md §2-§7).

    digits reads every index list from data/splits/digits.json (the source of truth); the other datasets
    derive them from the labels with the keyed hash, which is what generated digits.json too.
    """
    known, unknown, convention = class_lists(pool, split, cifar_plus_known, tin_index)
    if pool.name == "digits":
        e = _entry(_stored(str(DIGITS_SPLITS_FILE))["indices"], split)
        train_y = pool.train_y.numpy()
        test_y = pool.test_y.numpy()
        train_full = np.flatnonzero(np.isin(train_y, known))
        sel = {
            "train": np.setdiff1d(train_full, e["val_holdout"]),
            "train_full": train_full,
            "val_known": e["val_known"],
            "val_unknown": e["val_unknown"],
            "test_known": e["test_known"],
            "test_unknown": e["test_unknown"],
            "test_known_full": np.flatnonzero(np.isin(test_y, known)),
        }
    else:
        key = selection_key(pool.name, split, convention)
        sel = select_indices(key, pool.train_y.numpy(), pool.test_y.numpy(), known, unknown)
    return Split(
        dataset=pool.name,
        id=split,
        known=tuple(int(k) for k in known),
        unknown=tuple(int(u) for u in unknown),
        train=_int64(sel["train"]),
        train_full=_int64(sel["train_full"]),
        val_known=_int64(sel["val_known"]),
        val_unknown=_int64(sel["val_unknown"]),
        test_known=_int64(sel["test_known"]),
        test_unknown=_int64(sel["test_unknown"]),
        test_known_full=_int64(sel["test_known_full"]),
        convention=convention,
    )


WHOLE_DATASET_SPLIT = 0


def whole_dataset_split(pool: ImagePool) -> Split:
    """Every class at once, for the tasks that have no known/unknown classes (ClustNet, clustering):
    ``train`` is the train split less a stratified 20% (keyed hash ``<dataset>/all/val``) held out as
    ``val_known``, ``test_known`` the whole test split; nothing is unknown. Its id is 0."""
    train_y, test_y = pool.train_y.numpy(), pool.test_y.numpy()
    classes = tuple(int(c) for c in np.unique(train_y))
    everything = np.arange(len(train_y), dtype=np.int64)
    train, held_out = stratified_holdout(everything, train_y, f"{pool.name}/all/val", *VAL_FRACTION)
    test = np.arange(len(test_y), dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    return Split(dataset=pool.name, id=WHOLE_DATASET_SPLIT, known=classes, unknown=(), train=_int64(train),
                 train_full=everything, val_known=_int64(held_out), val_unknown=empty, test_known=test,
                 test_unknown=empty, test_known_full=test, convention={"holdout": "stratified 20% of train"})


def transductive_split(pool: ImagePool) -> Split:
    """``whole_dataset_split`` whose training images are the whole train split, the validation hold-out
    included: an unsupervised method trains on images without labels and is judged by clustering some of
    them (contrastive_disentangling.md §6.2)."""
    whole = whole_dataset_split(pool)
    return dataclasses.replace(whole, train=whole.train_full,
                               convention={"holdout": "stratified 20% of train, also trained on without labels"})


def to_training_labels(pool_labels: torch.Tensor, known: tuple[int, ...]) -> torch.Tensor:
    """Map pool label ``known[k]`` to k and every other label to -1 (on the labels' device)."""
    labels = torch.as_tensor(pool_labels)
    if len(set(known)) != len(known) or any(k < 0 for k in known):
        raise ValueError(f"known must be distinct non-negative labels, got {known}")
    if labels.numel() == 0:
        return torch.zeros(labels.shape, dtype=torch.int64, device=labels.device)
    if int(labels.min()) < 0:
        raise ValueError("pool labels must be non-negative")
    size = max(int(labels.max()), max(known, default=-1)) + 1
    lut = torch.full((size,), -1, dtype=torch.int64, device=labels.device)
    if known:
        lut[torch.tensor(known, dtype=torch.int64, device=labels.device)] = torch.arange(
            len(known), dtype=torch.int64, device=labels.device)
    return lut[labels.long()]


__all__ = ["DATASETS", "WHOLE_DATASET_SPLIT", "Split", "class_lists", "digits_splits", "make_split", "select_indices",
           "selection_key", "split_ids", "standard_splits", "to_training_labels", "transductive_split",
           "whole_dataset_split"]
