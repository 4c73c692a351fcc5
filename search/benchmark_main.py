"""Parse, validate, run the stages, write the table. User mistakes end as one line and exit status 2."""

from __future__ import annotations

import sys

from search.benchmark_cli import build_parser, validate
from search.cli import UsageError


def main(argv: list[str] | None = None) -> int:
    from search.benchmark_stages import run_benchmark
    from search.main import main as run_stage

    argv = sys.argv[1:] if argv is None else argv
    try:
        request = validate(build_parser().parse_args(argv), argv)
        return run_benchmark(request, run_stage)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
