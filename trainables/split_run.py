"""One run of a trial: a method trained on one (split, seed), its data resident on the device, its own
RNG streams, its training and evaluation batches (``SplitRun``), and how one is built from a bundle
(``build_split_run``). What is measured on it is the task's (trainables/open_set_scoring.py, …)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from data import Split, to_training_labels
from data.augment import AugmentPolicy, Normalizer, augment, fit_normalizer, unit_scaler
from methods import DataInfo, Method, get_method
from methods.batchnorm import refresh_statistics
from results_analysis.trial_files import (
    ALL_KNOWN_TRAIN_FRACTION,
    FINAL_TRAIN_FRACTIONS,
    PROTOCOL_TRAIN_FRACTION,
    TRAIN_FRACTION_KEY,
    run_key,
)
from trainables.device_data import DataBundle, eval_batch_size, on_device


def split_run_seed(split: int, seed: int) -> int:
    """One integer seed per (split, seed) so runs of a trial differ but repeat exactly."""
    return 1_000_003 * seed + split


@dataclass
class SplitRun:
    """One method trained on one split with one seed, its data resident on the device."""

    split: Split
    seed: int
    method: Method
    policy: AugmentPolicy | None
    normalizer: Normalizer
    generator: torch.Generator
    x: dict[str, torch.Tensor] = field(default_factory=dict)
    y: dict[str, torch.Tensor] = field(default_factory=dict)
    # What the training batches carry: the method's ``training_targets`` of y["train"] (the labels
    # themselves, or ClustNet's binary P/N target; the classes are then for evaluation only).
    targets: torch.Tensor | None = None
    # Dropout and torchvision's RandAugment draw from the global RNG: each run keeps its own copy so
    # a run's numbers do not depend on which other runs share its trial (re-runs reproduce searches).
    rng_state: torch.Tensor = field(default_factory=torch.get_rng_state)
    cuda_rng_state: torch.Tensor | None = None
    # Outputs per phase of the current weights: the last epoch's validation outputs are what the final
    # test needs for its thresholds, so they are not computed twice. Cleared whenever weights change.
    _outputs: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)
    # Whether the BatchNorm statistics were brought up to the current weights (``evaluate``).
    _statistics_current: bool = field(default=False, repr=False)

    def train_epoch(self, batch_size: int, epoch: int) -> dict[str, float]:
        device = self.generator.device
        self.weights_changed()
        torch.set_rng_state(self.rng_state)
        if device.type == "cuda" and self.cuda_rng_state is not None:
            torch.cuda.set_rng_state(self.cuda_rng_state, device)
        try:
            return self.method.train_epoch(self.train_batches(batch_size), epoch)
        finally:
            self.rng_state = torch.get_rng_state()
            if device.type == "cuda":
                self.cuda_rng_state = torch.cuda.get_rng_state(device)

    @property
    def key(self) -> str:
        return run_key(self.split.id, self.seed)

    def train_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x = self.x["train"]
        y = self.y["train"] if self.targets is None else self.targets
        order = torch.randperm(len(y), device=x.device, generator=self.generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single image; the spec keeps partial batches
                break
            xb = x[idx]
            if self.policy is not None:
                xb = augment(xb, self.policy, self.generator)
            yield self.normalizer(xb).contiguous(memory_format=torch.channels_last), y[idx]

    def eval_batches(self, part: str) -> Iterator[torch.Tensor]:
        x = self.x[part]
        size = eval_batch_size(x.device)
        for start in range(0, len(x), size):
            yield self.normalizer(x[start : start + size]).contiguous(memory_format=torch.channels_last)

    def labelled_batches(self, part: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``part`` with the test transform, and its labels (what OpenMax fits its class means on)."""
        size = eval_batch_size(self.x[part].device)
        for x, start in zip(self.eval_batches(part), range(0, len(self.y[part]), size), strict=True):
            yield x, self.y[part][start : start + size]

    def evaluate(self, part: str) -> dict[str, np.ndarray]:
        if not self._statistics_current:
            # Before anything reads the model in eval mode (OpenMax's class means included). Once per
            # weight change: recomputing is deterministic, so a restored checkpoint evaluates the same.
            method = self.method
            # Uncompiled: the statistics are gathered by hooks on the BatchNorm layers, which a compiled
            # graph would not call. At the run's precision all the same, as evaluation sees its inputs.
            with method.execution.eager():
                refresh_statistics(method.batchnorm_networks(), method.batchnorm_forward,
                                   lambda: self.eval_batches("train"))
            self._statistics_current = True
        self.method.prepare_evaluation(lambda: self.labelled_batches("train"))
        return self.method.evaluate(self.eval_batches(part))

    def outputs(self, phase: str) -> dict[str, dict[str, np.ndarray]]:
        if phase not in self._outputs:
            self._outputs[phase] = {"known": self.evaluate(f"{phase}_known"),
                                    "unknown": self.evaluate(f"{phase}_unknown")}
        return self._outputs[phase]

    def weights_changed(self) -> None:
        """Forget outputs computed from the previous weights (after training or a checkpoint load)."""
        self._outputs.clear()
        self._statistics_current = False


