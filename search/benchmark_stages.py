"""A benchmark's stages and their state: per method a search (selection on validation only) and the
chosen config's re-run on every split x seed, each one experiment of search/run.py's own machinery
(called in this process); then the table (results_analysis/benchmark.py).

benchmark.yaml in the benchmark folder holds the plan (the flags that define the benchmark) and each
finished stage with its wall time, written whole after every stage. Running the same command again
skips every finished stage, resumes an interrupted one from its own saved state (``--resume``) and
starts the rest; Ctrl+C anywhere stops with exit status 130 and the command that continues.

Folder layout: <storage>/<name>/benchmark.yaml, <name>/<method>/search/ (the search experiment),
<name>/<method>/rerun/ (the re-run experiment), <name>/benchmark.{md,csv,png}.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from results_analysis.benchmark import benchmark_table, chosen_runs, to_markdown, write_benchmark
from results_analysis.trial_files import ExperimentError
from search.benchmark_cli import REDUCED, BenchmarkRequest
from search.cli import UsageError

STATE_FILE = "benchmark.yaml"
SEARCH, RERUN = "search", "rerun"
DONE, FAILED = "done", "failed"
INTERRUPTED = 130


@dataclass(frozen=True)
class Stage:
    method: str
    kind: str  # SEARCH or RERUN

    @property
    def key(self) -> str:
        return f"{self.method}/{self.kind}"


def plan_stages(request: BenchmarkRequest) -> list[Stage]:
    kinds = [SEARCH, RERUN] if request.preset == REDUCED else [RERUN]
    return [Stage(m, k) for m in request.methods for k in kinds]


class BenchmarkState:
    """benchmark.yaml: the plan and the finished stages."""

    def __init__(self, request: BenchmarkRequest) -> None:
        self.path = request.folder / STATE_FILE
        self.request = request
        self.stages: dict[str, dict[str, Any]] = {}

    def load_or_start(self) -> bool:
        """Reads the saved state (True: a continuation) or writes a new one. Raises UsageError when the
        folder holds a benchmark with another plan."""
        if not self.path.exists():
            if self.request.folder.exists() and any(self.request.folder.iterdir()):
                raise UsageError(f"{self.request.folder} exists and is not a benchmark folder: choose another --name")
            self.save()
            return False
        try:
            doc = yaml.safe_load(self.path.read_text())
            saved, self.stages = doc["plan"], dict(doc.get("stages") or {})
        except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
            raise UsageError(f"{self.path} cannot be read ({type(err).__name__}): not a benchmark to continue") from None
        changed = [f"--{k.replace('_', '-')} (it ran with {saved.get(k)})" for k, v in self.request.plan().items()
                   if saved.get(k) != v]
        if changed:
            raise UsageError(f"benchmark {self.request.name} continues as it was started, and these differ: "
                             f"{', '.join(changed)}; drop them, or start a new benchmark under another --name")
        return True

    def save(self) -> None:
        doc = {"command": self.request.command, "plan": self.request.plan(), "stages": self.stages}
        self.request.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(partial, self.path)  # whole or not at all: a kill never leaves half a state

    def status(self, stage: Stage) -> str | None:
        return (self.stages.get(stage.key) or {}).get("status")

    def record(self, stage: Stage, status: str, wall_s: float, note: str = "") -> None:
        entry = {"status": status, "wall_s": round(wall_s, 1), "finished": datetime.now().isoformat(timespec="seconds")}
        if note:
            entry["note"] = note
        self.stages[stage.key] = entry
        self.save()


def stage_argv(request: BenchmarkRequest, stage: Stage) -> list[str]:
    """search/run.py's command line for ``stage``: a resume when its experiment folder exists."""
    storage = str(request.folder / stage.method)
    experiment = request.folder / stage.method / stage.kind
    if experiment.exists():
        return ["--resume", "--name", stage.kind, "--storage-path", storage, *request.where_flags()]
    common = ["--name", stage.kind, "--storage-path", storage, "--seed", str(request.seed),
              *request.resource_flags()]
    if stage.kind == SEARCH:
        return ["--method", stage.method, "--dataset", request.dataset, "--num-samples", str(request.num_samples),
                "--max-epochs", str(request.max_epochs), "--splits", request.splits, "--searcher", request.searcher,
                "--scheduler", request.scheduler, *common]
    rerun = ["--splits", "all", *common]
    if request.seeds is not None:
        rerun += ["--seeds", str(request.seeds)]
    if request.final_train_fraction is not None:
        rerun += ["--final-train-fraction", str(request.final_train_fraction)]
    if request.preset == REDUCED:
        return ["--config", str(request.folder / stage.method / SEARCH / "best.yaml"), *rerun]
    return ["--method", stage.method, "--dataset", request.dataset, "--preset", request.preset,
            "--max-epochs", str(request.max_epochs), *rerun]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def remaining_estimate(state: BenchmarkState, todo: list[Stage]) -> str:
    """What is left, from the mean wall time of the finished stages of each kind."""
    by_kind: dict[str, list[float]] = {}
    for key, entry in state.stages.items():
        if entry.get("status") == DONE:
            by_kind.setdefault(key.split("/")[1], []).append(float(entry["wall_s"]))
    if not todo:
        return "nothing left"
    total, unknown = 0.0, []
    for stage in todo:
        times = by_kind.get(stage.kind)
        if times:
            total += sum(times) / len(times)
        else:
            unknown.append(stage.kind)
    estimate = f"{len(todo)} stage{'s' if len(todo) > 1 else ''} left, about {_duration(total)}"
    if unknown:
        kinds = sorted(set(unknown))
        estimate += f" plus {len(unknown)} {'/'.join(kinds)} stage(s) not yet timed (none of that kind has finished)"
    return estimate


