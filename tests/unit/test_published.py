"""The published reference numbers (results_analysis/published.yaml) load as typed fractions, and a
malformed file is refused with the entry and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from results_analysis.published import PublishedNumber, find_published, load_published

ENTRY = """\
- {method: softmax, score: mls, dataset: svhn, metric: auroc, value: 97.1, scale: percent,
   source: "Vaze et al. 2022 ICLR, Table 1", spec: "protocol.md §9", verified: true, note: ""}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "published.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _names() -> dict[str, list[str]]:
    from data.pools import DATASETS
    from methods import method_names

    return {"methods": method_names(), "datasets": list(DATASETS)}


@pytest.fixture(scope="module")
def numbers() -> list[PublishedNumber]:
    # Every method is a registered one and every dataset one we load: the shipped file, checked here.
    return load_published(**_names())


@pytest.mark.parametrize(
    ("method", "score", "value", "verified"),
    [
        ("softmax", "msp", 0.978, True),
        ("softmax", "mls", 0.993, False),  # MLS MNIST 99.3 is [unverified] in protocol.md §9
        ("openmax", "openmax", 0.981, True),
        ("crosr", "openmax", 0.991, False),
    ],
)
def test_mnist_auroc(numbers: list[PublishedNumber], method: str, score: str, value: float, verified: bool) -> None:
    n = find_published(numbers, method, score, "mnist", "auroc")
    assert n is not None
    assert n.value == pytest.approx(value, abs=1e-12)
    assert n.verified is verified


def test_table_contents(numbers: list[PublishedNumber]) -> None:
    datasets = {"mnist", "svhn", "cifar10", "cifar+10", "cifar+50", "tiny_imagenet"}
    for method, score in (("softmax", "msp"), ("softmax", "mls"), ("openmax", "openmax")):
        assert {n.dataset for n in numbers if (n.method, n.score) == (method, score)} == datasets
    # MLS: only MNIST is unverified; SVHN..TinyImageNet are corroborated.
    assert {n.dataset for n in numbers if n.score == "mls" and not n.verified} == {"mnist"}
    assert find_published(numbers, "softmax", "mls", "tiny_imagenet", "auroc").value == pytest.approx(0.83)
    assert find_published(numbers, "openmax", "openmax", "cifar+50", "auroc").value == pytest.approx(0.796)
    # CD-128 rows: 2 datasets × 2 readouts × 3 metrics, score null, fraction values kept as printed.
    cd = [n for n in numbers if n.method == "cd"]
    assert len(cd) == 12 and all(n.score is None for n in cd)
    assert find_published(numbers, "cd", None, "cifar10", "backbone_nmi").value == 0.725
    assert find_published(numbers, "cd", None, "cifar100_20", "feature_cluster_acc").value == 0.394
    # No published number for these, and none for rows without a method of ours.
    assert not [n for n in numbers if n.method in ("difair", "clustnet", "adversarial")]
    assert all(0.0 <= n.value <= 1.0 for n in numbers)
    assert len({(n.method, n.score, n.dataset, n.metric) for n in numbers}) == len(numbers)


def test_find_published_matches_the_score(numbers: list[PublishedNumber]) -> None:
    assert find_published(numbers, "softmax", "msp", "cifar10", "auroc").value == pytest.approx(0.677)
    assert find_published(numbers, "softmax", "mls", "cifar10", "auroc").value == pytest.approx(0.936)
    assert find_published(numbers, "softmax", None, "cifar10", "auroc") is None
    assert find_published(numbers, "difair", "dist", "cifar10", "auroc") is None


def test_percent_and_fraction_scales(tmp_path: Path) -> None:
    text = ENTRY + ENTRY.replace("dataset: svhn", "dataset: cifar10").replace(
        "value: 97.1, scale: percent", "value: 0.5, scale: fraction"
    )
    a, b = load_published(_write(tmp_path, text))
    assert a == PublishedNumber("softmax", "mls", "svhn", "auroc", 0.971, "Vaze et al. 2022 ICLR, Table 1",
                                "protocol.md §9", True, "")
    assert a.value == 0.971  # exactly the decimal 0.971, not 97.1 / 100
    assert b.value == 0.5


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("score: mls, ", "", "score"),  # missing
        ("verified: true", "verified: yes please", "verified"),
        ("scale: percent", "scale: permille", "scale"),
        ("value: 97.1", "value: 101.0", "value"),  # out of range for percent
        ("value: 97.1, scale: percent", "value: 97.1, scale: fraction", "value"),
        ("value: 97.1", "value: high", "value"),
        ("method: softmax", "method: arpl", "method"),  # not a method of ours
        ("dataset: svhn", "dataset: stl10", "dataset"),
        ("metric: auroc", "metric: test_auroc", "metric"),
        ("note: \"\"", "note: \"\", verifed: true", "verifed"),  # a typo'd extra field
    ],
)
def test_malformed_entry_names_index_and_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in ENTRY
    # Entry 0 is valid; entry 1 is the broken one (moved to another dataset so it is no duplicate).
    path = _write(tmp_path, ENTRY + ENTRY.replace(old, new).replace("dataset: svhn", "dataset: mnist"))
    with pytest.raises(ValueError, match=rf"entry 1: field '{field}'"):
        load_published(path, **_names())


def test_duplicate_and_non_list_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="entry 1 duplicates entry 0"):
        load_published(_write(tmp_path, ENTRY + ENTRY))
    with pytest.raises(ValueError, match="list of entries"):
        load_published(_write(tmp_path, "method: softmax\n"))
