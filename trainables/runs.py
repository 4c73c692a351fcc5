"""The work of one trial without Ray: train a config on each (split, seed), validate every epoch,
test once at the end. The Ray trainable (trainables/trial.py) only adds reporting and checkpoints, and
bench/overhead.py runs this same code bare to measure what Tune costs."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data import ImagePool, Split, to_training_labels
from data.augment import AugmentPolicy, Normalizer, augment, fit_normalizer, policy_for, resize, unit_scaler
from methods import DataInfo, Method, get_method
from methods.base import InvalidCellError, output_views
from methods.batchnorm import refresh_statistics
from methods.presets import describe_setting
from results_analysis.metrics import accuracy, auroc, open_set_f1, osr_metrics, threshold_at_tpr
from results_analysis.tables import (
    ALL_KNOWN_TRAIN_FRACTION,
    FINAL_FILE,
    FINAL_TRAIN_FRACTIONS,
    FINISHED,
    GRID_FILE,
    PROTOCOL_TRAIN_FRACTION,
    TRAIN_FRACTION_KEY,
    UNSCORABLE,
    is_threshold_free,
    posthoc_records,
    select_posthoc_cell,
)

# Trial attributes a published setting may pin beyond the method config (methods/presets.py Preset.run).
RUN_SETTING_KEYS = ("final_train_fraction",)
# Keys of a trial config that describe the experiment rather than the method's hyperparameters.
META_KEYS = ("method", "dataset", "splits", "seeds", "search", TRAIN_FRACTION_KEY, "posthoc_cell")
# Evaluation batch per device type: on a CPU the activations of 1024 images overflow the caches and
# inference runs 1.3–1.6× slower than at 256 (bench/eval_batch.py); a GPU wants the large batch.
EVAL_BATCH = {"cpu": 256}
EVAL_BATCH_DEFAULT = 1024


def eval_batch_size(device: torch.device) -> int:
    return EVAL_BATCH.get(device.type, EVAL_BATCH_DEFAULT)


@dataclass(frozen=True)
class DataBundle:
    """What a search ships to its trials once, through Ray's object store: the dataset as uint8 numpy
    arrays (zero-copy out of the store) and the class splits of the experiment."""

    dataset: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    max_value: int
    splits: Mapping[int, Split]

    @classmethod
    def from_pool(cls, pool: ImagePool, splits: Mapping[int, Split]) -> DataBundle:
        return cls(
            dataset=pool.name,
            train_x=pool.train_x.numpy(),
            train_y=pool.train_y.numpy(),
            test_x=pool.test_x.numpy(),
            test_y=pool.test_y.numpy(),
            max_value=pool.max_value,
            splits=dict(splits),
        )

    @functools.cached_property
    def fingerprint(self) -> tuple:
        """What device copies of this bundle's arrays are copies of. A reused worker keeps them between
        trials of one search; a bundle of other contents but the same dataset and shapes (a relabelled
        copy) must not be handed them, so the contents count (CRC-32: 15–19 ms for MNIST, once per bundle; bench/RESULTS.md)."""
        arrays = (self.train_x, self.train_y, self.test_x, self.test_y)
        return (self.dataset, *(zlib.crc32(np.ascontiguousarray(a)) for a in arrays), tuple(sorted(self.splits)))


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(experiment meta, method hyperparameters) of a trial config."""
    meta = {k: config[k] for k in META_KEYS if k in config}
    hparams = {k: v for k, v in config.items() if k not in META_KEYS}
    return meta, hparams


# With reuse_actors=True the same worker runs many trials: keep the dataset on the device between them.
_DEVICE_CACHE: dict[tuple, torch.Tensor] = {}


def _on_device(bundle: DataBundle, part: str, device: torch.device, size: int) -> torch.Tensor:
    key = (bundle.fingerprint, part, str(device), size)
    if key not in _DEVICE_CACHE:
        if any(k[0] != key[0] for k in _DEVICE_CACHE):  # another bundle: free the old one's copies
            _DEVICE_CACHE.clear()
        x = torch.from_numpy(np.array(getattr(bundle, part))).to(device)
        if part.endswith("_x") and x.shape[-1] != size:
            x = resize(x, size)
        _DEVICE_CACHE[key] = x
    return _DEVICE_CACHE[key]


