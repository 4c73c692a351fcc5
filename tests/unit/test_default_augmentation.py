"""The augmentation each registered method trains with by default on each dataset, pinned by hand from
the specs: DIFAIR and its CE baselines difair.md §9 (contrast + brightness on MNIST/digits, RandAugment
elsewhere, flips on natural images), CROSR crosr_openmax.md §4 (jitter + affine, none on 8×8 digits),
adversarial.md §2 (crop 4 px + flip), ClustNet clustnet.md §2/§6 (no augmentation), CD its own views
(no batch policy)."""

from __future__ import annotations

import pytest

from data.augment import DATASETS, AugmentPolicy
from methods import get_method, method_names


def _policy(kind: str, padding: int, flip: bool, max_value: int = 255) -> AugmentPolicy:
    return AugmentPolicy(kind, padding, flip, 9, max_value)


NATURAL = ("cifar10", "cifar+10", "cifar+50", "tiny_imagenet", "cifar100_20")
TORCHVISION = {
    "digits": _policy("contrast_brightness", 1, False, 16),
    "mnist": _policy("contrast_brightness", 4, False),
    "svhn": _policy("randaugment", 4, False),
    **{d: _policy("randaugment", 4, True) for d in NATURAL},
}
EXPECTED: dict[str, dict[str, AugmentPolicy | None]] = {
    "difair": TORCHVISION,
    "softmax": TORCHVISION,
    "openmax": TORCHVISION,
    "crosr": {"digits": None, "mnist": _policy("jitter_affine", 0, False), "svhn": _policy("jitter_affine", 0, False),
              **{d: _policy("jitter_affine", 0, True) for d in NATURAL}},
    "adversarial": {"digits": _policy("none", 4, False, 16), "mnist": _policy("none", 4, False),
                    "svhn": _policy("none", 4, False), **{d: _policy("none", 4, True) for d in NATURAL}},
    "clustnet": dict.fromkeys(DATASETS),
    "cd": dict.fromkeys(DATASETS),
}


def test_every_published_method_has_a_pinned_policy():
    # A method added later is covered by its own spec test; these are the specs' pins.
    assert set(EXPECTED) <= set(method_names())


@pytest.mark.parametrize("method,dataset", [(m, d) for m in EXPECTED for d in DATASETS])
def test_default_training_augmentation(method, dataset):
    cls = get_method(method)
    if cls.datasets is not None and dataset not in cls.datasets:
        pytest.skip(f"{method} does not run on {dataset}")
    assert cls.augmentation(cls.Config(), dataset) == EXPECTED[method][dataset]


def test_clustnet_augmentation_can_be_chosen():
    cls = get_method("clustnet")
    config = cls.Config.from_dict({"aug_mode": "torchvision"})
    assert cls.augmentation(config, "mnist") == TORCHVISION["mnist"]
    with pytest.raises(ValueError, match="aug_mode"):
        cls.Config.from_dict({"aug_mode": "sideways"})
