"""Datasets as uint8 tensors on the CPU (protocol.md §1), loaded with the torchvision readers."""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS: tuple[str, ...] = ("digits", "mnist", "svhn", "cifar10", "cifar+10", "cifar+50", "tiny_imagenet",
                             "cifar100_20")
# Datasets without open-set class splits: CIFAR-100 under its 20 coarse super-classes is a clustering
# benchmark (contrastive_disentangling.md §6).
CLUSTERING_ONLY: tuple[str, ...] = ("cifar100_20",)
# Datasets the protocol feeds a 32-px trunk (VGG32, classifier32) at another side than their own: MNIST's
# 28-px digits are resized to 32 (difair.md §9.1); the small CNN takes every dataset as it is.
TRUNK_INPUT_SIZE: dict[str, int] = {"mnist": 32}

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
DIGITS_SPLITS_FILE = SPLITS_DIR / "digits.json"
CIFAR100_COARSE_FILE = SPLITS_DIR / "cifar100_coarse.json"

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# MD5 of that zip as published by many dataset wrappers; a truncated download then fails loudly.
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_DIR = "tiny-imagenet-200"
# Bump when the cached tensors' layout changes so stale caches are rebuilt, not misread.
_TIN_CACHE_NAME = "osrtune-cache-v1.pt"

_DIGIT_NAMES = tuple(str(d) for d in range(10))


class DataMissingError(Exception):
    """A dataset's files are absent (or corrupt) and downloading was not allowed."""


@dataclass(frozen=True)
class ImagePool:
    """Everything a dataset offers: uint8 images (N, C, H, W) and int64 pool labels, on the CPU.

    CIFAR+N pools: labels 0..9 are the CIFAR-10 classes and 10 + f is CIFAR-100 fine label f; train is
    CIFAR-10 train followed by CIFAR-100 train, test likewise. TinyImageNet: labels are positions in the
    sorted wnid list (torchvision ImageFolder order), ``class_names`` are the wnids and ``wnids_txt`` keeps
    the order of the dataset's wnids.txt (protocol.md §4).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    max_value: int
    class_names: tuple[str, ...]
    wnids_txt: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def default_data_root() -> Path:
    """``$OSRTUNE_DATA`` if set, else ``./data`` relative to the working directory, made absolute."""
    env = os.environ.get("OSRTUNE_DATA")
    return Path(env).expanduser().resolve() if env else (Path.cwd() / "data").resolve()


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


def _required_files(name: str) -> list[str]:
    """Paths (relative to the root) that the torchvision readers open for ``name``."""
    if name == "mnist":
        return [
            f"MNIST/raw/{stem}-{kind}-idx{dim}-ubyte"
            for stem in ("train", "t10k")
            for kind, dim in (("images", 3), ("labels", 1))
        ]
    if name == "svhn":
        return ["train_32x32.mat", "test_32x32.mat"]
    cifar10 = [f"cifar-10-batches-py/{f}" for f in
               ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                "test_batch", "batches.meta")]
    if name == "cifar10":
        return cifar10
    cifar100 = [f"cifar-100-python/{f}" for f in ("train", "test", "meta")]
    if name in ("cifar+10", "cifar+50"):
        return cifar10 + cifar100
    if name == "cifar100_20":
        return cifar100
    if name == "tiny_imagenet":
        return [f"{TINY_IMAGENET_DIR}/wnids.txt", f"{TINY_IMAGENET_DIR}/train",
                f"{TINY_IMAGENET_DIR}/val/val_annotations.txt", f"{TINY_IMAGENET_DIR}/val/images"]
    return []


def _missing_message(name: str, root: Path, what: str) -> str:
    return (f"{name} not found under {root} ({what}): pass --download to fetch it there "
            f"(or --data-root / OSRTUNE_DATA to point at an existing copy)")


def _damaged_message(name: str, path: Path, problem: str) -> str:
    return (f"{name} file {path} is corrupted ({problem}): delete it and run again with --download to fetch a fresh "
            "copy (or point --data-root / OSRTUNE_DATA at a good copy)")


# MNIST's IDX files as published: (images, rows, columns) or (labels,), unsigned bytes after the header.
_MNIST_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the magic number's third byte


def idx_problem(path: Path, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the IDX file ``path`` that should hold unsigned bytes of ``shape``, or None:
    its magic number, the dimensions its header declares and its size against them. Reads the header only
    (torchvision reads the whole file and fails with a bare assertion or reshape error)."""
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as fh:
        header = fh.read(4 + 4 * len(shape))
    kind = "images" if len(shape) == 3 else "labels"
    expected_magic = (_IDX_UBYTE << 8) | len(shape)
    if len(header) < 4 or int.from_bytes(header[:4], "big") != expected_magic:
        found = f"{int.from_bytes(header[:4], 'big'):#010x}" if len(header) >= 4 else f"{size} bytes in all"
        return (f"not an IDX file of unsigned bytes with {len(shape)} dimensions (magic number {found} instead of "
                f"{expected_magic:#010x})")
    if len(header) < 4 + 4 * len(shape):
        return f"truncated inside its header: {size} bytes"
    dims = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(len(shape)))
    declared = f"{' × '.join(map(str, dims))} {kind}"
    if dims != shape:
        return f"the header says {declared}, MNIST's {path.name.split('-')[0]} file has {' × '.join(map(str, shape))}"
    need = len(header) + math.prod(dims)
    if size != need:
        return f"{'truncated' if size < need else 'too long'}: {size} bytes, its header says {declared} need {need}"
    return None


