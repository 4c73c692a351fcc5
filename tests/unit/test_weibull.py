"""Spec tests for the Weibull tail fitter (shared/specs/crosr_openmax.md §7).

The references are written here, independently of methods/weibull.py: the scipy recipe of §7.4 and a
root solve of §7.3's closed-form MLE equation. libMR parts are skipped when libmr is not installed.
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
from scipy import optimize, stats

from methods.weibull import BACKENDS, TailFit, WeibullFitError, WeibullParams, default_backend, fit_high

TOL = 1e-4


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each Weibull backend in turn; libmr's cases skip where it is not installed."""
    if request.param == "libmr":
        pytest.importorskip("libmr")
    return request.param

# (seed, n, scale, offset): |normal| samples, including distances around 70–100 where the +1 shift
# relative to the tail's smallest value (not to 0) is what makes the fit work.
DATASETS = [(0, 500, 1.0, 0.0), (1, 1000, 15.0, 0.0), (2, 300, 10.0, 70.0), (3, 2000, 6.0, 80.0)]
TAILS = (10, 20, 100)


def sample(seed: int, n: int, scale: float, offset: float) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=n)) * scale + offset


def reference_scipy(d: np.ndarray, t: int) -> tuple[float, float, float]:
    """(λ, k, small) by §7.4: the T largest values, shifted to start at 1, scipy MLE with loc 0."""
    tail = np.sort(d)[-t:]
    small = float(tail.min())
    k, loc, lam = stats.weibull_min.fit(tail + 1.0 - small, floc=0)
    assert loc == 0
    return lam, k, small


def reference_closed_form(d: np.ndarray, t: int) -> tuple[float, float, float]:
    """(λ, k, small) from §7.3: solve Σy^k ln y / Σy^k − 1/k − mean(ln y) = 0, λ = (mean y^k)^{1/k}."""
    tail = np.sort(d)[-t:]
    small = float(tail.min())
    y = tail + 1.0 - small
    ly = np.log(y)

    def g(k: float) -> float:
        yk = (y / y.max()) ** k  # scaled to avoid overflow; the ratio is unchanged
        return float((yk * ly).sum() / yk.sum() - 1.0 / k - ly.mean())

    k = optimize.brentq(g, 1e-3, 1e3, xtol=1e-13, rtol=1e-13)
    return float(np.mean(y**k) ** (1.0 / k)), k, small


def reference_w(x: np.ndarray, lam: float, k: float, small: float) -> np.ndarray:
    out = np.zeros_like(x)
    for i, xi in enumerate(x):  # slow and explicit on purpose
        u = xi + 1.0 - small
        out[i] = 0.0 if u < 0 else 1.0 - math.exp(-((u / lam) ** k))
    return out


def dense_grid(d: np.ndarray) -> np.ndarray:
    return np.linspace(d.min() - 3.0, d.max() + 0.5 * (d.max() - d.min()) + 3.0, 3001)


