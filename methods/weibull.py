"""Per-class Weibull tail models with libMR "fit high" semantics (crosr_openmax.md §7).

A fit keeps the T largest distances, shifts them by τ − t_T (τ = 1, t_T the smallest kept value) and
fits a two-parameter Weibull to the shifted tail by maximum likelihood. The w-score of a distance is
that Weibull's CDF at the same shift, so everything below t_T − 1 scores exactly 0.

Two backends: ``libmr`` (the PyPI package the method was published with) and ``scipy`` (the same
recipe on ``scipy.stats.weibull_min``, which matches libmr 0.1.9 to a few 1e-6 in w-score). libMR never
raises on a failed fit: it flags the model invalid, and an invalid model scores −9999 one value at a
time but silently 0 through ``w_score_vector``. Both outcomes would poison a revision without a trace,
so validity is checked after every fit and every w-score is checked to lie in [0, 1].
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from methods.base import InvalidCellError

BACKENDS = ("libmr", "scipy")
TRANSLATE = 1  # libMR's translate_amount τ; the spec keeps it at its default


def default_backend() -> str:
    """``libmr`` when it imports, else ``scipy`` (the backend used is recorded with every result)."""
    try:
        import libmr  # noqa: F401
    except ImportError:
        return "scipy"
    return "libmr"


def _resolve_backend(backend: str | None) -> str:
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"Weibull backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


class WeibullFitError(InvalidCellError):
    """An invalid Weibull fit was about to be used; names the class, tail size and distance when known."""

    def __init__(
        self,
        reason: str,
        *,
        class_index: int | None = None,
        tailsize: int | None = None,
        distance: str | None = None,
        context: str = "",
    ) -> None:
        self.reason = reason
        self.class_index = class_index
        self.tailsize = tailsize
        self.distance = distance
        self.context = context
        where = [f"tailsize {tailsize}"] if tailsize is not None else []
        if distance is not None:
            where.append(f"distance {distance}")
        msg = "no valid Weibull fit"
        if class_index is not None:
            msg += f" for class {class_index}"
        if where:
            msg += f" ({', '.join(where)})"
        msg = f"{context}: {msg}" if context else msg
        super().__init__(f"{msg}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only fields would be lost by the default exception pickling (it replays
        # ``args``), and errors cross process boundaries under Ray.
        kwargs = {"class_index": self.class_index, "tailsize": self.tailsize, "distance": self.distance,
                  "context": self.context}
        return (functools.partial(type(self), **kwargs), (self.reason,))


@dataclass(frozen=True)
class WeibullParams:
    """λ, k and libMR's transform: u = sign·x + translate − small_score, W(x) = 1 − exp(−(u/λ)^k)."""

    scale: float
    shape: float
    sign: int
    translate: int
    small_score: float