def _published_md5(name: str) -> dict[str, str]:
    """MD5 of each file torchvision reads for ``name``, as torchvision itself checks them; empty for the
    datasets it publishes none for (MNIST's decompressed files are checked by ``idx_problem``)."""
    if name == "svhn":
        from torchvision.datasets import SVHN

        return {SVHN.split_list[s][1]: SVHN.split_list[s][2] for s in ("train", "test")}
    if not name.startswith("cifar"):
        return {}
    from torchvision.datasets import CIFAR10, CIFAR100

    classes = {"cifar10": [CIFAR10], "cifar100_20": [CIFAR100]}.get(name, [CIFAR10, CIFAR100])  # else cifar+N
    return {f"{cls.base_folder}/{filename}": md5
            for cls in classes
            for filename, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]}


@functools.lru_cache(maxsize=64)
def _md5_matches(path: str, md5: str, size: int, mtime_ns: int) -> bool:
    # Keyed by size and time too, so a file replaced since is hashed again; the same file checked by the
    # command line and then by the loader is hashed once.
    from torchvision.datasets.utils import check_integrity

    return check_integrity(path, md5)


def check_available(name: str, root: str | os.PathLike, download: bool) -> None:
    """Presence and integrity check (no loading); raises DataMissingError naming the first file that is
    absent (when download is off) or damaged, and how to get a good copy.

    MNIST's IDX files are checked against their headers, also with download on (torchvision does not
    replace a file that exists); CIFAR and SVHN files against torchvision's published MD5 sums, with
    download off (with it on, torchvision fetches again what fails its own check). Raises ValueError for
    an unknown dataset name. ``digits`` ships with scikit-learn and never raises.
    """
    _check_name(name)
    root = Path(root).expanduser().resolve()
    if not download:
        missing = [rel for rel in _required_files(name) if not (root / rel).exists()]
        if missing:
            extra = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataMissingError(_missing_message(name, root, f"missing {missing[0]}{extra}"))
    if name == "mnist":
        for filename, shape in _MNIST_SHAPES.items():
            path = root / "MNIST" / "raw" / filename
            problem = idx_problem(path, shape) if path.is_file() else None
            if problem is not None:
                raise DataMissingError(_damaged_message(name, path, problem))
    if download:
        return
    for rel, md5 in _published_md5(name).items():
        path = root / rel
        stat = path.stat()
        if not _md5_matches(str(path), md5, stat.st_size, stat.st_mtime_ns):
            raise DataMissingError(_damaged_message(
                name, path, "its MD5 differs from the one torchvision publishes: truncated or altered"))


def load_pool(name: str, root: str | os.PathLike, download: bool = False) -> ImagePool:
    """Load dataset ``name`` from ``root`` (downloading it there only when ``download`` is True)."""
    check_available(name, root, download)
    root = Path(root).expanduser().resolve()
    if download and name != "digits":
        root.mkdir(parents=True, exist_ok=True)
    try:
        if name == "digits":
            return _load_digits()
        if name == "mnist":
            return _load_mnist(root, download)
        if name == "svhn":
            return _load_svhn(root, download)
        if name == "cifar10":
            return _load_cifar10(root, download)
        if name in ("cifar+10", "cifar+50"):
            return _load_cifar_plus(name, root, download)
        if name == "cifar100_20":
            return _load_cifar100_20(root, download)
        return _load_tiny_imagenet(root, download)
    except RuntimeError as err:
        # torchvision signals absent or corrupt files (failed MD5) with a bare RuntimeError that
        # suggests its own download=True flag; say it in this tool's terms instead.
        if download or "download=True" not in str(err):
            raise
        raise DataMissingError(_missing_message(name, root, "files missing or corrupted")) from err


