"""The OpenMax open-set head on activation vectors (crosr_openmax.md §6, §8, §9, §12).

Fitting keeps only correctly classified training samples: their per-class means (MAVs) and each
class's distances to its own MAV. Scoring turns a test sample's distance to every MAV into per-class
w-scores with that class's Weibull tail, damps the top-α logits by them and gives the removed mass to
an extra "unknown" class. Tail size, alpha rank and distance type are post-hoc: fits are cached per
(tail size, distance), so a whole grid of cells costs K fits per pair and cheap arithmetic per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.weibull import BACKENDS, TailFit, WeibullFitError, default_backend, fit_high

DISTANCES = ("euclidean", "eucos", "cosine")
REVISIONS = ("logit", "logit_clipped", "prob")
TAILSIZES = (10, 20, 50, 100, 200)


@dataclass(frozen=True, order=True)
class OpenMaxCell:
    """One post-hoc setting; ``alpha_rank`` ≤ K is checked where K is known."""

    tailsize: int
    alpha_rank: int
    distance: str

    def __post_init__(self) -> None:
        if self.tailsize < 1 or self.alpha_rank < 1:
            raise ValueError(f"tailsize and alpha_rank must be >= 1, got {self.tailsize}, {self.alpha_rank}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")

    @property
    def key(self) -> str:
        """Metric-name prefix, e.g. ``T=20/alpha=3/dist=euclidean``."""
        return f"T={self.tailsize}/alpha={self.alpha_rank}/dist={self.distance}"


def posthoc_grid(num_classes: int) -> list[OpenMaxCell]:
    """Every cell of §9's grid: T in TAILSIZES × α in 1..K × the three distances (5·K·3 cells)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return [OpenMaxCell(t, a, d) for t in TAILSIZES for a in range(1, num_classes + 1) for d in DISTANCES]


