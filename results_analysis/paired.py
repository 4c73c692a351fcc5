"""Paired difference of two methods over the same (split, seed) runs, with a Student t interval.

Two methods run on the same splits and seeds share most of their variation (a hard split is hard for
both), so the difference per (split, seed) pair varies far less than either method's numbers: a paired
interval can separate methods that two overlapping mean ± std bars cannot.

Why a t interval and not a bootstrap: the benchmark has 5 splits. A bootstrap over 5 pairs has only
C(9, 5) = 126 distinct resamples, and its percentile interval is roughly mean ± 1.96 · sd · sqrt((n-1)/n)
/ sqrt(n) — a normal quantile and a shrunken sd — so it undercovers badly at this n. The t interval
uses t_{0.975, 4} ≈ 2.78 for 5 pairs, which is what a sample this small calls for; it assumes the
differences are roughly normal, which no method with 5 pairs could check anyway.

The pairs are treated as independent. With several seeds per split they are not (they share the split),
and the interval is then narrower than the split-to-split variation justifies; pass per-split means
(one key per split) to get an interval over splits only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedDifference", "paired_difference", "verdict"]


@dataclass(frozen=True)
class PairedDifference:
    """Method − baseline over ``n`` common (split, seed) pairs: the mean difference, its sample std
    (ddof=1) and a two-sided ``level`` confidence interval of the mean (``interval`` names its kind)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    level: float = 0.95
    interval: str = "t"


def paired_difference(
    method: Mapping[tuple[int, int], float],
    baseline: Mapping[tuple[int, int], float],
    level: float = 0.95,
) -> PairedDifference:
    """The paired difference ``method − baseline`` over the (split, seed) keys both have; a key only one
    side has is ignored (that run has no partner to be compared with).

    Fewer than 2 pairs: std and the interval are NaN (no spread can be estimated); no pair: the mean is
    NaN too. A NaN value in any common pair makes mean, std and interval NaN: a diverged run must not
    silently drop out and flatter either side.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    keys = sorted(set(method) & set(baseline))
    n = len(keys)
    diffs = np.array([float(method[k]) - float(baseline[k]) for k in keys], dtype=float)
    nan = math.nan
    if n == 0:
        return PairedDifference(0, nan, nan, nan, nan, level)
    # np.mean/np.std propagate NaN, which is the rule above; no nan-skipping variant on purpose.
    mean = float(np.mean(diffs))
    if n < 2:
        return PairedDifference(n, mean, nan, nan, nan, level)
    std = float(np.std(diffs, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return PairedDifference(n, mean, std, mean - half, mean + half, level)


def verdict(d: PairedDifference) -> str:
    """"better" if the interval lies above 0, "worse" if below, "too few pairs" under 2 pairs, and
    "no clear difference" otherwise — including a NaN interval from a diverged run, which supports
    neither claim."""
    if d.n < 2:
        return "too few pairs"
    if d.ci_low > 0:
        return "better"
    if d.ci_high < 0:
        return "worse"
    return "no clear difference"