def _labels(values: object) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2)))


def read_digits_partition() -> tuple[np.ndarray, np.ndarray]:
    """The stored digits train/test partition: indices into sklearn's ``load_digits`` (protocol.md §1)."""
    stored = json.loads(DIGITS_SPLITS_FILE.read_text())
    part = stored["partition"]
    return np.asarray(part["train"], dtype=np.int64), np.asarray(part["test"], dtype=np.int64)


def _load_digits() -> ImagePool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.uint8)[:, None])  # 0..16 fits uint8 exactly
    labels = _labels(bunch.target)
    train_idx, test_idx = (torch.from_numpy(a) for a in read_digits_partition())
    return ImagePool("digits", images[train_idx].contiguous(), labels[train_idx],
                     images[test_idx].contiguous(), labels[test_idx], 16, _DIGIT_NAMES)


def _load_mnist(root: Path, download: bool) -> ImagePool:
    from torchvision.datasets import MNIST

    parts = [MNIST(str(root), train=t, download=download) for t in (True, False)]
    xs = [p.data.to(torch.uint8)[:, None].contiguous() for p in parts]
    ys = [p.targets.to(torch.int64) for p in parts]
    return ImagePool("mnist", xs[0], ys[0], xs[1], ys[1], 255, _DIGIT_NAMES)


def _load_svhn(root: Path, download: bool) -> ImagePool:
    from torchvision.datasets import SVHN

    # Only "train" and "test": protocol.md §1 excludes the "extra" split. torchvision already maps the
    # .mat files' label 10 to digit 0.
    parts = [SVHN(str(root), split=s, download=download) for s in ("train", "test")]
    xs = [torch.from_numpy(np.ascontiguousarray(p.data, dtype=np.uint8)) for p in parts]
    ys = [_labels(p.labels) for p in parts]
    return ImagePool("svhn", xs[0], ys[0], xs[1], ys[1], 255, _DIGIT_NAMES)