def run_seed(split: int, seed: int) -> int:
    """One integer seed per (split, seed) so runs of a trial differ but repeat exactly."""
    return 1_000_003 * seed + split


@dataclass
class Run:
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
        return f"split{self.split.split}_seed{self.seed}"

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

    def metric_names(self, phase: str) -> list[str]:
        """The names ``osr_metrics(phase)`` reports, for weights that cannot be scored: computed from the
        stand-in outputs the method's ``InvalidCellError`` carries, never from a value to report."""
        stand_in: dict[str, dict[str, np.ndarray]] = {}
        for part in ("known", "unknown"):
            try:
                stand_in[part] = self.evaluate(f"{phase}_{part}")
            except InvalidCellError as err:
                if err.stand_in is None:
                    raise
                stand_in[part] = err.stand_in
        return list(self.osr_metrics(phase, outputs=stand_in)[0])

    def osr_metrics(self, phase: str, reference: Mapping[str, np.ndarray] | None = None,
                    outputs: Mapping[str, dict[str, np.ndarray]] | None = None
                    ) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
        """Metrics on the balanced known/unknown sets of ``phase`` (val or test), all from one place.

        ``reference`` holds the known validation outputs that every score's macro-F1 threshold is
        chosen on (protocol.md §8.5); without it, ``phase``'s own knowns (validation itself). A
        companion view of the outputs (``<view>/<name>``, e.g. the adversarial method's in-run
        baseline) gets the same metrics as ``<phase>_<view>_<metric>``, and each of them its paired
        difference from the method's own as ``<phase>_delta_<metric>`` (method − companion). ``outputs``:
        these instead of the current weights' (``metric_names``)."""
        outputs = self.outputs(phase) if outputs is None else outputs
        labels = self.y[f"{phase}_known"].cpu().numpy()
        known, unknown = output_views(outputs["known"]), output_views(outputs["unknown"])
        references = known if reference is None else output_views(reference)
        metrics = self.view_metrics(phase, known[""], unknown[""], labels, references[""])
        for view in known.keys() - {""}:
            companion = self.view_metrics(phase, known[view], unknown[view], labels, references[view])
            for name, value in companion.items():
                metric = name.removeprefix(f"{phase}_")
                metrics[f"{phase}_{view}_{metric}"] = value
                if not metric.startswith("threshold"):
                    metrics[f"{phase}_delta_{metric}"] = metrics[name] - value
        return metrics, outputs

    def view_metrics(self, phase: str, known: Mapping[str, np.ndarray], unknown: Mapping[str, np.ndarray],
                     labels: np.ndarray, reference: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Every open-set metric of one view's known and unknown outputs, named ``<phase>_<metric>``."""
        metrics = osr_metrics(known["pred"], labels, known["score"], unknown["score"], prefix=f"{phase}_")
        for name in known:
            if not (name == "score" or name.startswith("score_")):
                continue
            if name != "score" and np.array_equal(known[name], known["score"]):
                continue  # the primary score under its own name
            suffix = "" if name == "score" else f"_{name[6:]}"
            if suffix:
                metrics[f"{phase}_auroc{suffix}"] = auroc(known[name], unknown[name])
            metrics.update(self.f1_metrics(known, unknown, labels, known[name], unknown[name], reference[name],
                                           prefix=f"{phase}_", suffix=suffix, native=name == "score"))
        metrics.update({f"{phase}_{k}": v for k, v in self.method.diagnostics(dict(known), labels).items()})
        return metrics

    def cell_metrics(self, phase: str, outputs: Mapping[str, Mapping[str, np.ndarray]], cell: Any,
                     reference: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
        """Open-set metrics of one post-hoc ``cell``; with ``reference`` (validation outputs, rescored
        here) also the thresholded and native macro-F1. Raises if the cell cannot be scored."""
        known, unknown = self.cell_scores(outputs, cell)
        labels = self.y[f"{phase}_known"].cpu().numpy()
        metrics = osr_metrics(outputs["known"]["pred"], labels, known["score"], unknown["score"])
        if reference is not None:
            # The cell's score and native decision over the outputs; ``pred`` stays the logits' argmax.
            known, unknown = {**outputs["known"], **known}, {**outputs["unknown"], **unknown}
            metrics.update(self.f1_metrics(known, unknown, labels, known["score"], unknown["score"],
                                           self.method.score_cell(reference, cell)["score"]))
        return metrics

    def cell_scores(self, outputs: Mapping[str, Mapping[str, np.ndarray]], cell: Any
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``score_cell`` of the known and the unknown outputs. Raises if the cell cannot be scored."""
        return self.method.score_cell(outputs["known"], cell), self.method.score_cell(outputs["unknown"], cell)

    def f1_metrics(self, known: Mapping[str, np.ndarray], unknown: Mapping[str, np.ndarray], labels: np.ndarray,
                   score_known: np.ndarray, score_unknown: np.ndarray, score_reference: np.ndarray,
                   prefix: str = "", suffix: str = "", native: bool = True) -> dict[str, float]:
        """Macro-F1 and unknown-class F1 over K+1 at τ accepting 95% of ``score_reference`` (the known
        validation images, protocol.md §8.5), τ itself, and — with ``native`` where the outputs carry
        OpenMax's own K+1 decision — the F1s of that rule."""
        num_known = len(self.split.known)
        tau = threshold_at_tpr(score_reference, 0.95)
        metrics = {f"{prefix}threshold{suffix}": tau}
        metrics.update(open_set_f1(known["pred"], labels, unknown["pred"], num_known, score_known, score_unknown, tau,
                                   prefix=prefix, suffix=suffix))
        if native and "pred_native" in known:
            metrics.update(open_set_f1(known["pred_native"], labels, unknown["pred_native"], num_known,
                                       prefix=prefix, suffix="_native"))
        return metrics


def training_policy(method_cls: type[Method], config: Any, dataset: str) -> AugmentPolicy | None:
    """The batch augmentation a run of ``config`` trains with on ``dataset``: its ``aug_mode`` where the
    config has one, else the method's ``default_aug_mode``."""
    return policy_for(getattr(config, "aug_mode", method_cls.default_aug_mode), dataset,
                      getattr(config, "aug_magnitude", 9))


def training_indices(split: Split, final_train_fraction: float = PROTOCOL_TRAIN_FRACTION) -> np.ndarray:
    """The images a run trains on (indices into the pool's training set): the 80% partition
    ``split.train``, or at 1.0 every known-class training image ``split.train_full`` (a superset of
    ``train`` ∪ ``val_known``: ``val_known`` is the hold-out after balancing against the unknowns)."""
    if final_train_fraction not in FINAL_TRAIN_FRACTIONS:
        raise ValueError(f"{TRAIN_FRACTION_KEY} must be one of {FINAL_TRAIN_FRACTIONS}, got {final_train_fraction!r}")
    return split.train_full if final_train_fraction == ALL_KNOWN_TRAIN_FRACTION else split.train


def build_run(method_name: str, hparams: Mapping[str, Any], bundle: DataBundle, split_id: int, seed: int,
              device: torch.device, final_train_fraction: float = PROTOCOL_TRAIN_FRACTION) -> Run:
    method_cls = get_method(method_name)
    config = method_cls.Config.from_dict(hparams)
    split = bundle.splits[split_id]
    native = bundle.train_x.shape[-1]
    size = method_cls.input_size(config, bundle.dataset, native)
    train_x = _on_device(bundle, "train_x", device, size)
    test_x = _on_device(bundle, "test_x", device, size)
    train_y = _on_device(bundle, "train_y", device, size)
    test_y = _on_device(bundle, "test_y", device, size)

    def take(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return x[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(device)]

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

    torch.manual_seed(run_seed(split_id, seed))  # model initialisation, then the run's own RNG stream
    generator = torch.Generator(device=device)
    generator.manual_seed(run_seed(split_id, seed))
    info = DataInfo(channels=train_x.shape[1], image_size=size, num_known=len(split.known), device=device,
                    dataset=bundle.dataset)
    policy = training_policy(method_cls, config, bundle.dataset)
    method = method_cls(config, info)
    return Run(
        split=split,
        seed=seed,
        method=method,
        policy=policy,
        normalizer=(fit_normalizer(xs["train"], bundle.max_value) if method_cls.standardise_inputs
                    else unit_scaler(info.channels, bundle.max_value)),
        generator=generator,
        x=xs,
        y=ys,
        targets=method.training_targets(ys["train"]),
        cuda_rng_state=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    )


class TrialRuns:
    """All (split, seed) runs of one trial config, advanced together one epoch at a time so that the
    reported validation metric is the mean over splits at equal fidelity (what ASHA compares)."""

    def __init__(self, config: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> None:
        self.meta, self.hparams = split_config(config)
        self.method_name = self.meta["method"]
        self.dataset = self.meta["dataset"]
        # protocol.md §7 is about the open-set splits: other tasks have no such fraction (None).
        fraction = float(self.meta.get(TRAIN_FRACTION_KEY, PROTOCOL_TRAIN_FRACTION))
        self.final_train_fraction: float | None = fraction if get_method(self.method_name).task == "osr" else None
        self.runs = self.build_runs(self.hparams, bundle, device)
        self.config = self.runs[0].method.config
        self.epochs: int = self.config.epochs
        self.batch_size: int = self.config.batch_size

    def build_runs(self, hparams: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> list[Run]:
        fraction = self.final_train_fraction or PROTOCOL_TRAIN_FRACTION
        return [build_run(self.method_name, hparams, bundle, int(s), int(seed), device, fraction)
                for s in self.meta["splits"] for seed in self.meta.get("seeds", [0])]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train every run for one epoch and validate; returns the metrics a trial reports."""
        per_run: dict[str, dict[str, float]] = {}
        grid: dict[str, list[float]] = {}
        unscorable: dict[str, str] = {}  # run key -> why OpenMax could not score it
        for run in self.runs:
            logs = run.train_epoch(self.batch_size, epoch)
            try:
                val, outputs = run.osr_metrics("val")
            except InvalidCellError as err:
                # A half-trained model OpenMax cannot fit (e.g. a class with no correctly classified
                # training image yet). The final evaluation raises this error; mid-search the epoch is
                # reported as NaN with the reason, which ASHA and Optuna take as "no information".
                unscorable[run.key] = str(err)
                # Every validation metric stays in the report, NaN: Tune refuses a result without the
                # objective, and a curve with holes reads as a metric that was never measured.
                per_run[run.key] = {**logs, **dict.fromkeys(run.metric_names("val"), math.nan)}
                for cell in run.method.posthoc_cells():
                    grid.setdefault(cell.key, []).append(math.nan)
                continue
            per_run[run.key] = {**logs, **val}
            for cell in run.method.posthoc_cells():
                grid.setdefault(cell.key, []).append(_cell_value(run, outputs, cell))
        result: dict[str, Any] = {**_mean_over_runs(per_run), "epoch": epoch + 1, "runs": per_run,
                                  "val_unscorable_runs": len(unscorable)}
        if unscorable:
            result["unscorable_reason"] = "; ".join(f"{key}: {why}" for key, why in unscorable.items())
        if grid:
            result.update(self._grid_report(grid, result["val_auroc"]))
        return result

    def validation_names(self) -> list[str]:
        """The names of the validation metrics an epoch report carries (``val_*`` and the post-hoc
        grid's), from the current weights' stand-in outputs where they cannot be scored: what a trial
        reports as NaN when its own code fails before it reported an epoch (trainables/trial.py)."""
        names: set[str] = set()
        for run in self.runs:
            names.update(run.metric_names("val"))
        cells = self.runs[0].method.posthoc_cells()
        if cells:
            names.update(self._grid_report({cell.key: [math.nan] for cell in cells}, math.nan))
        return sorted(names)

    def _grid_report(self, grid: Mapping[str, list[float]], sampled_auroc: float) -> dict[str, Any]:
        """Validation AUROC of every post-hoc cell (mean over runs; NaN where any run's fit was
        invalid), the best cell, and — for ``posthoc_objective = grid_best`` — the objective."""
        means = {key: float(np.mean(values)) for key, values in grid.items()}
        report: dict[str, Any] = {f"posthoc/{key}/val_auroc": v for key, v in means.items()}
        valid = {k: v for k, v in means.items() if math.isfinite(v)}
        report["posthoc_invalid_cells"] = len(means) - len(valid)
        report["posthoc_best_val_auroc"] = math.nan  # no cell valid: present all the same, like every metric
        if valid:
            best = max(valid, key=lambda k: valid[k])
            report["posthoc_best_cell"] = best
            report["posthoc_best_val_auroc"] = valid[best]
        if getattr(self.config, "posthoc_objective", "sampled") == "grid_best":
            report["val_auroc_sampled"] = sampled_auroc
            report["val_auroc"] = report.get("posthoc_best_val_auroc", math.nan)
        return report

    def test(self) -> TestOutcome:
        """Test metrics per run (balanced sets, plus accuracy on every known test image), the per-sample
        test scores and the post-hoc grid. Never reported to the searcher; thresholds and the grid
        cell are chosen on validation outputs of the same final models."""
        records: list[dict[str, Any]] = []
        frames = []
        grid_rows: list[dict[str, Any]] = []
        for run in self.runs:
            val = run.outputs("val")
            metrics, outputs = _test_metrics(run, val["known"])
            records += _records(run, "test", metrics)
            frames.append(_score_frame(run, outputs))
            for cell in run.method.posthoc_cells():
                for phase, out in (("val", val), ("test", outputs)):
                    row = {"split": run.split.split, "seed": run.seed, "phase": phase, "cell": cell.key,
                           **dataclasses.asdict(cell), "invalid_reason": ""}
                    try:
                        row.update(run.cell_metrics(phase, out, cell, reference=val["known"]))
                    except InvalidCellError as err:
                        row["invalid_reason"] = str(err)
                    grid_rows.append(row)
        outcome = TestOutcome(records, pd.concat(frames, ignore_index=True))
        if grid_rows:
            outcome.grid = pd.DataFrame(grid_rows)
            sampled = getattr(self.runs[0].method, "sampled_cell", None)
            outcome.posthoc = select_posthoc_cell(outcome.grid, sampled().key if sampled else None)
            if "selected" in outcome.posthoc:
                records += posthoc_records(outcome.grid, outcome.posthoc["selected"])
        return outcome

    def write_epoch(self, trial_dir: Path, epoch: int) -> None:
        """Per-epoch files of the task in the trial folder (epoch 0 = the initial weights). OSR has none."""
        return None

    def write_final(self, trial_dir: Path, trial_id: str, last_epoch: Mapping[str, Any]) -> dict[str, Any]:
        """Writes final_metrics.json, test_scores.parquet and, for methods with post-hoc parameters,
        posthoc_grid.parquet (val and test metrics of every cell and run) into the trial folder. A final
        model the method cannot score (OpenMax without a valid Weibull fit) is a result too: only
        final_metrics.json, with status "unscorable" and the reason."""
        try:
            outcome = self.test()
        except InvalidCellError as err:
            return self.write_unscorable(trial_dir, trial_id, str(err))
        return self.write_outcome(trial_dir, trial_id, last_epoch, outcome)

    def _final_document(self, trial_id: str, status: str) -> dict[str, Any]:
        """What every final_metrics.json holds beside its records."""
        final = {
            "trial_id": trial_id,
            "method": self.method_name,
            "dataset": self.dataset,
            "config": self.config.to_dict(),
            "derived": self.derived(),
            "setting": self.setting(),
            "conventions": self.runs[0].split.convention,
            "status": status,
        }
        if self.final_train_fraction is not None:
            final[TRAIN_FRACTION_KEY] = self.final_train_fraction
        return final

    def write_outcome(self, trial_dir: Path, trial_id: str, last_epoch: Mapping[str, Any],
                      outcome: TestOutcome) -> dict[str, Any]:
        """The trial's end files from its test outcome and last validation; final_metrics.json last and
        atomically, since its presence is what marks the trial ended."""
        records = outcome.records
        for key, values in last_epoch["runs"].items():
            run = next(r for r in self.runs if r.key == key)
            records += _records(run, "val", {k: v for k, v in values.items() if k.startswith("val_")})
        final = {**self._final_document(trial_id, FINISHED), "records": records}
        if outcome.posthoc:
            final["posthoc"] = outcome.posthoc
        trial_dir.mkdir(parents=True, exist_ok=True)
        outcome.scores.to_parquet(trial_dir / "test_scores.parquet", index=False)
        if outcome.grid is not None:
            outcome.grid.to_parquet(trial_dir / GRID_FILE, index=False)
        _write_final_file(trial_dir, final)
        return final

    def write_unscorable(self, trial_dir: Path, trial_id: str, reason: str) -> dict[str, Any]:
        """final_metrics.json of a final model that cannot be scored: the reason and no metric (no
        scores, no grid), so nothing downstream averages it in."""
        final = {**self._final_document(trial_id, UNSCORABLE), "reason": reason, "records": []}
        trial_dir.mkdir(parents=True, exist_ok=True)
        _write_final_file(trial_dir, final)
        return final

    def setting(self) -> dict[str, Any]:
        """"reference setting" or "reduced setting" and what differs (methods/presets.py). Run-level
        values a preset pins (``final_train_fraction``) count only where this trial records them."""
        method = self.runs[0].method
        run = {k: getattr(self, k) for k in RUN_SETTING_KEYS if getattr(self, k, None) is not None}
        return describe_setting(type(method), method.config, method.info, run)

    def derived(self) -> dict[str, Any]:
        """Values that follow from the config, written beside it in final_metrics.json."""
        return self.runs[0].method.derived()

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            # cuda_rng: dropout on a GPU draws from the CUDA RNG, not the CPU one (None on a CPU run).
            "runs": {r.key: {"method": r.method.state_dict(), "generator": r.generator.get_state(),
                             "rng": r.rng_state, "cuda_rng": r.cuda_rng_state} for r in self.runs},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Restores every run; returns the last completed epoch."""
        for run in self.runs:
            saved = state["runs"][run.key]
            run.method.load_state_dict(saved["method"])
            run.weights_changed()
            run.generator.set_state(saved["generator"])
            run.rng_state = saved["rng"]
            run.cuda_rng_state = saved.get("cuda_rng")  # absent from checkpoints written before it was kept
        return int(state["epoch"])


@dataclass
class TestOutcome:
    records: list[dict[str, Any]]
    scores: pd.DataFrame
    grid: pd.DataFrame | None = None
    posthoc: dict[str, Any] = field(default_factory=dict)


class AllKnownTrialRuns(TrialRuns):
    """The runs of a final re-run at ``final_train_fraction = 1.0`` (protocol.md §7): every known-class
    training image is trained on, the validation hold-out included, as the published numbers were.

    Its validation knowns are no longer held out, so no number of it is presented as validation: each
    epoch's ``val_*`` keys are NaN (Tune's metric stays present; ASHA and Optuna take NaN as "no
    information") and their trained-on values move to ``trained_on_val_*``, out of every table and curve;
    the per-epoch post-hoc grid is left out. The test reports only threshold-free metrics, and the
    post-hoc cell is fixed to the one selected on validation in the 80% runs (``posthoc_cell``) rather
    than chosen again."""

    TRAINED_ON = "trained_on_"

    def __init__(self, config: Mapping[str, Any], bundle: DataBundle, device: torch.device) -> None:
        super().__init__(config, bundle, device)
        if self.final_train_fraction != ALL_KNOWN_TRAIN_FRACTION:
            raise ValueError(f"{type(self).__name__} is for {TRAIN_FRACTION_KEY} {ALL_KNOWN_TRAIN_FRACTION} "
                             "on an open-set method")
        self.posthoc = self._fix_posthoc_cell(self.meta.get("posthoc_cell"), bundle, device)

    def _fix_posthoc_cell(self, key: str | None, bundle: DataBundle, device: torch.device) -> dict[str, Any]:
        """Scores with the post-hoc cell ``key`` (the method config's own cell where the re-run names
        none), rebuilding the runs with that cell's values in the config; what final_metrics.json records
        about it. Post-hoc values do not touch training, so the rebuilt runs train the same."""
        method = self.runs[0].method
        cells = {cell.key: cell for cell in method.posthoc_cells()}
        if not cells:
            return {}
        sampled = getattr(method, "sampled_cell", None)
        own = sampled().key if sampled else None
        if key is None:
            if own is None:
                raise ValueError(f"{self.method_name} has post-hoc cells but no configured one: give posthoc_cell")
            return {"selected": own, "fixed": True,
                    "selection": "the config's own cell: the re-run named no cell selected on validation"}
        if key not in cells:
            raise ValueError(f"posthoc_cell {key!r} is not a post-hoc cell of {self.method_name} "
                             f"(e.g. {next(iter(cells))!r})")
        if key != own:
            values = dataclasses.asdict(cells[key])
            unknown = set(values) - {f.name for f in dataclasses.fields(method.config)}
            if unknown:
                raise ValueError(f"{self.method_name}'s post-hoc cells set {sorted(unknown)}, which its config lacks")
            self.hparams = {**self.hparams, **values}
            self.runs = self.build_runs(self.hparams, bundle, device)
            self.config = self.runs[0].method.config
        return {"selected": key, "fixed": True, "selection": "fixed to the cell selected on validation in the 80% runs"}

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        return self.trained_on_validation(super().train_epoch(epoch))

    @classmethod
    def trained_on_validation(cls, result: Mapping[str, Any]) -> dict[str, Any]:
        """An epoch report with every validation number renamed ``trained_on_val_*``; the top-level
        ``val_*`` keys stay, as NaN, for Tune's metric check."""
        out: dict[str, Any] = {}
        for key, value in result.items():
            if key.startswith("posthoc"):
                continue
            if key.startswith("val_"):
                out[key] = math.nan
                out[cls.TRAINED_ON + key] = value
            elif key == "runs":
                out[key] = {run: {(cls.TRAINED_ON + k if k.startswith("val_") else k): v for k, v in values.items()}
                            for run, values in value.items()}
            else:
                out[key] = value
        return out

    def test(self) -> TestOutcome:
        """Threshold-free test metrics per run and the per-sample scores; no validation outputs are
        read (thresholds would come from trained-on images) and no post-hoc grid is scored."""
        records: list[dict[str, Any]] = []
        frames = []
        for run in self.runs:
            metrics, outputs = _test_metrics(run, None)
            records += _records(run, "test", {k: v for k, v in metrics.items()
                                              if is_threshold_free(k.removeprefix("test_"))})
            frames.append(_score_frame(run, outputs))
        return TestOutcome(records, pd.concat(frames, ignore_index=True), posthoc=dict(self.posthoc))


def _test_metrics(run: Run, reference: Mapping[str, np.ndarray] | None
                  ) -> tuple[dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """Test metrics of one run on the balanced sets (thresholds from ``reference``, see ``osr_metrics``)
    plus accuracy on every known test image, and the balanced sets' outputs."""
    metrics, outputs = run.osr_metrics("test", reference=reference)
    full = output_views(run.evaluate("test_known_full"))
    labels = run.y["test_known_full"].cpu().numpy()
    metrics["test_acc_full"] = accuracy(labels, full[""]["pred"])
    for view in full.keys() - {""}:
        metrics[f"test_{view}_acc_full"] = accuracy(labels, full[view]["pred"])
        metrics["test_delta_acc_full"] = metrics["test_acc_full"] - metrics[f"test_{view}_acc_full"]
    return metrics, outputs


def _write_final_file(trial_dir: Path, final: Mapping[str, Any]) -> None:
    """final_metrics.json, atomically: a reader never sees half of it."""
    tmp = trial_dir / f"{FINAL_FILE}.tmp"
    tmp.write_text(json.dumps(final, indent=1, sort_keys=True))
    tmp.replace(trial_dir / FINAL_FILE)


def _records(run: Run, phase: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"split": run.split.split, "seed": run.seed, "phase": phase,
             "metric": name.removeprefix(f"{phase}_"), "value": float(value)} for name, value in metrics.items()]


def _cell_value(run: Run, outputs: Mapping[str, Mapping[str, np.ndarray]], cell: Any) -> float:
    try:
        known, unknown = run.cell_scores(outputs, cell)
    except InvalidCellError:
        return math.nan  # an invalid Weibull fit in this cell: the cell is out, the others proceed (§7.5)
    return auroc(known["score"], unknown["score"])


def _mean_over_runs(per_run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean over runs of every metric any run reports; NaN where some run lacks it (as where some
    run's value is NaN), so no metric vanishes from a report because one run could not be scored."""
    names = set().union(*(set(v) for v in per_run.values()))
    return {n: float(np.mean([v.get(n, math.nan) for v in per_run.values()])) for n in sorted(names)}


def _score_frame(run: Run, outputs: Mapping[str, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    frames = []
    for part in ("known", "unknown"):
        out = outputs[part]
        idx = getattr(run.split, f"test_{part}")
        frame = pd.DataFrame({
            "split": run.split.split,
            "seed": run.seed,
            "test_index": np.asarray(idx, dtype=np.int64),
            "is_unknown": part == "unknown",
            "label": run.y[f"test_{part}"].cpu().numpy(),
            "pred": out["pred"],
        })
        for name, values in out.items():
            # Every per-image score and prediction (members' and companions' too), not 2-D features.
            if name not in ("pred", "score") and not name.endswith("/score") and np.ndim(values) == 1:
                frame[name] = values
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
