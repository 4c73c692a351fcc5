"""The console while an experiment runs: one line per trial event and a status line now and then, in
place of Tune's tables (a 16-trial demo printed 2,176 lines of them; ``--verbose`` brings them back).

Lines start with the time since the experiment started. A trial's events: started, promoted (kept by
ASHA at a rung, the epochs where it compares trials; printed once the trial trains past the rung, so a
trial stopped there gets only its "pruned" line), pruned (stopped early by the scheduler), finished,
errored; each with its epoch, its objective and the best objective any trial reported so far. The status line counts the
trials in each state and estimates the time left from the epochs trained so far."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ray.tune import Callback

from results_analysis.trial_files import TRIAL_ERROR_KEY

# A status line at most this often (seconds), and only on a step after it is due.
STATUS_EVERY_S = 30.0


def clock_text(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def duration_text(seconds: float) -> str:
    """A rough duration for an estimate: '40 s', '7 min', '2.5 h'."""
    if seconds < 90:
        return f"{max(round(seconds / 10) * 10, 10)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class SearchProgress(Callback):
    """Tune callback printing the experiment's progress (see the module's docstring).

    ``rungs``: the epochs where the scheduler compares trials (none for FIFO). ``header``: lines printed
    when the experiment starts (where its results go, how to look at them)."""

    def __init__(self, *, metric: str, mode: str, max_epochs: int, num_trials: int, rungs: Sequence[int] = (),
                 header: Sequence[str] = (), out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, status_every_s: float = STATUS_EVERY_S) -> None:
        self.metric, self.mode, self.max_epochs, self.num_trials = metric, mode, max_epochs, num_trials
        self.rungs = frozenset(rungs)
        self.header = list(header)
        self._out = out
        self._clock = clock
        self._status_every_s = status_every_s
        self._start: float | None = None
        self._last_status = 0.0
        self._epoch: dict[str, int] = {}  # trial id -> epochs it reported in this driver's lifetime
        self._value: dict[str, float] = {}  # trial id -> its last reported objective
        self._state: dict[str, str] = {}  # trial id -> running | finished | pruned | errored
        self._epochs_seen = 0  # epochs reported since this driver started (the pace of the estimate)
        self._first_start: float | None = None  # the pace counts from the first trial's start, not Ray's
        self._best: tuple[float, str, int] | None = None  # (objective, trial id, epoch)
        self._at_rung: dict[str, str] = {}  # trial id -> its "promoted" line (unstamped), until it trains past the rung

    # --- Tune's hooks --------------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._start = self._last_status = self._clock()
        for line in self.header:
            self._print(line)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._first_start is None:
            self._first_start = self._clock()
        self._state[trial.trial_id] = "running"
        resumed = self._epoch.get(trial.trial_id) or _last_epoch(trial)
        self._epoch.setdefault(trial.trial_id, resumed)
        self._event(trial, "started" if not resumed else "resumed")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get(TRIAL_ERROR_KEY):
            self._state[trial.trial_id] = "errored"
            self._event(trial, "errored", f"({' '.join(str(result[TRIAL_ERROR_KEY]).split())})")
            return
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if trial.trial_id in self._at_rung and epoch > self._epoch.get(trial.trial_id, 0):
            self._print(f"[{clock_text(self._elapsed())}] {self._at_rung.pop(trial.trial_id)}")
        if epoch > self._epoch.get(trial.trial_id, 0):
            self._epochs_seen += epoch - self._epoch.get(trial.trial_id, 0)
            self._epoch[trial.trial_id] = epoch
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self._value[trial.trial_id] = float(value)
            if self._best is None or self._better(value, self._best[0]):
                self._best = (float(value), trial.trial_id, epoch)
        if epoch in self.rungs:
            self._at_rung[trial.trial_id] = self._line(trial, "promoted")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._at_rung.pop(trial.trial_id, None)
        if self._state.get(trial.trial_id) == "errored":
            return
        full = self._epoch.get(trial.trial_id, 0) >= self.max_epochs
        self._state[trial.trial_id] = "finished" if full else "pruned"
        self._event(trial, "finished" if full else "pruned")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune's own failures (a lost worker or node); it may restart the trial from a checkpoint.
        self._state[trial.trial_id] = "errored"
        self._event(trial, "failed", "(its worker or node was lost; Tune restarts it while --max-failures allows)")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = self._clock()
        if now - self._last_status >= self._status_every_s:
            self._last_status = now
            self._print(f"[{clock_text(self._elapsed())}] {self.status_line(trials)}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print(f"[{clock_text(self._elapsed())}] {self.status_line(trials, final=True)}")

    # --- the lines -----------------------------------------------------------------------------------

    def status_line(self, trials: list, final: bool = False) -> str:
        counts = {state: 0 for state in ("running", "finished", "pruned", "errored")}
        for trial in trials:
            state = self._state.get(trial.trial_id)
            if state is not None and (state != "running" or trial.status == "RUNNING"):
                counts[state] += 1
        waiting = max(self.num_trials - sum(counts.values()), 0)
        text = ", ".join(f"{n} {state}" for state, n in counts.items()) + f", {waiting} waiting"
        if self._best is not None:
            text += f" | best reported {self.metric} {self._best[0]:.4g} ({self._best[1]}, epoch {self._best[2]})"
        if not final:
            text += f" | {self.time_left(counts['running'], waiting)}"
        return text

    def time_left(self, running: int, waiting: int) -> str:
        """About how long the rest takes, at the pace so far (epochs per second over all trials): the
        running trials' remaining epochs, and as many per waiting trial as the ended ones trained on
        average (the full budget while none has ended)."""
        elapsed = self._clock() - (self._first_start if self._first_start is not None else self._clock())
        if self._epochs_seen == 0 or elapsed <= 0:
            return "time left: not yet estimated"
        ended = [self._epoch.get(t, 0) for t, s in self._state.items() if s in ("finished", "pruned")]
        per_trial = sum(ended) / len(ended) if ended else self.max_epochs
        remaining = sum(max(per_trial, self._epoch.get(t, 0)) - self._epoch.get(t, 0)
                        for t, s in self._state.items() if s == "running")
        remaining += waiting * per_trial
        return f"about {duration_text(remaining * elapsed / self._epochs_seen)} left (estimate)"

    def _event(self, trial: Any, what: str, detail: str = "") -> None:
        self._print(f"[{clock_text(self._elapsed())}] {self._line(trial, what, detail)}")

    def _line(self, trial: Any, what: str, detail: str = "") -> str:
        epoch = self._epoch.get(trial.trial_id, 0)
        value = self._value.get(trial.trial_id)
        parts = [f"{trial.trial_id:<16} {what:<9} epoch {epoch:>3}/{self.max_epochs}"]
        if value is not None:
            parts.append(f"{self.metric} {value:.4g}")
        if self._best is not None and what != "started":
            parts.append(f"best {self._best[0]:.4g}")
        if detail:
            parts.append(detail)
        return "  ".join(parts)

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _elapsed(self) -> float:
        return self._clock() - (self._start if self._start is not None else self._clock())

    def _print(self, line: str) -> None:
        print(line, file=self._out or sys.stdout, flush=True)


def _last_epoch(trial: Any) -> int:
    """The epoch a trial restored from an earlier driver had reported (0 for a new trial)."""
    last = getattr(trial, "last_result", None) or {}
    return int(last.get("epoch", last.get("training_iteration", 0)) or 0)