def say(message: str) -> None:
    print(f"[benchmark {datetime.now():%H:%M:%S}] {message}", flush=True)


def run_benchmark(request: BenchmarkRequest, run_stage: Callable[[list[str]], int]) -> int:
    """Runs every stage not yet done, then the table. ``run_stage`` is search/run.py's main."""
    state = BenchmarkState(request)
    continuing = state.load_or_start()
    stages = plan_stages(request)
    say(f"{'continuing' if continuing else 'started'} {request.folder}: {len(stages)} stages "
        f"({', '.join(request.methods)} on {request.dataset}, {request.preset} setting)")
    start = time.monotonic()
    try:
        for i, stage in enumerate(stages):
            status = state.status(stage)
            if status == DONE:
                say(f"{stage.key}: done earlier, not run again")
                continue
            if status == FAILED:
                say(f"{stage.key}: failed earlier ({state.stages[stage.key].get('note', '')}); delete "
                    f"{request.folder / stage.method} to try this method again")
                continue
            if stage.kind == RERUN and state.status(Stage(stage.method, SEARCH)) == FAILED:
                continue
            argv = stage_argv(request, stage)
            say(f"{stage.key}: {'resuming' if argv[0] == '--resume' else 'starting'} (stage {i + 1} of {len(stages)})")
            t0 = time.monotonic()
            rc = run_stage(argv)
            wall = time.monotonic() - t0
            if rc == INTERRUPTED:
                return _interrupted(request, stage)
            if rc == 2:
                say(f"{stage.key}: refused (the line above says why); fix it and run the same command again")
                return 2
            if rc != 0:
                state.record(stage, FAILED, wall, note=f"search/run.py ended with status {rc}")
                say(f"{stage.key}: FAILED after {_duration(wall)} (status {rc}); the other methods go on")
                continue
            state.record(stage, DONE, wall)
            todo = [s for s in stages[i + 1:] if state.status(s) is None]
            say(f"{stage.key}: finished in {_duration(wall)}; {remaining_estimate(state, todo)}")
    except KeyboardInterrupt:
        return _interrupted(request, None)
    say(f"all stages ended after {_duration(time.monotonic() - start)} in this sitting; writing the table")
    return collect(request, state)


def _interrupted(request: BenchmarkRequest, stage: Stage | None) -> int:
    where = f"during {stage.key}" if stage else "between stages"
    say(f"interrupted {where}. Finished stages are kept; continue with: {request.command}")
    return INTERRUPTED


def collect(request: BenchmarkRequest, state: BenchmarkState) -> int:
    """The table from every method whose re-run finished."""
    experiments, missing = [], []
    for method in request.methods:
        folder = request.folder / method / RERUN
        if state.status(Stage(method, RERUN)) != DONE:
            missing.append(method)
            continue
        try:
            experiments.append(chosen_runs(folder, []))
        except ExperimentError as err:
            missing.append(method)
            say(f"{method}: no table row ({' '.join(str(err).split())})")
    if not experiments:
        print("error: no method finished its re-run: no table to write", file=sys.stderr)
        return 1
    table = benchmark_table(experiments, baseline=request.baseline)
    written = write_benchmark(table, request.folder)
    print()
    print(to_markdown(table))
    for path in written:
        print(f"wrote {path}")
    if missing:
        say(f"no row for {', '.join(missing)} (failed: see {request.folder / STATE_FILE})")
        return 1
    return 0