def assert_agrees(fit: TailFit, lam: float, k: float, small: float, d: np.ndarray) -> None:
    p = fit.params()
    assert p.sign == 1 and p.translate == 1
    assert p.small_score == pytest.approx(small, abs=1e-12)
    assert p.scale == pytest.approx(lam, rel=TOL)
    assert p.shape == pytest.approx(k, rel=TOL)
    x = dense_grid(d)
    w = fit.w_score(x)
    assert w.dtype == np.float64 and w.shape == x.shape
    np.testing.assert_allclose(w, reference_w(x, lam, k, small), rtol=TOL, atol=TOL)
    # The grid spans all three regions: exactly 0 below small − 1, rising through the tail, near 1 past it.
    assert w[0] == 0.0 and 0.0 < w[len(w) // 2] < 1.0 and w[-1] > 0.99


# --------------------------------------------------------------------------------------------------
# agreement with independent references


@pytest.mark.parametrize("t", TAILS)
@pytest.mark.parametrize("data", DATASETS)
def test_libmr_matches_independent_scipy(data, t):
    pytest.importorskip("libmr")
    d = sample(*data)
    assert_agrees(fit_high(d, t, "libmr"), *reference_scipy(d, t), d)


@pytest.mark.parametrize("t", TAILS)
@pytest.mark.parametrize("data", DATASETS)
def test_scipy_backend_matches_libmr(data, t):
    libmr = pytest.importorskip("libmr")
    d = sample(*data)
    mr = libmr.MR()
    mr.fit_high(np.ascontiguousarray(d), t)  # all the data with fit size T: libMR picks the tail itself
    assert mr.is_valid
    lam, k, _, _, small = mr.get_params()
    assert_agrees(fit_high(d, t, "scipy"), lam, k, small, d)


@pytest.mark.parametrize("data", DATASETS[1:3])
def test_backends_match_closed_form_mle(backend, data):
    d = sample(*data)
    assert_agrees(fit_high(d, 20, backend), *reference_closed_form(d, 20), d)


def test_order_and_shape_do_not_matter(backend):
    d = sample(5, 200, 3.0, 70.0)
    a, b = fit_high(d, 20, backend), fit_high(np.random.default_rng(9).permutation(d).reshape(20, 10), 20, backend)
    assert a.params() == b.params()
    x = dense_grid(d)[:3000].reshape(3, 1000, 1)
    assert a.w_score(x).shape == x.shape
    np.testing.assert_array_equal(a.w_score(x).ravel(), a.w_score(x.ravel()))


def test_default_backend():
    try:
        import libmr  # noqa: F401
    except ImportError:
        assert default_backend() == "scipy"
    else:
        assert default_backend() == "libmr"
    assert fit_high(sample(0, 50, 1.0, 0.0), 10).backend == default_backend()


# --------------------------------------------------------------------------------------------------
# edge cases (§7.1, §7.5)


def test_constant_tail_is_invalid(backend):
    # The 20 largest values are all 5.0 even though the data as a whole is not constant.
    d = np.concatenate([np.full(25, 5.0), np.linspace(0, 4, 30)])
    fit = fit_high(d, 20, backend)
    assert not fit.is_valid and fit.reason == "constant tail (all 20 largest values equal 5)"
    assert fit.tailsize == 20 and not fit.truncated
    with pytest.raises(WeibullFitError, match="constant tail") as err:
        fit.w_score(np.array([1.0, 5.0, 9.0]))
    assert "tailsize 20" in str(err.value)
    with pytest.raises(WeibullFitError):
        fit.params()


def test_fewer_samples_than_tailsize_truncates(backend):
    d = sample(4, 7, 2.0, 70.0)
    fit = fit_high(d, 20, backend)
    assert fit.is_valid and fit.truncated
    assert (fit.requested_tailsize, fit.tailsize) == (20, 7)
    # Same model as asking for exactly T = n.
    full = fit_high(d, 7, backend)
    assert not full.truncated
    assert fit.params() == full.params()
    assert fit.params().scale == pytest.approx(reference_scipy(d, 7)[0], rel=TOL)


@pytest.mark.parametrize("tail", [[1.0, 1.0 + 2**-52], [0.0, 1e-300, 0.0]])
def test_spread_lost_in_the_shift_is_a_constant_tail(backend, tail):
    # 1 + spread rounds to 1, so the shifted tail is constant: libMR fails on it, and scipy must agree
    # instead of returning a shape of ~3e9.
    if backend == "libmr":
        libmr = pytest.importorskip("libmr")
        raw = libmr.MR()
        raw.fit_high(np.ascontiguousarray(tail), len(tail))
        assert not raw.is_valid
    fit = fit_high(np.array(tail), len(tail), backend)
    assert not fit.is_valid and "constant tail after the +1 shift" in fit.reason


def test_libmr_invalid_flag_is_checked(monkeypatch):
    libmr = pytest.importorskip("libmr")
    real = libmr.MR

    class InvalidAfterFit:
        """A real model that libMR flags invalid after fitting, as it does when its solver fails."""

        def __init__(self, **kwargs):
            self._mr = real(**kwargs)

        def fit_high(self, data, size):
            self._mr.fit_high(data, size)
            self._mr.set_invalid()

        def __getattr__(self, name):
            return getattr(self._mr, name)

    monkeypatch.setattr(libmr, "MR", InvalidAfterFit)
    fit = fit_high(sample(0, 100, 1.0, 0.0), 20, "libmr")
    assert not fit.is_valid and fit.reason == "libMR returned an invalid fit"
    with pytest.raises(WeibullFitError, match="libMR returned an invalid fit"):
        fit.w_score(np.array([0.5, 1.0]))


@pytest.mark.parametrize(("d", "reason"), [(np.array([3.0]), "only 1 sample"), (np.array([]), "no samples")])
def test_too_few_samples_invalid(backend, d, reason):
    fit = fit_high(d, 10, backend)
    assert not fit.is_valid and fit.truncated and fit.tailsize == d.size
    assert reason in fit.reason
    with pytest.raises(WeibullFitError, match=reason):
        fit.w_score(np.array([1.0]))


def test_two_distinct_points_is_the_smallest_valid_fit(backend):
    fit = fit_high(np.array([1.0, 2.0]), 2, backend)
    assert fit.is_valid
    w = fit.w_score(np.array([-1.0, 0.0, 2.0]))
    assert w[0] == 0.0 and 0.0 <= w[1] < w[2] <= 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_distances_rejected(bad):
    d = sample(0, 30, 1.0, 0.0)
    d[3] = bad
    with pytest.raises(ValueError, match="finite"):
        fit_high(d, 10, "scipy")
    fit = fit_high(sample(0, 30, 1.0, 0.0), 10, "scipy")
    with pytest.raises(ValueError, match="finite"):
        fit.w_score(np.array([1.0, bad]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        fit_high(np.arange(5.0), 3, "torch")
    with pytest.raises(ValueError, match="tailsize"):
        fit_high(np.arange(5.0), 0, "scipy")


def test_libmr_sentinel_never_escapes():
    libmr = pytest.importorskip("libmr")
    # What the guard protects against: an invalid libMR model scores −9999 one value at a time, and
    # silently 0 through the vector call.
    raw = libmr.MR()
    raw.fit_high(np.full(20, 5.0), 20)
    assert not raw.is_valid
    assert raw.w_score(5.0) == -9999.0
    np.testing.assert_array_equal(raw.w_score_vector(np.array([0.0, 5.0, 10.0])), 0.0)

    fit = fit_high(np.full(20, 5.0), 20, "libmr")
    assert not fit.is_valid
    with pytest.raises(WeibullFitError):
        fit.w_score(np.array([0.0, 5.0, 10.0]))

    # A model the backend reports as valid but whose parameters give w-scores of −1 (scale 0): the
    # range check, not the validity flag, has to catch it.
    params = {"scale": 0.0, "shape": 0.0, "sign": 1, "translate": 1, "small_score": 0.0}
    broken = TailFit.from_dict({"backend": "libmr", "requested_tailsize": 20, "tailsize": 20,
                                "truncated": False, "is_valid": True, "reason": "", "params": params})
    with pytest.raises(WeibullFitError, match=r"outside \[0, 1\]"):
        broken.w_score(np.array([0.0, 1.0, 2.0]))


def test_scipy_range_guard():
    params = {"scale": 1.0, "shape": 2.0, "sign": 1, "translate": 1, "small_score": 0.0}
    fit = TailFit.from_dict({"backend": "scipy", "requested_tailsize": 5, "tailsize": 5, "truncated": False,
                             "is_valid": True, "reason": "", "params": params})
    np.testing.assert_allclose(fit.w_score(np.array([-1.5, 0.0, 1.0])),
                               [0.0, 1 - math.exp(-1.0), 1 - math.exp(-4.0)])
    # Negative scale with a fractional shape: NaN w-scores, which must not pass as probabilities.
    fit = TailFit.from_dict({**fit.to_dict(), "params": {**params, "scale": -1.0, "shape": 0.5}})
    with pytest.raises(WeibullFitError, match=r"outside \[0, 1\]"):
        fit.w_score(np.array([0.0, 1.0]))


# --------------------------------------------------------------------------------------------------
# serialisation and errors


def test_round_trip_preserves_w_scores(backend):
    d = sample(7, 400, 8.0, 70.0)
    fit = fit_high(d, 50, backend)
    back = TailFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    x = dense_grid(d)
    np.testing.assert_array_equal(back.w_score(x), fit.w_score(x))
    assert back.params() == fit.params()
    assert (back.backend, back.requested_tailsize, back.tailsize, back.truncated) == (backend, 50, 50, False)
    again = pickle.loads(pickle.dumps(fit))
    np.testing.assert_array_equal(again.w_score(x), fit.w_score(x))


def test_round_trip_of_invalid_fit_stays_invalid(backend):
    fit = fit_high(np.array([2.0]), 20, backend)
    back = TailFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert not back.is_valid and back.reason == fit.reason and back.truncated and back.tailsize == 1
    with pytest.raises(WeibullFitError, match="only 1 sample"):
        back.w_score(np.array([1.0]))


def test_params_type():
    p = fit_high(sample(0, 100, 1.0, 0.0), 20, "scipy").params()
    assert isinstance(p, WeibullParams)
    assert isinstance(p.sign, int) and isinstance(p.translate, int)


def test_error_message_names_class_tailsize_distance_and_pickles():
    err = WeibullFitError("constant tail", class_index=3, tailsize=20, distance="eucos", context="OpenMax")
    assert str(err) == "OpenMax: no valid Weibull fit for class 3 (tailsize 20, distance eucos): constant tail"
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err)
    assert (back.class_index, back.tailsize, back.distance, back.reason) == (3, 20, "eucos", "constant tail")
