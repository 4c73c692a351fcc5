"""Parse, validate, run, report. User mistakes end as one line and exit status 2."""

from __future__ import annotations

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

    started = start_ray(request)
    try:
        check_placement(request)
        grid = run_experiment(request)
    finally:
        if started:
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
    from search.report import Summary, choose_best, export_yaml, render

    summary = Summary(request.method, request.dataset, request.metric, outcomes)
    if request.fixed_config is not None:
        summary.chosen = [o for o in outcomes if o.status == "finished"]
    else:
        best = choose_best(outcomes, request.mode)
        summary.chosen = [best] if best else []
    expected = request.num_samples if request.fixed_config is None else len(request.splits) * len(request.seeds)
    # An interrupted search may not even have created its later trials yet (the searcher suggests lazily).
    if any(o.status == "unfinished" for o in outcomes) or len(outcomes) < expected:
        print(render(summary, None))
        print(f"\n{len(outcomes)} of {expected} trials started.")
        print(f"\nInterrupted: nothing exported. Continue with: python search/run.py --resume "
              f"--name {request.name} --storage-path {request.storage_path}")
        return 130
    best_yaml = None
    if summary.chosen:
        targets = [storage.join(request.experiment_path, "best.yaml")]
        if request.export:
            targets.append(str(request.export))
        for target in targets:
            export_yaml(summary, target)
        best_yaml = targets[0]
    print(render(summary, best_yaml))
    return 0 if summary.chosen else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        request = validate(build_parser().parse_args(argv), argv)
        return execute(request)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
