"""Paired method − baseline differences over common (split, seed) runs, checked against the mean, the
sample std and the Student t interval computed by hand."""

from __future__ import annotations

import math

import pytest

from results_analysis.paired import PairedDifference, paired_difference, verdict

# Made-up per-split AUROCs; (3, 0) and (4, 0) each exist on one side only and must be ignored.
METHOD = {(0, 0): 0.90, (1, 0): 0.85, (2, 0): 0.88, (3, 0): 0.99}
BASELINE = {(0, 0): 0.87, (1, 0): 0.86, (2, 0): 0.84, (4, 0): 0.10}


def t_quantile_2dof(p: float) -> float:
    # Student t with 2 degrees of freedom has a closed-form quantile: (2p − 1) / sqrt(2p(1 − p)).
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_t_interval_by_hand() -> None:
    d = paired_difference(METHOD, BASELINE)
    # Differences 0.03, −0.01, 0.04: mean 0.02; deviations 0.01, −0.03, 0.02 → squares sum to 0.0014.
    mean = 0.02
    std = math.sqrt(0.0014 / 2)
    t = 4.302652729749464  # t_{0.975, 2}
    assert t == pytest.approx(t_quantile_2dof(0.975), rel=1e-12)
    half = t * std / math.sqrt(3)
    assert d.n == 3
    assert d.mean == pytest.approx(mean, abs=1e-12)
    assert d.std == pytest.approx(0.026457513110645906, rel=1e-9)
    assert d.std == pytest.approx(std, rel=1e-9)
    assert d.ci_low == pytest.approx(mean - half, rel=1e-9)
    assert d.ci_high == pytest.approx(mean + half, rel=1e-9)
    assert d.ci_low == pytest.approx(-0.0457244, abs=1e-6)  # 0.02 − 4.30265 · 0.0264575 / √3
    assert (d.level, d.interval) == (0.95, "t")
    assert verdict(d) == "no clear difference"


def test_other_level() -> None:
    d = paired_difference(METHOD, BASELINE, level=0.90)
    half = t_quantile_2dof(0.95) * math.sqrt(0.0007) / math.sqrt(3)  # t_{0.95, 2} = 2.91999
    assert d.level == 0.90
    assert (d.ci_low, d.ci_high) == (pytest.approx(0.02 - half, rel=1e-9), pytest.approx(0.02 + half, rel=1e-9))
    with pytest.raises(ValueError, match="level"):
        paired_difference(METHOD, BASELINE, level=95)


def _five_splits(deltas: list[float]) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    baseline = {(s, 0): 0.80 + 0.02 * s for s in range(5)}
    return {k: v + deltas[k[0]] for k, v in baseline.items()}, baseline


def test_better_and_worse_over_five_splits() -> None:
    method, baseline = _five_splits([0.05, 0.06, 0.07, 0.05, 0.06])
    # mean 0.058; deviations −.008, .002, .012, −.008, .002 → squares sum 2.8e-4, variance 7e-5.
    half = 2.7764451051977987 * math.sqrt(7e-5) / math.sqrt(5)  # t_{0.975, 4}
    d = paired_difference(method, baseline)
    assert d.n == 5 and d.mean == pytest.approx(0.058, abs=1e-12)
    assert d.ci_low == pytest.approx(0.058 - half, rel=1e-9) and d.ci_low > 0
    assert verdict(d) == "better"
    worse = paired_difference(baseline, method)
    assert worse.mean == pytest.approx(-0.058, abs=1e-12)
    assert worse.ci_high == pytest.approx(-0.058 + half, rel=1e-9)
    assert verdict(worse) == "worse"


def test_nan_in_a_pair_makes_everything_nan() -> None:
    d = paired_difference({**METHOD, (1, 0): math.nan}, BASELINE)
    assert d.n == 3
    assert all(math.isnan(x) for x in (d.mean, d.std, d.ci_low, d.ci_high))
    assert verdict(d) == "no clear difference"
    # A NaN in a run without a partner does not count: that run is not compared.
    clean = paired_difference({**METHOD, (3, 0): math.nan}, BASELINE)
    assert clean.mean == pytest.approx(0.02, abs=1e-12)


def test_too_few_pairs() -> None:
    one = paired_difference({(0, 0): 0.9, (1, 0): 0.8}, {(0, 0): 0.7})
    assert one.n == 1 and one.mean == pytest.approx(0.2, abs=1e-12)
    assert all(math.isnan(x) for x in (one.std, one.ci_low, one.ci_high))
    assert verdict(one) == "too few pairs"
    none = paired_difference({(0, 0): 0.9}, {(1, 0): 0.7})
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.std)
    assert verdict(none) == "too few pairs"


def test_verdict_thresholds() -> None:
    assert verdict(PairedDifference(5, 0.01, 0.01, 0.001, 0.02)) == "better"
    assert verdict(PairedDifference(5, -0.01, 0.01, -0.02, -0.001)) == "worse"
    assert verdict(PairedDifference(5, 0.01, 0.01, 0.0, 0.02)) == "no clear difference"  # touches 0
    assert verdict(PairedDifference(2, 0.01, math.nan, math.nan, math.nan)) == "no clear difference"
