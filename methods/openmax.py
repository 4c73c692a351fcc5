"""OpenMax as an open-set head any classifier can wear, and the classic ``openmax`` row: the head on
the softmax baseline's logits (crosr_openmax.md §6–§9, §14).

The head is refitted from the current weights before every evaluation: class means of correctly
classified training images (test transform, eval mode), per-class Weibull tails, then the alpha-rank
revision. Tail size, alpha rank and distance only change scoring, so they are also evaluated as a
grid (``posthoc_cells``) without retraining."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from methods.base import AT_LEAST_ONE, BELOW_ONE, NON_NEGATIVE, InvalidCellError, MethodConfig, Range
from methods.openmax_head import (
    DISTANCES,
    REVISIONS,
    OpenMaxCell,
    OpenMaxHead,
    native_prediction,
    posthoc_grid,
    unknown_probability,
)
from methods.presets import REFERENCE, Preset
from methods.registry import register
from methods.softmax import Softmax, SoftmaxConfig, mls_score, msp_score, softmax_presets
from methods.weibull import BACKENDS

POSTHOC_OBJECTIVES = ("sampled", "grid_best")


@dataclass(frozen=True)
class OpenMaxSettings(MethodConfig):
    """The head's settings (crosr_openmax.md §10). ``alpha_rank`` is clipped to K at use."""

    ranges: ClassVar[dict[str, Range]] = {
        "tailsize": Range(2), "alpha_rank": AT_LEAST_ONE, "eu_weight": NON_NEGATIVE, "prob_threshold": BELOW_ONE,
    }


    tailsize: int = 20
    alpha_rank: int = 10
    distance: str = "euclidean"
    eu_weight: float = 1 / 200
    revision: str = "logit"
    prob_threshold: float = 0.0  # native rule only: unknown when max OpenMax probability < this; 0 = off
    weibull_backend: str = "auto"
    # "grid_best": the reported val_auroc is the best grid cell's (mean over runs), not the sampled cell's.
    posthoc_objective: str = "sampled"

    @staticmethod
    def reference_head() -> dict[str, object]:
        """The head's published settings (crosr_openmax.md §10; tail, alpha and distance are also a grid)."""
        return {"tailsize": 20, "alpha_rank": 10, "distance": "euclidean", "eu_weight": 1 / 200,
                "revision": "logit", "prob_threshold": 0.0}

    def check_openmax(self) -> None:
        if self.tailsize < 2:
            raise ValueError(f"tailsize must be >= 2, got {self.tailsize}")
        if self.alpha_rank < 1:
            raise ValueError(f"alpha_rank must be >= 1, got {self.alpha_rank}")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.revision not in REVISIONS:
            raise ValueError(f"revision must be one of {', '.join(REVISIONS)}, got {self.revision!r}")
        if self.weibull_backend not in ("auto", *BACKENDS):
            raise ValueError(f"weibull_backend must be auto, {', '.join(BACKENDS)}; got {self.weibull_backend!r}")
        if self.posthoc_objective not in POSTHOC_OBJECTIVES:
            raise ValueError(f"posthoc_objective must be one of {', '.join(POSTHOC_OBJECTIVES)}")
        if not 0.0 <= self.prob_threshold < 1.0 or not math.isfinite(self.eu_weight) or self.eu_weight < 0:
            raise ValueError("prob_threshold must be in [0, 1) and eu_weight >= 0")


