"""What every method supplies, and the supervised training loop DIFAIR and the baseline share."""

from __future__ import annotations

import abc
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from data.augment import AugmentPolicy, policy_for
from data.pools import TRUNK_INPUT_SIZE
from methods.backbones import BACKBONES, resolve_backbone
from methods.execution import PRECISIONS, Execution
from methods.optim import DecoupledSGD, cycle_shape, lr_at_epoch

if typing.TYPE_CHECKING:
    from methods.presets import Preset


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the trial must end as errored with this reason."""


class InvalidCellError(ValueError):
    """A post-hoc setting cannot score this model (e.g. an invalid Weibull fit); the message says why.

    Raised by ``Method.evaluate``, it carries ``stand_in``: the outputs evaluation did compute, with a
    finite stand-in for every score it could not. It only names the metrics an unscorable epoch reports
    (as NaN, trainables/runs.py); no value of it is ever reported."""

    stand_in: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class DataInfo:
    channels: int
    image_size: int
    num_known: int
    device: torch.device = torch.device("cpu")
    dataset: str = ""


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config key: each bound open or closed, None when unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    example: float | None = None  # shown for a key whose default (None) shows no valid value

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
BELOW_ONE = Range(0, 1, high_open=True)  # [0, 1)
UP_TO_ONE = Range(0, 1, low_open=True)  # (0, 1]

# The valid range of the numeric keys many methods share, by name. A method config declares the ranges of
# its own numeric keys (and where its range of a shared key differs) in its class attribute ``ranges``, so
# that a value out of range is refused naming the key, its range and an example (the methods' own
# __post_init__ checks stay, for configs built directly). tests/test_bad_input.py checks that every
# numeric key of every registered method has a range.
SHARED_RANGES: dict[str, Range] = {
    "lr": POSITIVE, "momentum": BELOW_ONE, "weight_decay": NON_NEGATIVE, "batch_size": AT_LEAST_ONE,
    "epochs": AT_LEAST_ONE, "warmup_epochs": NON_NEGATIVE, "restarts": NON_NEGATIVE, "dropout": BELOW_ONE,
    "aug_magnitude": Range(0, 30),
}
# What PyYAML (YAML 1.1) leaves a string but YAML 1.2 reads as a float: exponents without a dot or sign.
_YAML12_EXPONENT_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


def key_range(config_cls: type, key: str) -> Range | None:
    """The valid range of numeric config key ``key`` of ``config_cls``: the nearest ``ranges`` along its
    classes that names it, else the shared one; None for a key without one."""
    for klass in config_cls.__mro__:
        found = vars(klass).get("ranges", {}).get(key)
        if found is not None:
            return found
    return SHARED_RANGES.get(key)


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's frozen config. Defaults are the published ones; unknown keys are rejected.
    ``ranges``: the valid range of each numeric key the class declares (see ``SHARED_RANGES``)."""

    ranges: ClassVar[dict[str, Range]] = {}
    # How the networks run, for every method (methods/execution.py), not a hyperparameter: the precision of
    # their forward passes (``auto``: bf16 on CUDA, fp32 on a CPU) and whether they are torch.compile'd.
    EXECUTION_KEYS: ClassVar[tuple[str, ...]] = ("precision", "compile")

    precision: str = "auto"
    compile: bool = False

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MethodConfig:
        """The config of ``values`` (YAML, JSON, Optuna). A wrong value raises ValueError naming the key,
        what it must be (its type and valid range) and an example."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys {unknown}; valid keys: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {}
        for key, value in values.items():
            try:
                coerced[key] = _coerce(value, hints[key])
            except _Refused as refused:
                raise ValueError(_refusal(cls, key, hints[key], value, finite=refused.finite)) from None
            rng = key_range(cls, key)
            number = coerced[key]
            if (rng is not None and isinstance(number, int | float) and not isinstance(number, bool)
                    and not rng.contains(number)):
                raise ValueError(_refusal(cls, key, hints[key], number))
        precision = coerced.get("precision", "auto")
        if precision not in PRECISIONS:  # checked here: the methods' own __post_init__ do not chain to this one
            raise ValueError(f"config key 'precision': precision must be one of {', '.join(PRECISIONS)}; got "
                             f"{precision!r}; e.g. precision: auto")
        try:
            return cls(**coerced)
        except ValueError as err:  # a method's own check (a choice, or keys that must agree)
            raise ValueError(_explain(cls, coerced, err)) from None

    def to_dict(self) -> dict[str, Any]:
        # Lists, not tuples: YAML's safe dumper and JSON round-trip lists only. The execution keys last:
        # they are the base class's fields, which dataclasses would put first.
        values = dataclasses.asdict(self)
        ordered = [k for k in values if k not in self.EXECUTION_KEYS] + list(self.EXECUTION_KEYS)
        return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in ordered}

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


class _Refused(Exception):
    """A value of the wrong type for its key (``finite``: a number, but NaN or infinite)."""

    def __init__(self, finite: bool = False) -> None:
        super().__init__()
        self.finite = finite


def _coerce(value: Any, hint: Any) -> Any:
    # YAML and Optuna hand back ints for floats and numpy scalars; keep configs plain Python.
    if isinstance(value, np.generic):
        value = value.item()
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        return None if value is None else _coerce(value, next(a for a in args if a is not type(None)))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise _Refused
        return tuple(_coerce(v, args[0]) for v in value)
    if hint is float:
        if isinstance(value, str) and _YAML12_EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Refused
        if not math.isfinite(value):  # NaN passes every `x <= 0` check a method makes
            raise _Refused(finite=True)
        return float(value)
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Refused
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise _Refused
    return value


def _expected(cls: type, key: str, hint: Any) -> str:
    """What a value of ``key`` must be: its type, and for a number its range."""
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if typing.get_origin(base) is tuple:
        text = f"a list of {typing.get_args(base)[0].__name__}"
    elif base is bool:
        text = "true or false"
    else:
        rng = key_range(cls, key) if base in (int, float) else None
        text = getattr(base, "__name__", str(base)) + (f" {rng.text()}" if rng is not None else "")
    return text + (" or null" if optional else "")


def _example(cls: type, key: str) -> str:
    """``key: value`` as a config file spells it: the key's default, or its range's example."""
    value = next(f.default for f in dataclasses.fields(cls) if f.name == key)
    rng = key_range(cls, key)
    if (value is None or value is dataclasses.MISSING) and rng is not None and rng.example is not None:
        value = rng.example
    return f"{key}: {_yaml_value(value)}"


def _yaml_value(value: Any) -> str:
    if value is None or value is dataclasses.MISSING:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return f"[{', '.join(_yaml_value(v) for v in value)}]"
    return str(value)


def _refusal(cls: type, key: str, hint: Any, value: Any, finite: bool = False) -> str:
    expected = ("a finite " if finite else "") + _expected(cls, key, hint)
    return f"config key {key!r} must be {expected}, e.g. {_example(cls, key)}; got {value!r}"


def _explain(cls: type, values: dict[str, Any], err: ValueError) -> str:
    """``err`` of a method's own check, led by the key it is about and followed by an example: the key
    whose value alone (the others at their defaults) fails the same way, else the first that fails alone."""
    failing: dict[str, str] = {}
    for key, value in values.items():
        try:
            cls(**{key: value})
        except ValueError as alone:
            failing[key] = str(alone)
    if not failing:
        return str(err)  # only the combination is wrong: the check's message names the keys
    key = next((k for k, m in failing.items() if m == str(err)),
               next((k for k in failing if k in str(err)), next(iter(failing))))
    return f"config key {key!r}: {err}; e.g. {_example(cls, key)}"


LR_SCHEDULES = ("cosine_restarts", "cosine_restarts_reference")


@dataclass(frozen=True)
class TrainRecipe(MethodConfig):
    """The recipe DIFAIR and its matched CE baseline share (difair.md §8, §10; baselines.md §2)."""

    # "vgg32" | "classifier32" (Vaze's) | "small" | "auto": small CNN below 32 px, VGG32 otherwise
    backbone: str = "auto"
    dropout: float = 0.2
    lr: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 1e-4  # decoupled, on every parameter
    batch_size: int = 128
    epochs: int = 600
    warmup_epochs: int = 10
    restarts: int = 2
    lr_schedule: str = "cosine_restarts"  # or "cosine_restarts_reference"
    aug_mode: str = "torchvision"
    aug_magnitude: int = 9

    def __post_init__(self) -> None:
        if self.backbone not in ("auto", *BACKBONES):
            raise ValueError(f"backbone must be auto, {', '.join(BACKBONES)}; got {self.backbone!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1 or self.warmup_epochs < 0:
            raise ValueError(f"lr must be > 0, batch_size and epochs >= 1, warmup_epochs >= 0; got lr {self.lr}, "
                             f"batch_size {self.batch_size}, epochs {self.epochs}, warmup_epochs {self.warmup_epochs}")


class Method(abc.ABC):
    """One trained model of one method on one split. Plain PyTorch, no Ray."""

    name: ClassVar[str]
    # The task it solves, by name (trainables/tasks.py): its trial runner, splits, metrics and default
    # objective. "osr" (open-set), "gate_clustering" (ClustNet) or "clustering".
    task: ClassVar[str] = "osr"
    Config: ClassVar[type[MethodConfig]]
    # The search objective unless --metric says otherwise; None: the task's.
    objective: ClassVar[str | None] = None
    # What the report advises when no final model could be scored (``InvalidCellError``).
    unscorable_advice: ClassVar[str] = "try more epochs (--max-epochs) or a higher learning rate"
    datasets: ClassVar[tuple[str, ...] | None] = None  # the datasets it runs on; None: all of them
    search_seeds: ClassVar[int] = 1  # seeds per trial in a search unless --seeds says otherwise
    # False: inputs are x / max_value in [0, 1] instead of standardised by the training images' statistics.
    standardise_inputs: ClassVar[bool] = True
    # An open-set method's main score (its outputs' "score"); the others are "score_<name>". None: the
    # method has no open-set score (the clustering tasks).
    primary_score: ClassVar[str | None] = None

    # Whether its networks' inputs have fixed shapes (images of one size; batches of one size but the
    # last): then cuDNN autotunes its convolutions once per shape (trainables/split_run.py).
    fixed_input_shapes: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, info: DataInfo) -> None:
        self.config = config
        self.info = info
        # The precision (resolved for the device), compile and gradient scaler every network runs with.
        self.execution = Execution(config.precision, info.device, config.compile)

    def run_network(self, module: torch.nn.Module, *inputs: Any, **kwargs: Any) -> Any:
        """``module(*inputs)`` at the run's precision, floating outputs in fp32 (methods/execution.py):
        how a method runs its networks in training, evaluation and BatchNorm passes alike."""
        return self.execution.run(module, *inputs, **kwargs)

    @classmethod
    def input_size(cls, config: MethodConfig, dataset: str, native_size: int) -> int:
        """Side of the square images the model is fed: the dataset's own, or for a 32-px trunk the side
        the protocol resizes it to (data/pools.py ``TRUNK_INPUT_SIZE``: MNIST 28 → 32, difair.md §9.1)."""
        if resolve_backbone(getattr(config, "backbone", "auto"), native_size) == "small":
            return native_size
        return TRUNK_INPUT_SIZE.get(dataset, native_size)

    @classmethod
    def presets(cls, dataset: str) -> dict[str, Preset]:
        """The spec's published settings on ``dataset`` by name (methods/presets.py): ``reference`` is the
        method's own; a method may add named variants (softmax: ``vaze``). Default: none."""
        return {}

    @classmethod
    def effective_config(cls, config: MethodConfig, info: DataInfo) -> dict[str, Any]:
        """What a run of ``config`` on ``info`` trains, as compared with the reference preset: the config
        with its ``auto`` choices resolved, and the side of the images the model is fed."""
        return {**config.to_dict(), "input_size": info.image_size}

    @classmethod
    def rerun_seeds(cls, dataset: str) -> int:
        """Seeds per split when an exported config is re-run (``--config``) without ``--seeds``."""
        return 3 if dataset == "digits" else 1

    @classmethod
    def augmentation(cls, config: MethodConfig, dataset: str) -> AugmentPolicy | None:
        """The batch augmentation a run of ``config`` trains with on ``dataset`` (None: none): the
        config's ``aug_mode`` (data/augment.py ``policy_for``), ``torchvision`` where the config has
        none. A method that makes its own views returns None."""
        return policy_for(getattr(config, "aug_mode", "torchvision"), dataset, getattr(config, "aug_magnitude", 9))

    def training_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """What the training batches carry for these labels; the task's labels by default. A weakly
        supervised method maps them here, and its ``train_epoch`` never sees anything else."""
        return labels

    @abc.abstractmethod
    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        """One pass over the training batches; returns training logs (at least ``train_loss``)."""

    @abc.abstractmethod
    def evaluate(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        """Raw outputs on unlabelled batches: ``pred`` (N,), ``score`` (N,, higher = more unknown) and
        ``score_<name>`` for every named score (the primary one included). A companion model evaluated
        alongside (the adversarial method's in-run baseline) adds its own outputs as ``<view>/<name>``;
        see ``output_views``."""

    def diagnostics(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """Method-specific validation numbers that need labels (e.g. DIFAIR's hypersphere share)."""
        return {}

    def prepare_evaluation(self, train_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Fit what scoring needs from the labelled training partition (test transform), before
        ``evaluate``; e.g. OpenMax's class means and Weibull tails. Called before every evaluation, so a
        method that needs it caches its fit until the model changes. Default: nothing to fit."""
        return None

    def batchnorm_networks(self) -> list[torch.nn.Module]:
        """The networks whose BatchNorm running statistics ``evaluate`` reads. While those still carry a
        noticeable share of their initial values, they are recomputed over the training partition with
        the current weights before every evaluation (methods/batchnorm.py, trainables/runs.py
        ``Run.evaluate``). Default: none."""
        return []

    def batchnorm_forward(self, x: torch.Tensor) -> None:
        """Runs ``batchnorm_networks`` on one batch of training images (test transform) the way
        ``evaluate`` runs them, so every BatchNorm layer sees the inputs evaluation gives it."""
        raise NotImplementedError(f"{self.name} declares BatchNorm networks but not how they see a batch")

    @classmethod
    def report_notes(cls, metrics: Collection[str]) -> list[str]:
        """Lines the end-of-search report prints under a table of these metric names, to say what the
        method's own names mean (e.g. a companion's ``base_``/``delta_`` rows). Default: none."""
        return []

    def derived(self) -> dict[str, Any]:
        """Values that follow from the config and the budget (e.g. the schedule's actual shape), written
        beside the config in final_metrics.json so a reader sees what really ran. Default: none."""
        return {}

    def posthoc_cells(self) -> list[Any]:
        """Settings that change scoring but not training (crosr_openmax.md §9), evaluated as a grid on
        every checkpoint. Each cell has a ``key`` usable in metric names. Default: none."""
        return []

    def score_cell(self, outputs: Mapping[str, np.ndarray], cell: Any) -> dict[str, np.ndarray]:
        """``score`` (and ``pred_native`` where the method has its own K+1 decision) of ``evaluate``
        outputs re-scored under one post-hoc ``cell``."""
        raise NotImplementedError(f"{self.name} has no post-hoc parameters")

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


VIEW_SEPARATOR = "/"


def output_views(outputs: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``evaluate`` outputs by view: the method's own under ``""``, each companion's (``<view>/<name>``)
    under ``<view>`` with the prefix removed. A companion must name its own ``score``."""
    views: dict[str, dict[str, np.ndarray]] = {"": {}}
    for key, value in outputs.items():
        view, _, name = key.rpartition(VIEW_SEPARATOR)
        views.setdefault(view, {})[name] = value
    for view, named in views.items():
        if view and "score" not in named:
            raise ValueError(f"the {view!r} outputs have no score")
    return views


class SupervisedMethod(Method):
    """A network trained by SGD with decoupled decay on a per-batch loss, the LR set per epoch.

    Subclasses build ``self.model`` and implement ``loss`` and ``outputs``.
    """

    config: TrainRecipe
    primary_score: ClassVar[str]  # every supervised method here is an open-set one

    def __init__(self, config: TrainRecipe, info: DataInfo) -> None:
        super().__init__(config, info)
        # channels_last: 1.8× faster conv training on CPU here (oneDNN) and the layout tensor cores want.
        self.model = self.build_model().to(info.device, memory_format=torch.channels_last)
        self.optimizer = self.build_optimizer()

    @classmethod
    def effective_config(cls, config: MethodConfig, info: DataInfo) -> dict[str, Any]:
        effective = super().effective_config(config, info)
        effective["backbone"] = cls.resolved_backbone(effective["backbone"], info)
        return effective

    @classmethod
    def resolved_backbone(cls, name: str, info: DataInfo) -> str:
        """The trunk ``name`` (possibly ``auto``) builds for ``info``."""
        return resolve_backbone(name, info.image_size)

    def build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return DecoupledSGD(self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    @abc.abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    @abc.abstractmethod
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's loss; the model runs through ``run_network``, so the loss is computed in fp32."""

    @abc.abstractmethod
    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pred`` and ``score_<name>`` tensors for one batch, in eval mode without gradients; the model
        runs through ``run_network``, so the scores are computed in fp32."""

    def lr_for_epoch(self, epoch: int) -> float:
        c = self.config
        return lr_at_epoch(epoch, c.lr, c.epochs, c.warmup_epochs, c.restarts, c.lr_schedule)

    def derived(self) -> dict[str, Any]:
        # A short budget gets fewer restarts and a shorter warm-up than configured (methods/optim.py); a
        # schedule without restarts (another, or a config without the recipe's) has nothing to shorten.
        c = self.config
        if getattr(c, "lr_schedule", None) != "cosine_restarts":
            return {}
        shape = cycle_shape(c.epochs, c.warmup_epochs, c.restarts)
        return {"lr_restarts_used": shape.restarts, "lr_period": shape.period, "warmup_epochs_used": shape.warmup}

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        lr = self.lr_for_epoch(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total = torch.zeros((), device=self.info.device)
        seen = 0
        for x, y in batches:
            loss = self.loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.execution.backward_step(loss, self.optimizer)
            # Accumulate on the device: a .item() per step would sync the GPU every batch.
            total += loss.detach() * len(y)
            seen += len(y)
        train_loss = (total / max(seen, 1)).item()
        if not math.isfinite(train_loss):
            raise DivergedError(f"{self.name}: train loss became {train_loss} at epoch {epoch} (lr {lr:.4g})")
        return {"train_loss": train_loss, "lr": lr}

    def batchnorm_networks(self) -> list[torch.nn.Module]:
        return [self.model]

    def batchnorm_forward(self, x: torch.Tensor) -> None:
        self.run_network(self.model, x)

    @torch.no_grad()
    def collect_outputs(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        """``outputs`` of every batch in eval mode, concatenated into numpy arrays."""
        self.model.eval()
        parts: dict[str, list[torch.Tensor]] = {}
        for x in batches:
            for key, value in self.outputs(x).items():
                parts.setdefault(key, []).append(value.float() if value.is_floating_point() else value)
        return {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}

    def evaluate(self, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
        result = self.collect_outputs(batches)
        result["score"] = result[f"score_{self.primary_score}"]
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
