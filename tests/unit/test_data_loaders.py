"""load_pool on tiny files written in the real on-disk formats; missing-data errors. No network."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from repo_paths import MNIST_ROOT

from data import DataMissingError, check_available, default_data_root, load_pool, make_split


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    # one row per image: 1024 red, then 1024 green, then 1024 blue values (the CIFAR python format)
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_cifar10(root: Path) -> dict[str, np.ndarray]:
    base = root / "cifar-10-batches-py"
    rows = {}
    for i in range(1, 6):
        rows[f"data_batch_{i}"] = _cifar_rows(4, i)
        _write_pickle(base / f"data_batch_{i}", {"data": rows[f"data_batch_{i}"], "labels": [i, 0, 9, i + 1]})
    rows["test_batch"] = _cifar_rows(5, 10)
    _write_pickle(base / "test_batch", {"data": rows["test_batch"], "labels": [3, 1, 4, 1, 5]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(base / "batches.meta", {"label_names": names})
    return rows


def _write_cifar100(root: Path) -> dict[str, np.ndarray]:
    base = root / "cifar-100-python"
    rows = {"train": _cifar_rows(6, 20), "test": _cifar_rows(3, 21)}
    _write_pickle(base / "train", {"data": rows["train"], "fine_labels": [0, 99, 30, 25, 1, 30],
                                   "coarse_labels": [0] * 6})
    _write_pickle(base / "test", {"data": rows["test"], "fine_labels": [30, 2, 71], "coarse_labels": [0] * 3})
    _write_pickle(base / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                  "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return rows


def _trust_fake_cifar(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Point torchvision's MD5 tables at the fake files, so its real integrity check runs and passes.

    Only the expected checksums change, and only inside the test: production code and torchvision's
    check itself are untouched.
    """
    for cls in (tvd.CIFAR10, tvd.CIFAR100):
        base = root / cls.base_folder
        if not base.exists():
            continue
        monkeypatch.setattr(cls, "train_list", [[f, _md5(base / f)] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, _md5(base / f)] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(base / cls.meta["filename"])})


def test_cifar10_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _write_cifar10(tmp_path)
    _trust_fake_cifar(monkeypatch, tmp_path)
    pool = load_pool("cifar10", tmp_path)
    assert pool.train_x.shape == (20, 3, 32, 32) and pool.test_x.shape == (5, 3, 32, 32)
    assert pool.train_x.dtype == torch.uint8 and pool.train_y.dtype == torch.int64
    assert pool.train_y[:4].tolist() == [1, 0, 9, 2] and pool.test_y.tolist() == [3, 1, 4, 1, 5]
    assert np.array_equal(pool.train_x[4].numpy(), rows["data_batch_2"][0].reshape(3, 32, 32))
    assert np.array_equal(pool.test_x[2].numpy(), rows["test_batch"][2].reshape(3, 32, 32))
    assert pool.class_names[0] == "airplane" and pool.max_value == 255


def test_cifar_plus_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar10(tmp_path)
    rows100 = _write_cifar100(tmp_path)
    _trust_fake_cifar(monkeypatch, tmp_path)
    pool = load_pool("cifar+10", tmp_path)
    assert pool.name == "cifar+10"
    assert pool.train_x.shape == (26, 3, 32, 32) and pool.test_x.shape == (8, 3, 32, 32)
    assert pool.train_y[20:].tolist() == [10, 109, 40, 35, 11, 40]  # CIFAR-100 fine label + 10
    assert pool.test_y[5:].tolist() == [40, 12, 81]
    assert np.array_equal(pool.train_x[21].numpy(), rows100["train"][1].reshape(3, 32, 32))
    assert len(pool.class_names) == 110 and pool.class_names[10] == "fine0"
    s = make_split(pool, 0)  # unknown_cifar100 of split 0 holds 0, 1, 25, 30 and 71 but not 2 or 99
    assert s.known == (4, 7, 9, 1)
    assert s.val_known.size == s.val_unknown.size == 1 and (s.val_unknown >= 20).all()
    assert set(pool.train_y[s.val_unknown].tolist()) <= {10, 11, 35, 40}
    assert pool.test_y[s.test_known_full].tolist() == [1, 4, 1]
    assert set(pool.test_y[s.test_unknown].tolist()) == {40, 81}


