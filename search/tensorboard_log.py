"""TensorBoard curves of a trial under the names osrtune reports, and its hyperparameters in the HPARAMS tab.

Tune's own TensorBoard logger writes every number of a result under ``ray/tune/``: Tune's bookkeeping
(done, timestamps, iterations_since_restore …) beside the metrics, and each run's values as
``ray/tune/runs/split0_seed0/val_auroc``. This one writes only the numbers the metric catalogue knows
(tests/unit/test_metric_catalogue.py holds every reported name to it), grouped by where they were
measured so that TensorBoard shows one section per group:

- ``val/auroc``, ``val/acc`` …: the trial's validation metrics, the mean over its runs (what ASHA and
  the searcher see); ``train/loss``, ``train/lr`` …: its training logs (a name without a phase is one);
- ``split0/val/auroc``, ``split0/train/loss`` …: each (split, seed) run's own (``split0/seed1/…`` where
  a trial has several seeds);
- ``posthoc/<cell>/val/auroc``, ``posthoc/best_val/auroc``, ``posthoc/invalid_cells``: a post-hoc grid;
- other qualifiers stay with the phase: ``trained_on_val/auroc``.

The step is the epoch (Tune's training_iteration). When a trial ends, its hyperparameters (its scalar
config values, flattened with ``/``) and the ``val/…`` tags go to the HPARAMS tab, which shows each
metric's last value in the trial's curves: the final epoch's validation metrics."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from numbers import Real
from typing import Any

import numpy as np
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from tensorboardX.proto.api_pb2 import Status
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import hparams as tbx_hparams

from results_analysis.catalogue import lookup
from results_analysis.trial_files import RUNS_KEY, parse_run_key

PHASES = ("train", "val", "test")
# The phase of a name without one: what a method's train_epoch logs besides train_loss (lr, ce_c1 …).
TRAINING_PHASE = "train"
# The catalogue's qualifier of a post-hoc grid (``posthoc/<cell>/…``, ``posthoc_best_…``): nothing under
# it is a training log, and an OpenMax grid's many cells get a section of their own.
POSTHOC = "posthoc"
# The group whose tags are the HPARAMS tab's metrics.
HPARAMS_METRIC_GROUP = "val"

# The first phase of a name's qualifier chain (``posthoc_best_`` + ``val`` + ``auroc``); lazy, so that a
# phase word inside the metric name stays there.
_PHASED = re.compile(rf"^(?P<qualifiers>(?:[a-z0-9]+_)*?)(?P<phase>{'|'.join(PHASES)})_(?P<metric>.+)$")


def _phase_tag(name: str, default_phase: str | None) -> str:
    m = _PHASED.match(name)
    if m:
        return f"{m['qualifiers']}{m['phase']}/{m['metric']}"
    return name if default_phase is None else f"{default_phase}/{name}"


def metric_tag(name: str) -> str:
    """The TensorBoard tag of a reported metric name (see the module doc): ``val_auroc`` → ``val/auroc``,
    ``lr`` → ``train/lr``, ``posthoc/<cell>/val_auroc`` → ``posthoc/<cell>/val/auroc``."""
    if name.startswith(POSTHOC + "/"):
        scope, _, leaf = name.rpartition("/")
        return f"{scope}/{_phase_tag(leaf, None)}"
    if name.startswith(POSTHOC + "_"):
        return f"{POSTHOC}/{_phase_tag(name[len(POSTHOC) + 1:], None)}"
    return _phase_tag(name, TRAINING_PHASE)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def _run_scopes(run_keys: list[str]) -> dict[str, str]:
    """Each run key's tag prefix: ``split0`` where the trial has one seed, ``split0/seed1`` otherwise."""
    parsed = {key: parse_run_key(key) for key in run_keys}
    seeds = {p[1] for p in parsed.values() if p is not None}
    return {key: key if p is None else f"split{p[0]}" + (f"/seed{p[1]}" if len(seeds) > 1 else "")
            for key, p in parsed.items()}