def training_indices(split: Split, final_train_fraction: float = PROTOCOL_TRAIN_FRACTION) -> np.ndarray:
    """The images a run trains on (indices into the pool's training set): the 80% partition
    ``split.train``, or at 1.0 every known-class training image ``split.train_full`` (a superset of
    ``train`` ∪ ``val_known``: ``val_known`` is the hold-out after balancing against the unknowns)."""
    if final_train_fraction not in FINAL_TRAIN_FRACTIONS:
        raise ValueError(f"{TRAIN_FRACTION_KEY} must be one of {FINAL_TRAIN_FRACTIONS}, got {final_train_fraction!r}")
    return split.train_full if final_train_fraction == ALL_KNOWN_TRAIN_FRACTION else split.train


def build_split_run(method_name: str, hparams: Mapping[str, Any], bundle: DataBundle, split_id: int, seed: int,
              device: torch.device, final_train_fraction: float = PROTOCOL_TRAIN_FRACTION) -> SplitRun:
    method_cls = get_method(method_name)
    config = method_cls.Config.from_dict(hparams)
    if device.type == "cuda":
        # Autotune each convolution once per input shape: a trial sees a handful (the training batch, the
        # epoch's last partial batch, the evaluation batches), each tuned once per worker, then reused
        # every epoch. Set on every run: a reused worker may have run a method that declares otherwise.
        torch.backends.cudnn.benchmark = method_cls.fixed_input_shapes
    split = bundle.splits[split_id]
    native = bundle.train_x.shape[-1]
    size = method_cls.input_size(config, bundle.dataset, native)
    train_x = on_device(bundle, "train_x", device, size)
    test_x = on_device(bundle, "test_x", device, size)
    train_y = on_device(bundle, "train_y", device, size)
    test_y = on_device(bundle, "test_y", device, size)

    def take(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        # A copy: in a Ray trial the split's arrays are read-only views of the object store.
        return x[torch.tensor(idx, dtype=torch.int64, device=device)]

    parts = {
        "train": (train_x, train_y, training_indices(split, final_train_fraction)),
        "val_known": (train_x, train_y, split.val_known),
        "val_unknown": (train_x, train_y, split.val_unknown),
        "test_known": (test_x, test_y, split.test_known),
        "test_unknown": (test_x, test_y, split.test_unknown),
        "test_known_full": (test_x, test_y, split.test_known_full),
    }
    xs = {name: take(x, idx) for name, (x, _, idx) in parts.items()}
    ys = {name: to_training_labels(take(y, idx), split.known) for name, (_, y, idx) in parts.items()}

    torch.manual_seed(split_run_seed(split_id, seed))  # model initialisation, then the run's own RNG stream
    generator = torch.Generator(device=device)
    generator.manual_seed(split_run_seed(split_id, seed))
    info = DataInfo(channels=train_x.shape[1], image_size=size, num_known=len(split.known), device=device,
                    dataset=bundle.dataset)
    method = method_cls(config, info)
    return SplitRun(
        split=split,
        seed=seed,
        method=method,
        policy=method_cls.augmentation(config, bundle.dataset),
        normalizer=(fit_normalizer(xs["train"], bundle.max_value) if method_cls.standardise_inputs
                    else unit_scaler(info.channels, bundle.max_value)),
        generator=generator,
        x=xs,
        y=ys,
        targets=method.training_targets(ys["train"]),
        cuda_rng_state=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    )
