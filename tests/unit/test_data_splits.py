"""Class splits, stored split files, keyed-hash selections (protocol.md §2-§7)."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest
import torch
from repo_paths import MNIST_ROOT, SHARED

from data import DATASETS, ImagePool, make_split, split_ids, to_training_labels
from data.keyed_hash import (
    balance,
    hash_order,
    key_of,
    keyed_hash,
    splitmix64,
    splitmix64_int,
    stratified_holdout,
)
from data.make_digits_splits import dumps, generate
from data.pools import DIGITS_SPLITS_FILE
from data.splitting import STANDARD_SPLITS_FILE, digits_splits, standard_splits

PROTOCOL = SHARED / "specs/protocol.md"


# --- stored files -------------------------------------------------------------------------------------------

def test_standard_json_equals_protocol_block() -> None:
    if not PROTOCOL.exists():
        pytest.skip(f"{PROTOCOL} not present")
    block = re.search(r"```json\n(.*?)```", PROTOCOL.read_text(encoding="utf-8"), re.S)
    assert block is not None
    spec = json.loads(block.group(1))
    stored = json.loads(STANDARD_SPLITS_FILE.read_text(encoding="utf-8"))
    assert stored == spec
    assert list(stored) == list(spec)


def test_standard_json_facts() -> None:
    s = standard_splits()
    for i in range(5):
        assert s["cifar+10"][i]["unknown_cifar100"] == s["cifar+50"][i]["unknown_cifar100"][-10:]
        for name in ("mnist", "svhn", "cifar10"):
            e = s[name][i]
            assert sorted(e["known"] + e["unknown"]) == list(range(10))
        assert len(set(s["tiny_imagenet"][i]["known"])) == 20


def test_digits_json_regenerates_byte_for_byte() -> None:
    assert DIGITS_SPLITS_FILE.read_text(encoding="utf-8") == dumps(generate())


def test_digits_class_splits() -> None:
    d = digits_splits()
    assert [e["split"] for e in d["digits"]] == [0, 1, 2, 3, 4]
    known_sets = set()
    for e in d["digits"]:
        assert len(e["known"]) == 6 and len(e["unknown"]) == 4
        assert sorted(e["known"] + e["unknown"]) == list(range(10))
        known_sets.add(frozenset(e["known"]))
    assert len(known_sets) == 5
    assert d["digits"][0]["known"] == [6, 2, 1, 3, 8, 0]  # pinned: a change here changes every digits result


def test_digits_partition_is_stratified_thirds() -> None:
    from sklearn.datasets import load_digits

    y = load_digits().target
    part = digits_splits()["partition"]
    train, test = np.array(part["train"]), np.array(part["test"])
    assert len(train) + len(test) == 1797 and len(test) == 599
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    assert list(train) == sorted(train) and list(test) == sorted(test)
    for c in range(10):
        n = int((y == c).sum())
        assert int((y[test] == c).sum()) == round(n / 3)


# --- keyed hash ---------------------------------------------------------------------------------------------

def test_splitmix64_pinned_values() -> None:
    # splitmix64 seeded with 0 yields 0xE220A8397B1DCDAF first (Vigna's reference generator).
    assert splitmix64_int(0) == 0xE220A8397B1DCDAF
    assert zlib.crc32(b"mnist/0/val") == 851826910
    assert key_of("mnist/0/val") == splitmix64_int(851826910) == 0x8604BAA5BB53AF08
    assert [int(v) for v in keyed_hash(np.arange(3), "mnist/0/val")] == [
        0x97954BAA7167C71E, 0x97321DE018F3EDD0, 0x620276F29DF5ADA5]
    assert list(hash_order(np.arange(10), "digits/0/classes")) == [6, 2, 1, 3, 8, 0, 7, 4, 9, 5]


def test_vectorised_hash_matches_reference() -> None:
    z = np.array([0, 1, 2**32 + 7, 2**63 + 12345, 2**64 - 1], dtype=np.uint64)
    assert [int(v) for v in splitmix64(z)] == [splitmix64_int(int(v)) for v in z]


def test_stratified_holdout() -> None:
    labels = np.repeat(np.arange(4), [10, 23, 7, 51])
    idx = np.arange(labels.size) * 3 + 5  # arbitrary, non-contiguous indices
    kept, held = stratified_holdout(idx, labels, "t/val", 1, 5)
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), idx)
    held_labels = labels[np.searchsorted(idx, held)]
    assert [int((held_labels == c).sum()) for c in range(4)] == [2, 5, 1, 10]  # round(n/5) per class
    again = stratified_holdout(idx, labels, "t/val", 1, 5)
    assert np.array_equal(again[1], held)
    other = stratified_holdout(idx, labels, "t2/val", 1, 5)
    assert not np.array_equal(other[1], held)


def test_balance_without_replacement() -> None:
    k, u = balance(np.arange(100), np.arange(100, 130), "b")
    assert k.size == u.size == 30
    assert np.array_equal(u, np.arange(100, 130))
    assert np.unique(k).size == 30 and np.isin(k, np.arange(100)).all()
    k2, u2 = balance(np.arange(5), np.arange(100, 130), "b")
    assert np.array_equal(k2, np.arange(5)) and u2.size == 5


# --- make_split on synthetic pools --------------------------------------------------------------------------

def _pool(name: str, train_y: np.ndarray, test_y: np.ndarray, class_names: tuple[str, ...],
          wnids_txt: tuple[str, ...] = ()) -> ImagePool:
    def imgs(n: int) -> torch.Tensor:
        return torch.zeros((n, 1, 1, 1), dtype=torch.uint8)
    return ImagePool(name, imgs(len(train_y)), torch.as_tensor(train_y), imgs(len(test_y)),
                     torch.as_tensor(test_y), 255, class_names, wnids_txt)


def _check_split_invariants(pool: ImagePool, s) -> None:
    ty, vy = pool.train_y.numpy(), pool.test_y.numpy()
    for arr in (s.train, s.train_full, s.val_known, s.val_unknown, s.test_known, s.test_unknown,
                s.test_known_full):
        assert arr.dtype == np.int64 and np.array_equal(arr, np.unique(arr))
    assert set(s.known).isdisjoint(s.unknown)
    assert np.isin(ty[s.train_full], s.known).all()
    assert np.isin(ty, s.known).sum() == s.train_full.size
    assert np.isin(s.train, s.train_full).all() and np.isin(s.val_known, s.train_full).all()
    assert np.intersect1d(s.train, s.val_known).size == 0
    assert np.isin(ty[s.val_unknown], s.unknown).all()
    assert s.val_known.size == s.val_unknown.size
    assert np.isin(vy[s.test_known_full], s.known).all() and np.isin(s.test_known, s.test_known_full).all()
    assert np.isin(vy[s.test_unknown], s.unknown).all()
    assert s.test_known.size == s.test_unknown.size
    assert s.test_known.size == min(s.test_known_full.size, int(np.isin(vy, s.unknown).sum()))
    # the validation hold-out is 20% per known class (stratified)
    held = np.setdiff1d(s.train_full, s.train)
    for c in s.known:
        n = int((ty[s.train_full] == c).sum())
        assert int((ty[held] == c).sum()) == (2 * n + 5) // 10


def test_make_split_mnist_like() -> None:
    rng = np.random.default_rng(0)
    pool = _pool("mnist", rng.integers(0, 10, 3000), rng.integers(0, 10, 800), tuple(map(str, range(10))))
    s = make_split(pool, 0)
    assert s.known == (2, 4, 5, 9, 8, 3) and s.unknown == (0, 1, 6, 7)
    assert s.convention == {"cifar_plus_known": None, "tin_index": None}
    _check_split_invariants(pool, s)
    again = make_split(pool, 0)
    assert all(np.array_equal(getattr(s, f), getattr(again, f)) for f in ("train", "val_known", "test_known"))
    assert not np.array_equal(make_split(pool, 1).val_unknown, s.val_unknown)


def test_make_split_cifar_plus() -> None:
    rng = np.random.default_rng(1)
    # pool layout: CIFAR-10 train then CIFAR-100 train (labels 10 + fine label)
    train_y = np.concatenate([rng.integers(0, 10, 2000), 10 + rng.integers(0, 100, 5000)])
    test_y = np.concatenate([rng.integers(0, 10, 1000), 10 + rng.integers(0, 100, 2000)])
    names = tuple(f"c10_{i}" for i in range(10)) + tuple(f"c100_{i}" for i in range(100))
    spec = standard_splits()
    for name in ("cifar+10", "cifar+50"):
        pool = _pool(name, train_y, test_y, names)
        s = make_split(pool, 0)
        assert s.known == (4, 7, 9, 1) and s.convention["cifar_plus_known"] == "arpl_vaze"
        assert s.unknown == tuple(10 + f for f in spec[name][0]["unknown_cifar100"])
        _check_split_invariants(pool, s)
        assert (s.val_unknown >= 2000).all()  # validation unknowns are CIFAR-100 *train* images
        assert (s.test_unknown >= 1000).all()
        d = make_split(pool, 0, cifar_plus_known="difair")
        assert d.known == (0, 1, 8, 9) and d.convention["cifar_plus_known"] == "difair"
        assert make_split(pool, 4).known == (1, 0, 9, 8)
    with pytest.raises(ValueError, match="cifar_plus_known"):
        make_split(pool, 0, cifar_plus_known="neal")


def test_make_split_tiny_imagenet_conventions() -> None:
    # wnids.txt of the real dataset starts n02124075, n04067472, n04540053 (protocol.md §4)
    wnids_txt = ("n02124075", "n04067472", "n04540053") + tuple(f"n0{i:07d}" for i in range(197))
    sorted_wnids = tuple(sorted(wnids_txt))
    pool = _pool("tiny_imagenet", np.repeat(np.arange(200), 10), np.repeat(np.arange(200), 3),
                 sorted_wnids, wnids_txt)
    spec_known = standard_splits()["tiny_imagenet"][0]["known"]
    s = make_split(pool, 0)
    assert s.known == tuple(spec_known) and len(s.unknown) == 180
    assert s.convention == {"cifar_plus_known": None, "tin_index": "sorted_wnids"}
    _check_split_invariants(pool, s)
    assert s.test_known.size == s.test_unknown.size == 60
    w = make_split(pool, 0, tin_index="wnids_txt")
    assert w.known == tuple(sorted_wnids.index(wnids_txt[i]) for i in spec_known)
    assert spec_known[18] == 1 and pool.class_names[w.known[18]] == "n04067472"  # index 1 = "reel"
    assert w.convention["tin_index"] == "wnids_txt"
    _check_split_invariants(pool, w)
    no_txt = _pool("tiny_imagenet", pool.train_y.numpy(), pool.test_y.numpy(), sorted_wnids)
    with pytest.raises(ValueError, match="wnids"):
        make_split(no_txt, 0, tin_index="wnids_txt")


def test_make_split_digits_uses_stored_lists() -> None:
    from data import load_pool

    pool = load_pool("digits", "/nonexistent-root")
    stored = digits_splits()
    for i in split_ids("digits"):
        s = make_split(pool, i)
        e = stored["indices"][i]
        assert list(s.known) == stored["digits"][i]["known"]
        for k in ("val_known", "val_unknown", "test_known", "test_unknown"):
            assert getattr(s, k).tolist() == e[k]
        assert np.array_equal(np.setdiff1d(s.train_full, s.train), e["val_holdout"])
        _check_split_invariants(pool, s)
    s0 = make_split(pool, 0)
    assert (s0.train_full.size, s0.train.size, s0.val_known.size, s0.test_known.size) == (717, 574, 143, 241)


def test_split_ids_and_bad_input() -> None:
    for name in DATASETS:
        if name == "cifar100_20":
            with pytest.raises(ValueError, match="clustering benchmark"):
                split_ids(name)
        else:
            assert split_ids(name) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cifar10"):
        split_ids("cifar11")
    pool = _pool("mnist", np.arange(10), np.arange(10), tuple(map(str, range(10))))
    with pytest.raises(ValueError, match="split"):
        make_split(pool, 5)


def test_to_training_labels() -> None:
    labels = torch.tensor([2, 4, 0, 9, 3, 7, 8, 5])
    out = to_training_labels(labels, (2, 4, 5, 9, 8, 3))
    assert out.tolist() == [0, 1, -1, 3, 5, -1, 4, 2]
    assert out.dtype == torch.int64
    assert to_training_labels(torch.tensor([3, 15]), (15, 3)).tolist() == [1, 0]
    assert to_training_labels(torch.tensor([], dtype=torch.int64), (1,)).shape == (0,)


# --- real MNIST ---------------------------------------------------------------------------------------------

@pytest.mark.mnist
def test_real_mnist_split_sizes() -> None:
    if not (MNIST_ROOT / "MNIST/raw/train-images-idx3-ubyte").exists():
        pytest.skip("real MNIST not present under /work/shared/datasets")
    from data import load_pool

    pool = load_pool("mnist", MNIST_ROOT)
    assert pool.train_x.shape == (60000, 1, 28, 28) and pool.test_x.shape == (10000, 1, 28, 28)
    assert pool.train_x.dtype == torch.uint8 and pool.max_value == 255
    assert int(pool.train_y[0]) == 5 and int(pool.test_y[0]) == 7
    s = make_split(pool, 0)
    assert s.known == (2, 4, 5, 9, 8, 3)
    _check_split_invariants(pool, s)
    # test unknowns are classes 0, 1, 6, 7 of MNIST test: 980 + 1135 + 958 + 1028
    assert s.test_unknown.size == s.test_known.size == 4101 and s.test_known_full.size == 5899
    assert s.train_full.size == 35152 and s.val_known.size == 7030 and s.train.size == 35152 - 7030
    assert s.val_unknown.size == 7030