def _as_2d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def correct_mask(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean mask of samples whose argmax logit is their label."""
    logits = _as_2d("logits", logits)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows but {labels.shape[0]} labels")
    return logits.argmax(axis=1) == labels


def class_means(
    av: np.ndarray, logits: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """MAVs (K × D) from correctly classified samples, and how many samples each used.

    A class without any correct sample gets a NaN row: any use of it is an error the fits report."""
    av = _as_2d("av", av)
    labels = np.asarray(labels).reshape(-1)
    if av.shape[0] != labels.shape[0]:
        raise ValueError(f"{av.shape[0]} activation vectors but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    keep = correct_mask(logits, labels)
    mavs = np.full((num_classes, av.shape[1]), np.nan)
    counts = np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        rows = av[keep & (labels == c)]
        counts[c] = rows.shape[0]
        if counts[c]:
            mavs[c] = rows.mean(axis=0)
    return mavs, counts


def pairwise_distances(
    av: np.ndarray, mavs: np.ndarray, distance: str, eu_weight: float = 1 / 200
) -> np.ndarray:
    """N × K distances of every AV to every MAV (§6 table).

    The cosine of a zero vector is taken as 0: it has no direction, so it is treated as orthogonal to
    everything (cosine distance 1) rather than producing NaN that would reach the Weibull fits."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    av = np.asarray(av, dtype=np.float64)
    mavs = np.asarray(mavs, dtype=np.float64)
    if av.ndim != 2 or mavs.ndim != 2 or av.shape[1] != mavs.shape[1]:
        raise ValueError(f"av {av.shape} and mavs {mavs.shape} must be N × D and K × D")
    out = np.empty((av.shape[0], mavs.shape[0]))
    need_cos = distance != "euclidean"
    av_norm = np.sqrt(np.einsum("ij,ij->i", av, av)) if need_cos else None
    for k, m in enumerate(mavs):
        # Explicit differences per class rather than the ‖v‖² + ‖m‖² − 2v·m expansion: the tail fits
        # are sensitive to small distances, which the expansion loses to cancellation. (einsum: several
        # times faster than linalg.norm along an axis.)
        diff = av - m
        eu = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        if not need_cos:
            out[:, k] = eu
            continue
        denom = av_norm * np.sqrt(m @ m)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(denom > 0, (av @ m) / np.where(denom > 0, denom, 1.0), 0.0)
        cos_dist = 1.0 - np.clip(cos, -1.0, 1.0)
        out[:, k] = cos_dist if distance == "cosine" else eu_weight * eu + cos_dist
    return out


def alpha_weights(logits: np.ndarray, alpha_rank: int) -> np.ndarray:
    """N × K: the class at logit rank r (1 = largest) gets (α + 1 − r)/α for r ≤ α, else 0.

    Tied logits are ranked by class index, lower first."""
    logits = _as_2d("logits", logits)
    k = logits.shape[1]
    if not 1 <= alpha_rank <= k:
        raise ValueError(f"alpha_rank must be in 1..{k}, got {alpha_rank}")
    order = np.argsort(-logits, axis=1, kind="stable")[:, :alpha_rank]
    ranked = (alpha_rank - np.arange(alpha_rank)) / alpha_rank
    weights = np.zeros_like(logits)
    np.put_along_axis(weights, order, np.broadcast_to(ranked, order.shape), axis=1)
    return weights


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def revise(logits: np.ndarray, w: np.ndarray, weights: np.ndarray, revision: str = "logit") -> np.ndarray:
    """OpenMax probabilities (N × K+1, last column = unknown) from logits, w-scores and alpha weights (§8.3)."""
    if revision not in REVISIONS:
        raise ValueError(f"revision must be one of {', '.join(REVISIONS)}, got {revision!r}")
    logits = _as_2d("logits", logits)
    w = np.asarray(w, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if w.shape != logits.shape or weights.shape != logits.shape:
        raise ValueError(f"logits {logits.shape}, w {w.shape} and weights {weights.shape} must match")
    # Also catches a −9999 sentinel that got past the fitter by some other route.
    if not np.all((w >= 0) & (w <= 1)) or not np.all((weights >= 0) & (weights <= 1)):
        raise ValueError("w-scores and alpha weights must lie in [0, 1]")
    damp = w * weights
    if revision == "prob":
        p = _softmax(logits)
        return np.concatenate([p * (1 - damp), (p * damp).sum(axis=1, keepdims=True)], axis=1)
    removed = logits * damp  # l_k − l̂_k
    if revision == "logit_clipped":
        removed_total = np.maximum(removed, 0).sum(axis=1, keepdims=True)
    else:
        removed_total = removed.sum(axis=1, keepdims=True)
    return _softmax(np.concatenate([logits - removed, removed_total], axis=1))


def unknown_probability(probs: np.ndarray) -> np.ndarray:
    """The open-set score: OpenMax probability of the unknown class (larger = more likely unknown)."""
    return np.asarray(probs)[:, -1]


def native_prediction(probs: np.ndarray, prob_threshold: float | None = None) -> np.ndarray:
    """OpenMax's own rule: argmax over K+1 (index K = unknown); with a threshold, also unknown when
    the largest probability is below it (not OpenOOD's fallback to the known index K−1)."""
    probs = np.asarray(probs)
    pred = probs.argmax(axis=1)
    if prob_threshold is not None:
        pred = np.where(probs.max(axis=1) < prob_threshold, probs.shape[1] - 1, pred)
    return pred


_SCORED_ENTRIES = 8  # arrays whose distances and w-scores are kept (a grid pass touches about six)


class _Scored:
    """Distances (per distance type) and w-scores (per (T, distance)) of one scored AV array."""

    def __init__(self, av: np.ndarray) -> None:
        self.av = av
        self.dist: dict[str, np.ndarray] = {}
        self.w: dict[tuple[int, str], np.ndarray] = {}

    def matches(self, av: np.ndarray) -> bool:
        return self.av.shape == av.shape and np.array_equal(self.av[:1], av[:1]) and np.array_equal(self.av, av)


class OpenMaxHead:
    """MAVs and per-class Weibull tails fitted on training AVs; scores any cell of the post-hoc grid."""

    def __init__(
        self, mavs: np.ndarray, counts: np.ndarray, kept: list[np.ndarray], *, eu_weight: float, backend: str
    ) -> None:
        self.num_classes = mavs.shape[0]
        self.mavs = mavs
        self.counts = counts
        self.eu_weight = eu_weight
        self.backend = backend
        self._kept = kept  # per class: its correctly classified training AVs
        self._train_distances: dict[str, list[np.ndarray]] = {}
        self._fits: dict[tuple[int, str], list[TailFit]] = {}
        self._scored: list[_Scored] = []  # most recently used last

    @classmethod
    def fit(
        cls,
        av: np.ndarray,
        logits: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        *,
        eu_weight: float = 1 / 200,
        backend: str | None = None,
    ) -> OpenMaxHead:
        """Fit the class means now; distances and Weibull tails follow lazily per (T, distance)."""
        backend = default_backend() if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"Weibull backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        av = _as_2d("av", av)
        logits = _as_2d("logits", logits)
        labels = np.asarray(labels).reshape(-1)
        if logits.shape != (av.shape[0], num_classes):
            raise ValueError(f"logits must be {av.shape[0]} × {num_classes}, got {logits.shape}")
        mavs, counts = class_means(av, logits, labels, num_classes)
        keep = correct_mask(logits, labels)
        kept = [av[keep & (labels == c)] for c in range(num_classes)]
        return cls(mavs, counts, kept, eu_weight=eu_weight, backend=backend)

    def train_distances(self, distance: str) -> list[np.ndarray]:
        """Per class c: distances of its correctly classified training AVs to MAV_c (cached)."""
        if distance not in self._train_distances:
            self._train_distances[distance] = [
                pairwise_distances(rows, self.mavs[c : c + 1], distance, self.eu_weight)[:, 0]
                if rows.shape[0] else np.empty(0)
                for c, rows in enumerate(self._kept)
            ]
        return self._train_distances[distance]

    def fits(self, tailsize: int, distance: str) -> list[TailFit]:
        """K tail fits for (T, distance), cached; a class with 0 or 1 correct samples gets an invalid fit."""
        key = (int(tailsize), distance)
        if key not in self._fits:
            if distance not in DISTANCES:
                raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
            found = []
            for c, d in enumerate(self.train_distances(distance)):
                n = int(self.counts[c])
                if n < 2:
                    what = ("no correctly classified training samples" if n == 0
                            else "only 1 correctly classified training sample")
                    found.append(TailFit.invalid(self.backend, key[0], n, what))
                else:
                    found.append(fit_high(d, key[0], self.backend))
            self._fits[key] = found
        return self._fits[key]

    def invalid_classes(self, tailsize: int, distance: str) -> list[tuple[int, str]]:
        return [(c, f.reason) for c, f in enumerate(self.fits(tailsize, distance)) if not f.is_valid]

    def _check_inputs(self, av: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        av = _as_2d("av", av)
        logits = _as_2d("logits", logits)
        if av.shape[1] != self.mavs.shape[1] or logits.shape != (av.shape[0], self.num_classes):
            raise ValueError(f"expected av N × {self.mavs.shape[1]} and logits N × {self.num_classes}, "
                             f"got {av.shape} and {logits.shape}")
        return av, logits

    def _scored_entry(self, av: np.ndarray) -> _Scored:
        # Callers score the same few arrays (val/test, known/unknown) for every grid cell, usually as
        # fresh copies, so entries are matched by content, not identity.
        for i, entry in enumerate(self._scored):
            if entry.matches(av):
                self._scored.append(self._scored.pop(i))
                return entry
        entry = _Scored(av.copy())
        self._scored = [*self._scored[-(_SCORED_ENTRIES - 1):], entry]
        return entry

    def w_scores(self, av: np.ndarray, cell: OpenMaxCell) -> np.ndarray:
        """N × K w-scores at the cell's (T, distance); raises ``WeibullFitError`` on an invalid class."""
        fits = self.fits(cell.tailsize, cell.distance)
        for c, f in enumerate(fits):
            if not f.is_valid:
                raise WeibullFitError(f.reason, class_index=c, tailsize=cell.tailsize, distance=cell.distance,
                                      context="OpenMax")
        av = _as_2d("av", av)
        entry = self._scored_entry(av)
        key = (cell.tailsize, cell.distance)
        if key not in entry.w:
            if cell.distance not in entry.dist:
                entry.dist[cell.distance] = pairwise_distances(av, self.mavs, cell.distance, self.eu_weight)
            dist = entry.dist[cell.distance]
            entry.w[key] = np.stack([f.w_score(dist[:, c]) for c, f in enumerate(fits)], axis=1)
        return entry.w[key].copy()

    def probabilities(
        self, av: np.ndarray, logits: np.ndarray, cell: OpenMaxCell, revision: str = "logit"
    ) -> np.ndarray:
        """N × (K+1) OpenMax probabilities at ``cell``; the last column is the unknown class."""
        av, logits = self._check_inputs(av, logits)
        weights = alpha_weights(logits, cell.alpha_rank)  # checks α ≤ K before any fitting
        return revise(logits, self.w_scores(av, cell), weights, revision)

    def diagnostics(self, av: np.ndarray, logits: np.ndarray, cell: OpenMaxCell) -> dict[str, float]:
        """§12 diagnostics at the cell's (T, distance). ``all_w_zero`` is over the valid classes' w
        (NaN when none is valid), so it stays defined for a cell that cannot be scored."""
        av, logits = self._check_inputs(av, logits)
        fits = self.fits(cell.tailsize, cell.distance)
        valid = [c for c, f in enumerate(fits) if f.is_valid]
        if valid and av.shape[0]:
            dist = pairwise_distances(av, self.mavs[valid], cell.distance, self.eu_weight)
            w = np.stack([fits[c].w_score(dist[:, i]) for i, c in enumerate(valid)], axis=1)
            all_zero = float(np.mean(np.all(w == 0, axis=1)))
        else:
            all_zero = float("nan")
        return {
            "invalid_fits": float(sum(not f.is_valid for f in fits)),
            "tail_truncated": float(sum(f.truncated for f in fits)),
            "all_w_zero": all_zero,
        }