class OpenMaxScoring:
    """Mixin for a ``SupervisedMethod`` whose ``activations`` give (logits, activation vector).

    Its primary score is ``openmax``: the OpenMax probability of the unknown class at the configured
    cell. Closed-set prediction stays the argmax of the logits; ``pred_native`` is OpenMax's own
    argmax over K+1 (index K = unknown)."""

    # A final model is unscorable when a Weibull fit is invalid: OpenMax needs at least 2 correctly
    # classified training images of every class, and some cells fit where others cannot.
    unscorable_advice: ClassVar[str] = ("try more epochs (--max-epochs), a higher learning rate, or other cells of "
                                        "the post-hoc grid (tailsize, alpha_rank, distance)")

    primary_score: ClassVar[str] = "openmax"
    config: Any
    info: Any
    model: torch.nn.Module
    head: OpenMaxHead | None = None

    def activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        self.head = None  # new weights: the fitted class means and tails are stale
        return super().train_epoch(batches, epoch)  # type: ignore[misc]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head = None
        super().load_state_dict(state)  # type: ignore[misc]

    @torch.no_grad()
    def prepare_evaluation(self, train_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        if self.head is not None:
            return
        self.model.eval()  # dropout off, BN running statistics (the reference kept dropout on: a bug)
        logits, avs, labels = [], [], []
        for x, y in train_batches():
            lg, av = self.activations(x)
            logits.append(lg.double().cpu())
            avs.append(av.double().cpu())
            labels.append(y.cpu())
        c = self.config
        self.head = OpenMaxHead.fit(
            torch.cat(avs).numpy(), torch.cat(logits).numpy(), torch.cat(labels).numpy(), self.info.num_known,
            eu_weight=c.eu_weight, backend=None if c.weibull_backend == "auto" else c.weibull_backend,
        )

    def sampled_cell(self) -> OpenMaxCell:
        c = self.config
        return OpenMaxCell(c.tailsize, min(c.alpha_rank, self.info.num_known), c.distance)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, av = self.activations(x)
        return {"pred": logits.argmax(dim=1), "logits": logits, "av": av,
                "score_mls": mls_score(logits), "score_msp": msp_score(logits)}

    def evaluate(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        if self.head is None:
            raise RuntimeError("prepare_evaluation must fit the OpenMax head before evaluate")
        out = self.collect_outputs(batches)  # type: ignore[attr-defined]
        try:
            cell = self.score_cell(out, self.sampled_cell())
        except InvalidCellError as err:  # WeibullFitError naming the invalid class
            placeholder = np.zeros(len(out["pred"]))
            err.stand_in = {**out, "score_openmax": placeholder, "pred_native": out["pred"], "score": placeholder}
            raise
        out["score_openmax"] = cell["score"]
        out["pred_native"] = cell["pred_native"]
        out["score"] = out["score_openmax"]
        return out

    def posthoc_cells(self) -> list[OpenMaxCell]:
        return posthoc_grid(self.info.num_known)

    def score_cell(self, outputs: Mapping[str, np.ndarray], cell: OpenMaxCell) -> dict[str, np.ndarray]:
        assert self.head is not None
        probs = self.head.probabilities(outputs["av"].astype(np.float64), outputs["logits"].astype(np.float64),
                                        cell, self.config.revision)
        threshold = self.config.prob_threshold or None
        return {"score": unknown_probability(probs), "pred_native": native_prediction(probs, threshold)}

    def diagnostics(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        assert self.head is not None
        found = self.head.diagnostics(outputs["av"].astype(np.float64), outputs["logits"].astype(np.float64),
                                      self.sampled_cell())
        return {f"openmax_{k}": float(v) for k, v in found.items()}


@dataclass(frozen=True)
class OpenMaxConfig(SoftmaxConfig, OpenMaxSettings):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_openmax()


@register("openmax")
class OpenMax(OpenMaxScoring, Softmax):
    """The softmax baseline's network and recipe; OpenMax on its logits (AV = logits, as OpenOOD)."""

    Config = OpenMaxConfig
    config: OpenMaxConfig

    @classmethod
    def presets(cls, dataset: str) -> dict[str, Preset]:
        """The softmax baseline's matched reference recipe with the head's published settings."""
        recipe = softmax_presets(dataset).get(REFERENCE)
        if recipe is None:
            return {}
        return {REFERENCE: Preset(f"crosr_openmax.md §10 on {recipe.source}",
                                  {**recipe.config, **OpenMaxSettings.reference_head()}, recipe.run, recipe.not_built)}

    def activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.run_network(self.model, x)
        return logits, logits