def _read_cifar(cls: type, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    parts = [cls(str(root), train=t, download=download) for t in (True, False)]
    return (_nhwc_to_nchw(parts[0].data), _labels(parts[0].targets),
            _nhwc_to_nchw(parts[1].data), _labels(parts[1].targets), tuple(parts[0].classes))


def _load_cifar10(root: Path, download: bool) -> ImagePool:
    from torchvision.datasets import CIFAR10

    tx, ty, vx, vy, names = _read_cifar(CIFAR10, root, download)
    return ImagePool("cifar10", tx, ty, vx, vy, 255, names)


def _load_cifar_plus(name: str, root: Path, download: bool) -> ImagePool:
    from torchvision.datasets import CIFAR10, CIFAR100

    tx10, ty10, vx10, vy10, names10 = _read_cifar(CIFAR10, root, download)
    tx100, ty100, vx100, vy100, names100 = _read_cifar(CIFAR100, root, download)
    offset = len(names10)
    return ImagePool(
        name,
        torch.cat([tx10, tx100]), torch.cat([ty10, ty100 + offset]),
        torch.cat([vx10, vx100]), torch.cat([vy10, vy100 + offset]),
        255, names10 + names100,
    )


def cifar100_coarse_of_fine() -> np.ndarray:
    """Coarse (super-class) id of each CIFAR-100 fine label 0..99, from the stored official table."""
    table = json.loads(CIFAR100_COARSE_FILE.read_text())["coarse_to_fine"]
    coarse = np.full(100, -1, dtype=np.int64)
    for c, fines in table.items():
        coarse[fines] = int(c)
    return coarse


def read_cifar100_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(fine, coarse) labels of one official CIFAR-100 python file (``train`` or ``test``)."""
    with open(path, "rb") as fh:
        entry = pickle.load(fh, encoding="latin1")  # the official, MD5-checked file
    return np.asarray(entry["fine_labels"], dtype=np.int64), np.asarray(entry["coarse_labels"], dtype=np.int64)


def check_coarse_labels(fine: np.ndarray, coarse: np.ndarray) -> None:
    """Raise if any image's coarse label is not the stored table's super-class of its fine label."""
    expected = cifar100_coarse_of_fine()[fine]
    wrong = np.flatnonzero(expected != coarse)
    if wrong.size:
        i = int(wrong[0])
        raise ValueError(f"CIFAR-100 coarse labels disagree with the official mapping at {wrong.size} images "
                         f"(first: image {i}, fine {fine[i]}, coarse {coarse[i]}, expected {expected[i]})")


def _load_cifar100_20(root: Path, download: bool) -> ImagePool:
    """CIFAR-100 images labelled by their 20 super-classes, read from the files' own ``coarse_labels``
    (torchvision keeps only the fine ones) and checked against the stored table."""
    from torchvision.datasets import CIFAR100

    tx, ty_fine, vx, vy_fine, _ = _read_cifar(CIFAR100, root, download)
    coarse = []
    for part, fine in (("train", ty_fine), ("test", vy_fine)):
        file_fine, file_coarse = read_cifar100_labels(root / CIFAR100.base_folder / part)
        if not np.array_equal(file_fine, fine.numpy()):
            raise ValueError(f"cifar-100-python/{part}: fine labels differ from torchvision's reading")
        check_coarse_labels(file_fine, file_coarse)
        coarse.append(_labels(file_coarse))
    names = tuple(json.loads(CIFAR100_COARSE_FILE.read_text())["coarse_names"])
    return ImagePool("cifar100_20", tx, coarse[0], vx, coarse[1], 255, names)


def _decode_rgb(paths: list[Path]) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    def one(p: Path) -> torch.Tensor:
        img = decode_image(str(p), mode=ImageReadMode.RGB)  # some TinyImageNet JPEGs are greyscale
        if img.shape != (3, 64, 64):
            raise ValueError(f"{p}: expected a 64x64 image, got shape {tuple(img.shape)}")
        return img

    if not paths:
        return torch.zeros((0, 3, 64, 64), dtype=torch.uint8)
    out = torch.empty((len(paths), 3, 64, 64), dtype=torch.uint8)
    # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a dependency here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            for i, img in enumerate(pool.map(one, paths, chunksize=256)):
                out[i] = img
    return out


def _read_tiny_imagenet_tree(base: Path) -> dict:
    wnids_txt = tuple(w for w in (base / "wnids.txt").read_text().split() if w)
    sorted_wnids = tuple(sorted(wnids_txt))
    label_of = {w: i for i, w in enumerate(sorted_wnids)}
    train_dirs = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if tuple(train_dirs) != sorted_wnids:
        raise ValueError(f"{base}: train/ class folders do not match wnids.txt")
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for w in sorted_wnids:
        files = sorted((base / "train" / w / "images").glob("*.JPEG"))
        train_paths += files
        train_labels += [label_of[w]] * len(files)
    val = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            val.append((fields[0], label_of[fields[1]]))
    val.sort()
    return {
        "train_x": _decode_rgb(train_paths),
        "train_y": torch.tensor(train_labels, dtype=torch.int64),
        "test_x": _decode_rgb([base / "val" / "images" / f for f, _ in val]),
        "test_y": torch.tensor([lab for _, lab in val], dtype=torch.int64),
        "class_names": list(sorted_wnids),
        "wnids_txt": list(wnids_txt),
    }


def _load_tiny_imagenet(root: Path, download: bool) -> ImagePool:
    base = root / TINY_IMAGENET_DIR
    if download and not (base / "wnids.txt").exists():
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5)
    cache = base / _TIN_CACHE_NAME
    data = None
    if cache.exists():
        try:
            data = torch.load(cache, weights_only=True)
        except Exception:  # a truncated or foreign cache file is rebuilt from the images
            data = None
    if data is None:
        data = _read_tiny_imagenet_tree(base)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        try:
            torch.save(data, tmp)
            os.replace(tmp, cache)  # atomic, so a concurrent reader never sees half a file
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only data folder only loses the cache, not the load
    return ImagePool("tiny_imagenet", data["train_x"], data["train_y"], data["test_x"], data["test_y"],
                     255, tuple(data["class_names"]), tuple(data["wnids_txt"]))
