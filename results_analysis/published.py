"""Published reference numbers (``published.yaml`` beside this module) as typed, validated records.

The YAML keeps each value exactly as its source prints it, with its scale; :func:`load_published`
converts every value to a fraction in [0, 1], which is how our result files store every metric, so a
published number and a run's number compare directly. Which numbers are there, and which are left out
and why, is documented in the YAML itself.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from results_analysis import catalogue

__all__ = ["DEFAULT_PATH", "PublishedNumber", "find_published", "load_published"]

DEFAULT_PATH = Path(__file__).resolve().with_name("published.yaml")

_FIELDS = ("method", "score", "dataset", "metric", "value", "scale", "source", "spec", "verified", "note")
_SCALES = {"percent": 100, "fraction": 1}
# A published number is a test-time number of one base metric; a phase qualifier in the name would
# make it match nothing in our tables.
_PHASES = ("val_", "test_", "train_")


@dataclass(frozen=True)
class PublishedNumber:
    """One published number. ``value`` is a fraction in [0, 1] whatever the source's scale."""

    method: str
    score: str | None
    dataset: str
    metric: str
    value: float
    source: str
    spec: str
    verified: bool
    note: str


def _to_fraction(value: float, scale: str) -> float:
    # Through the decimal text, so that 97.8 % becomes exactly the float 0.978 rather than 97.8 / 100.
    return float(Decimal(repr(value)) / _SCALES[scale])


def _parse(index: int, entry: Any, methods: Collection[str] | None, datasets: Collection[str] | None
           ) -> PublishedNumber:
    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"published numbers: entry {index}: field {field!r} {why}")

    if not isinstance(entry, dict):
        raise ValueError(f"published numbers: entry {index} is not a mapping: {entry!r}")
    for field in _FIELDS:
        if field not in entry:
            raise bad(field, "is missing")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise bad(unknown[0], f"is not a known field (known: {', '.join(_FIELDS)})")
    for field in ("method", "dataset", "metric", "source", "spec"):
        if not isinstance(entry[field], str) or not entry[field].strip():
            raise bad(field, f"must be a non-empty string, got {entry[field]!r}")
    if not isinstance(entry["note"], str):
        raise bad("note", f"must be a string, got {entry['note']!r}")
    score = entry["score"]
    if score is not None and (not isinstance(score, str) or not score.strip()):
        raise bad("score", f"must be a non-empty string or null, got {score!r}")
    if methods is not None and entry["method"] not in methods:
        raise bad("method", f"{entry['method']!r} is not a registered method ({', '.join(sorted(methods))})")
    if datasets is not None and entry["dataset"] not in datasets:
        raise bad("dataset", f"{entry['dataset']!r} is not a dataset ({', '.join(sorted(datasets))})")
    metric = entry["metric"]
    if metric.startswith(_PHASES) or catalogue.lookup(metric) is None:
        raise bad("metric", f"{metric!r} is not a base metric name of results_analysis.catalogue")
    scale = entry["scale"]
    if scale not in _SCALES:
        raise bad("scale", f"must be one of {sorted(_SCALES)}, got {scale!r}")
    value = entry["value"]
    # bool is an int subclass: `value: true` is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad("value", f"must be a finite number, got {value!r}")
    if not 0 <= value <= _SCALES[scale]:
        raise bad("value", f"{value!r} is out of range for scale {scale!r} (0 to {_SCALES[scale]})")
    if not isinstance(entry["verified"], bool):
        raise bad("verified", f"must be true or false, got {entry['verified']!r}")
    return PublishedNumber(
        method=entry["method"],
        score=score,
        dataset=entry["dataset"],
        metric=metric,
        value=_to_fraction(value, scale),
        source=entry["source"],
        spec=entry["spec"],
        verified=entry["verified"],
        note=entry["note"],
    )


def load_published(path: Path | None = None, methods: Collection[str] | None = None,
                   datasets: Collection[str] | None = None) -> list[PublishedNumber]:
    """The published numbers in ``path`` (default: ``published.yaml`` beside this module), in file order.

    Raises ValueError naming the entry index (0-based) and the field for a malformed entry, for two
    entries with the same (method, score, dataset, metric), and, when ``methods`` / ``datasets`` are
    given, for a name not among them. They are the caller's to give: this package imports no other
    layer (tests/unit/test_published.py checks the file against the registry and the datasets).
    """
    path = DEFAULT_PATH if path is None else Path(path)
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"published numbers: {path} must hold a list of entries, got {type(raw).__name__}")
    numbers: list[PublishedNumber] = []
    seen: dict[tuple[str, str | None, str, str], int] = {}
    for index, entry in enumerate(raw):
        number = _parse(index, entry, methods, datasets)
        key = (number.method, number.score, number.dataset, number.metric)
        if key in seen:
            raise ValueError(f"published numbers: entry {index} duplicates entry {seen[key]}: "
                             f"(method, score, dataset, metric) = {key}")
        seen[key] = index
        numbers.append(number)
    return numbers


def find_published(
    numbers: Iterable[PublishedNumber], method: str, score: str | None, dataset: str, metric: str
) -> PublishedNumber | None:
    """The number for exactly this (method, score, dataset, metric), or None. ``score`` is matched as
    given: a number published for softmax's ``msp`` is not returned for ``mls``."""
    return next(
        (n for n in numbers if (n.method, n.score, n.dataset, n.metric) == (method, score, dataset, metric)),
        None,
    )