def tagged_metrics(result: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(tag, value) of every metric of a trial's epoch report, NaN included; nothing of Tune's (a name
    the catalogue does not know), no strings or flags."""
    for name, value in result.items():
        if _is_number(value) and lookup(name) is not None:
            yield metric_tag(name), float(value)
    runs = result.get(RUNS_KEY)
    if isinstance(runs, Mapping):
        scopes = _run_scopes([str(key) for key in runs])
        for key, values in runs.items():
            if not isinstance(values, Mapping):
                continue
            for name, value in values.items():
                if _is_number(value) and lookup(name) is not None:
                    yield f"{scopes[str(key)]}/{metric_tag(name)}", float(value)


def hyperparameters(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A trial config's scalar values, nested keys joined with ``/`` (``search/corr_penalty``); lists
    (splits, seeds, class groups) and None are left out: the HPARAMS tab takes numbers, strings, flags."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(hyperparameters(value, name + "/"))
        elif isinstance(value, np.generic):
            value = value.item()
            if isinstance(value, bool | int | float | str):
                out[name] = value
        elif isinstance(value, bool | int | float | str):
            out[name] = value
    return out


class TensorBoardLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger (so Tune adds no default one beside it) writing the tags of
    ``tagged_metrics`` and, at a trial's end, the HPARAMS tab's data."""

    def __init__(self) -> None:
        super().__init__()
        # Across the trials this driver logs: TensorBoard takes the HPARAMS columns from one trial's
        # experiment summary, whichever it reads first, so each summary lists every hyperparameter (one
        # a space draws only on some branches, search/corr_penalty) and metric seen so far.
        self._hparam_examples: dict[str, bool | int | float | str] = {}
        self._metric_tags: set[str] = set()

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        trial.init_local_path()
        # tensorboardX names a file by the second it was opened and truncates one of that name: a trial
        # restarted (or a driver resumed) within the second would wipe its earlier epochs. TensorBoard
        # reads a folder's files in name order, so the suffix keeps them in the order they were written.
        self._trial_writer[trial] = self._summary_writer_cls(trial.local_path, flush_secs=30,
                                                             filename_suffix=f".{time.time_ns()}")
        self._trial_result[trial] = {}
        self._hparam_examples.update(hyperparameters(getattr(trial, "config", None) or {}))

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = int(result[TRAINING_ITERATION])
        writer = self._trial_writer[trial]
        for tag, value in tagged_metrics(result):
            if tag.split("/", 1)[0] == HPARAMS_METRIC_GROUP:
                self._metric_tags.add(tag)
            # NaN (an epoch that could not be scored, a failed trial's last report) is left out, as Tune
            # does: TensorBoard draws the curve around it.
            if math.isfinite(value):
                writer.add_scalar(tag, value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial not in self._trial_writer:
            return
        writer = self._trial_writer.pop(trial)
        self._trial_result.pop(trial, None)
        # Also for a trial that failed before its first report: the tab shows its values as a failure.
        # Tune ends a trial here once (a failure it retries is a recovery), and TensorBoard reads a run's
        # first HPARAMS summaries only, so this is where they are right.
        hparams = hyperparameters(getattr(trial, "config", None) or {})
        if hparams:
            for summary in hparams_summaries(hparams, {**self._hparam_examples, **hparams},
                                             sorted(self._metric_tags), failed):
                writer.file_writer.add_summary(summary)
        writer.close()


def hparams_summaries(hparams: Mapping[str, bool | int | float | str],
                      columns: Mapping[str, bool | int | float | str], metric_tags: list[str],
                      failed: bool = False) -> list[Summary]:
    """The HPARAMS plugin's three summaries of one trial, made by tensorboardX's ``hparams()``: the
    experiment (every hyperparameter column seen so far, and the scalar tags that are its metrics), the
    trial's values, and how it ended. ``hparams()`` lists one dict's keys and always says success, so it
    is called for the columns and for the trial's values apart, and a failure's end status is set here."""
    experiment, _, _ = tbx_hparams(dict(columns), dict.fromkeys(metric_tags, 0.0))
    _, start, end = tbx_hparams(dict(hparams), {})
    if failed:
        value = end.value[0]
        data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
        data.session_end_info.status = Status.STATUS_FAILURE
        value.metadata.plugin_data.content = data.SerializeToString()
    return [experiment, start, end]