@dataclass(frozen=True, eq=False)
class TailFit:
    """One "fit high" model, or the record of why there is none (``is_valid`` False, ``reason`` set)."""

    backend: str
    requested_tailsize: int
    tailsize: int  # effective T: min(requested, number of values)
    truncated: bool  # fewer values than the requested tail size
    is_valid: bool
    reason: str = ""
    _params: WeibullParams | None = field(default=None, repr=False)
    _mr: Any = field(default=None, repr=False)  # the libmr.MR model for the libmr backend

    @classmethod
    def invalid(cls, backend: str, requested_tailsize: int, n: int, reason: str) -> TailFit:
        """A failed fit over ``n`` values (for callers that know a fit is pointless before trying)."""
        return cls(backend, requested_tailsize, min(requested_tailsize, n), n < requested_tailsize, False, reason)

    def _error(self, reason: str) -> WeibullFitError:
        return WeibullFitError(reason, tailsize=self.requested_tailsize)

    def params(self) -> WeibullParams:
        if not self.is_valid or self._params is None:
            raise self._error(self.reason or "no parameters")
        return self._params

    def w_score(self, x: np.ndarray) -> np.ndarray:
        """W-scores (the fitted CDF) of raw distances, same shape as ``x``, float64 in [0, 1]."""
        if not self.is_valid:
            raise self._error(self.reason)
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("w_score needs finite distances")
        flat = np.ascontiguousarray(x.reshape(-1))
        if self.backend == "libmr":
            w = np.asarray(self._mr.w_score_vector(flat), dtype=np.float64)
        else:
            p = self.params()
            u = p.sign * flat + p.translate - p.small_score
            # max(u, 0) keeps the power real; those entries are overwritten with 0 anyway. Nonsense
            # parameters give NaN here, which the range check below turns into an error.
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                w = np.where(u < 0, 0.0, -np.expm1(-((np.maximum(u, 0.0) / p.scale) ** p.shape)))
        # libMR's −9999 sentinel, or anything else outside a probability, must never reach a revision.
        if w.shape != flat.shape or not np.all((w >= 0.0) & (w <= 1.0)):
            bad = w[~((w >= 0.0) & (w <= 1.0))] if w.shape == flat.shape else w
            raise self._error(f"{self.backend} returned w-scores outside [0, 1] (e.g. {bad.ravel()[:3].tolist()})")
        return w.reshape(x.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``from_dict`` rebuilds a model with bit-identical w-scores."""
        p = self._params
        return {
            "backend": self.backend,
            "requested_tailsize": self.requested_tailsize,
            "tailsize": self.tailsize,
            "truncated": self.truncated,
            "is_valid": self.is_valid,
            "reason": self.reason,
            "params": None if p is None else {
                "scale": p.scale, "shape": p.shape, "sign": p.sign, "translate": p.translate,
                "small_score": p.small_score,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TailFit:
        backend = _resolve_backend(d["backend"])
        raw = d.get("params")
        params = None if raw is None else WeibullParams(
            float(raw["scale"]), float(raw["shape"]), int(raw["sign"]), int(raw["translate"]),
            float(raw["small_score"]),
        )
        is_valid = bool(d["is_valid"])
        if is_valid and params is None:
            raise ValueError("a valid TailFit needs its params")
        mr = None
        if is_valid and backend == "libmr":
            import libmr

            mr = libmr.MR()
            # set_params restores exactly what get_params read (Python floats are C doubles), and marks
            # the model valid; the w-score range check still guards against nonsense parameters.
            mr.set_params(params.scale, params.shape, params.sign, params.translate, params.small_score)
        return cls(backend, int(d["requested_tailsize"]), int(d["tailsize"]), bool(d["truncated"]), is_valid,
                   str(d.get("reason", "")), params, mr)


def _fit_scipy(tail: np.ndarray) -> tuple[WeibullParams | None, str]:
    small = float(tail[-1])
    y = tail + TRANSLATE - small
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            shape, _, scale = stats.weibull_min.fit(y, floc=0)
    except (ValueError, RuntimeError, FloatingPointError) as err:
        return None, f"scipy fit failed: {err}"
    if not (math.isfinite(shape) and math.isfinite(scale) and shape > 0 and scale > 0):
        return None, f"scipy returned an invalid fit (scale {scale}, shape {shape})"
    return WeibullParams(float(scale), float(shape), 1, TRANSLATE, small), ""


def _fit_libmr(tail: np.ndarray) -> tuple[WeibullParams | None, Any, str]:
    import libmr

    mr = libmr.MR(translate_amount=TRANSLATE)
    # The tail is pre-sliced, so fit size = its length; libMR sorts internally and would pick the same.
    mr.fit_high(np.ascontiguousarray(tail, dtype=np.float64), len(tail))
    if not mr.is_valid:  # fit_high drops the C return code
        return None, None, "libMR returned an invalid fit"
    scale, shape, sign, translate, small = mr.get_params()
    if not (math.isfinite(scale) and math.isfinite(shape) and scale > 0 and shape > 0):
        return None, None, f"libMR returned an invalid fit (scale {scale}, shape {shape})"
    return WeibullParams(float(scale), float(shape), int(sign), int(translate), float(small)), mr, ""


def fit_high(distances: np.ndarray, tailsize: int, backend: str | None = None) -> TailFit:
    """Fit the T largest ``distances`` ("larger = more extreme"). Never raises for degenerate data: it
    returns an invalid ``TailFit`` whose ``reason`` says why, and using it raises ``WeibullFitError``."""
    backend = _resolve_backend(backend)
    if isinstance(tailsize, bool) or int(tailsize) != tailsize or tailsize < 1:
        raise ValueError(f"tailsize must be a positive integer, got {tailsize!r}")
    tailsize = int(tailsize)
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise ValueError("fit_high needs finite distances")
    n = d.size
    t_eff = min(tailsize, n)
    truncated = n < tailsize

    def invalid(reason: str) -> TailFit:
        return TailFit(backend, tailsize, t_eff, truncated, False, reason)

    if t_eff == 0:
        return invalid("no samples")
    if t_eff == 1:
        return invalid("only 1 sample")
    tail = np.sort(d)[::-1][:t_eff]
    shifted = tail + TRANSLATE - tail[-1]
    if shifted[0] == shifted[-1]:
        # libMR fails on a zero range of ln y ("insufficient distinct data"), which also happens when a
        # tiny spread vanishes in the rounding of 1 + spread. Checked here so both backends agree.
        spread = tail[0] - tail[-1]
        if spread == 0:
            return invalid(f"constant tail (all {t_eff} largest values equal {tail[0]:.6g})")
        return invalid(f"constant tail after the +{TRANSLATE} shift (spread {spread:.3g})")
    if backend == "libmr":
        params, mr, reason = _fit_libmr(tail)
    else:
        (params, reason), mr = _fit_scipy(tail), None
    if params is None:
        return invalid(reason)
    return TailFit(backend, tailsize, t_eff, truncated, True, "", params, mr)