def test_cifar_corrupt_files_are_a_data_error(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)  # real torchvision MD5 tables: the fake files fail the integrity check
    with pytest.raises(DataMissingError) as err:
        load_pool("cifar10", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--download" in msg and "corrupted" in msg


def test_svhn_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    xs, md5s = {}, {}
    for split, labels in (("train", [10, 1, 5, 10]), ("test", [3, 10, 9])):
        x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)  # the .mat layout: H, W, C, N
        fname = f"{split}_32x32.mat"
        savemat(tmp_path / fname, {"X": x, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)})
        xs[split], md5s[split] = x, _md5(tmp_path / fname)
    table = {k: [v[0], v[1], md5s.get(k, v[2])] for k, v in tvd.SVHN.split_list.items()}
    monkeypatch.setattr(tvd.SVHN, "split_list", table)  # expected MD5s of the fake files, test only
    pool = load_pool("svhn", tmp_path)
    assert pool.train_x.shape == (4, 3, 32, 32) and pool.test_x.shape == (3, 3, 32, 32)
    assert pool.train_y.tolist() == [0, 1, 5, 0] and pool.test_y.tolist() == [3, 0, 9]  # label 10 is digit 0
    assert np.array_equal(pool.train_x[2].numpy(), xs["train"][..., 2].transpose(2, 0, 1))


def _write_jpeg(path: Path, img: torch.Tensor) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = img.numpy()
    Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).save(path, quality=95)


def _write_tiny_imagenet(root: Path) -> tuple[str, ...]:
    base = root / "tiny-imagenet-200"
    wnids = ("n09999999", "n01443537", "n05555555")  # wnids.txt is not sorted
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        for j in range(2):
            colour = torch.tensor([40 * k + 20, 100 + 50 * j, 200], dtype=torch.uint8).view(3, 1, 1)
            _write_jpeg(base / "train" / w / "images" / f"{w}_{j}.JPEG", colour.expand(3, 64, 64).clone())
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    ann = []
    for j, w in enumerate(["n05555555", "n09999999", "n01443537", "n05555555"]):
        shape = (1, 64, 64) if j == 3 else (3, 64, 64)  # one greyscale JPEG, as in the real data
        _write_jpeg(base / "val" / "images" / f"val_{j}.JPEG", torch.full(shape, 10 * j, dtype=torch.uint8))
        ann.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return wnids


def test_tiny_imagenet_pool_and_cache(tmp_path: Path) -> None:
    wnids = _write_tiny_imagenet(tmp_path)
    pool = load_pool("tiny_imagenet", tmp_path)
    assert pool.class_names == tuple(sorted(wnids)) and pool.wnids_txt == wnids
    assert pool.train_x.shape == (6, 3, 64, 64) and pool.test_x.shape == (4, 3, 64, 64)
    assert pool.train_y.tolist() == [0, 0, 1, 1, 2, 2]  # sorted-wnid labels (ImageFolder order)
    assert pool.test_y.tolist() == [1, 2, 0, 1]
    # n01443537 is wnids.txt line 1, colour (60, 100, 200) / (60, 150, 200); JPEG is lossy
    assert (pool.train_x[0].float().mean(dim=(1, 2)) - torch.tensor([60.0, 100.0, 200.0])).abs().max() < 4
    assert pool.test_x[3].float().std(dim=0).max() < 1  # the greyscale image became three equal channels
    cache = list((tmp_path / "tiny-imagenet-200").glob("*.pt"))
    assert len(cache) == 1
    for jpeg in (tmp_path / "tiny-imagenet-200" / "train").rglob("*.JPEG"):
        jpeg.unlink()  # the second load must come from the cache
    again = load_pool("tiny_imagenet", tmp_path)
    assert torch.equal(again.train_x, pool.train_x) and torch.equal(again.test_y, pool.test_y)
    assert again.wnids_txt == wnids


def test_missing_data_is_one_line(tmp_path: Path) -> None:
    for name in ("mnist", "svhn", "cifar10", "cifar+50", "tiny_imagenet"):
        with pytest.raises(DataMissingError) as err:
            check_available(name, tmp_path, download=False)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{name} not found under {tmp_path.resolve()}")
        assert "--download" in msg
        with pytest.raises(DataMissingError):
            load_pool(name, tmp_path)
        check_available(name, tmp_path, download=True)  # allowed to fetch: nothing to complain about
    check_available("digits", tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="tiny_imagenet"):
        check_available("imagenet", tmp_path, download=False)


def test_digits_pool() -> None:
    pool = load_pool("digits", "/nonexistent-root")
    assert pool.train_x.shape == (1198, 1, 8, 8) and pool.test_x.shape == (599, 1, 8, 8)
    assert pool.max_value == 16 and int(pool.train_x.max()) == 16 and pool.train_x.dtype == torch.uint8
    assert pool.class_names == tuple(str(d) for d in range(10))


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OSRTUNE_DATA", str(tmp_path / "x"))
    assert default_data_root() == (tmp_path / "x").resolve()
    monkeypatch.delenv("OSRTUNE_DATA")
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == (tmp_path / "data").resolve() and default_data_root().is_absolute()


@pytest.mark.mnist
def test_real_mnist_pool_check_available() -> None:
    if not (MNIST_ROOT / "MNIST/raw/t10k-images-idx3-ubyte").exists():
        pytest.skip("real MNIST not present")
    check_available("mnist", MNIST_ROOT, download=False)
