"""Parse, validate, run, report. User mistakes end as one line and exit status 2."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from search import storage
from search.cli import Request, UsageError, build_parser, validate

if TYPE_CHECKING:
    from search.report import TrialOutcome


def execute(request: Request) -> int:
    import ray

    from search.experiment import check_placement, run_experiment, start_ray
    from search.report import collect

    context = start_ray(request)
    # Only a local instance is this experiment's own (a joined cluster outlives its drivers).
    session = context.address_info["session_dir"] if context is not None and not request.address else None
    try:
        check_placement(request)
        grid = run_experiment(request, ray_session=session)
    finally:
        if context is not None:
            ray.shutdown()
    with tempfile.TemporaryDirectory(prefix="osrtune-") as scratch:
        local_copy = None
        if request.is_remote_storage:  # the report reads trial files; bring them here, less checkpoints
            try:
                local_copy = storage.mirror(request.experiment_path, Path(scratch))
            except storage.StorageError as err:
                print(f"error: the search ran, but its results cannot be read back: {err}", file=sys.stderr)
                return 1
        return report(request, collect(grid, request.metric, request.mode, request.max_epochs, local_copy))


def report(request: Request, outcomes: list[TrialOutcome]) -> int:
    from search.report import RESUMABLE, Summary, choose_best, export_yaml, render, write_analysis_report

    summary = Summary(request.method, request.dataset, request.metric, outcomes)
    if request.fixed_config is not None:
        summary.chosen = [o for o in outcomes if o.status == "finished"]
    else:
        best = choose_best(outcomes, request.metric)
        summary.chosen = [best] if best else []
    expected = request.num_samples if request.fixed_config is None else len(request.splits) * len(request.seeds)
    # An interrupted search may not even have created its later trials yet (the searcher suggests lazily).
    if any(o.status in RESUMABLE for o in outcomes) or len(outcomes) < expected:
        print(render(summary, None))
        started = sum(o.status != "not started" for o in outcomes)
        print(f"\n{started} of {expected} trials started.")
        resume = shlex.join(["python", "search/run.py", "--resume", "--name", request.name,
                             "--storage-path", request.storage_path])
        print(f"\nInterrupted: nothing exported. Continue with: {resume}")
        return 130
    best_yaml, failed = None, []
    if summary.chosen:
        targets = [(storage.join(request.experiment_path, "best.yaml"), "")]
        if request.export:
            targets.append((str(request.export), "--export "))
        for target, flag in targets:
            try:
                export_yaml(summary, target)
            except storage.StorageError as err:
                failed.append(f"{flag}{err}")
            else:
                best_yaml = best_yaml or target
    # A file that cannot be written never costs the summary of a whole search: it is printed first.
    print(render(summary, best_yaml))
    if summary.chosen:
        # Of a search or re-run that ended, never of an interrupted one (returned above): --resume
        # finishes it and writes the report then. A re-run keeps no Optuna study.
        local = Path(request.experiment_path) if not request.is_remote_storage else outcomes[0].path.parent
        for line in write_analysis_report(
                request.experiment_path, local, request.metric,
                request.optuna_storage if request.fixed_config is None else None, request.name):
            print(line, file=sys.stderr if line.startswith(("error:", "warning:")) else sys.stdout)
    if failed:
        kept = f"the best config is in {best_yaml}" if best_yaml else "the best config is printed above"
        print(f"error: {'; '.join(failed)}; {kept}", file=sys.stderr)
        return 1
    return 0 if summary.chosen else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        request = validate(build_parser().parse_args(argv), argv)
        return execute(request)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
