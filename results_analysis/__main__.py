"""``python -m results_analysis RESULTS_DIR [--phase test] [--out DIR]``
``python -m results_analysis DIR1 DIR2 … [--out DIR] [--baseline softmax]``

One experiment folder: prints mean ± std per config (best config first, chosen on validation), writes
summary.csv, summary.md and PNG plots into RESULTS_DIR (or --out) (results_analysis/report.py, which a
search also runs when it ends). Several (one method each, on one
dataset: searches or --config re-runs): the benchmark table (results_analysis/benchmark.py) beside the
published numbers, written as benchmark.md, benchmark.csv and benchmark.png into --out (default: the
current folder). Bad input ends in one line on stderr, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from results_analysis.report import write_report
from results_analysis.trial_files import ExperimentError


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m results_analysis",
        description="Summarise a Ray Tune experiment folder: mean ± std over splits and seeds per config.",
    )
    p.add_argument("results_dirs", type=Path, nargs="+", metavar="results_dir",
                   help="the experiment folder <storage_path>/<name>; several: the benchmark table of their methods")
    p.add_argument(
        "--phase", choices=["test", "val"], default="test", help="which metrics to summarise (default: test)"
    )
    p.add_argument("--out", type=Path, default=None,
                   help="where to write reports (default: RESULTS_DIR; with several folders the current folder)")
    p.add_argument("--baseline", default=None,
                   help="several folders: the method every row is paired with (default softmax)")
    p.add_argument(
        "--metric",
        default=None,
        help="validation metric that ranks configs, also the one plotted "
        "(default: auroc, or mean_cluster_acc for ClustNet experiments)",
    )
    p.add_argument(
        "--include-unfinished",
        action="store_true",
        help="also summarise stopped/errored trials (their last validation values)",
    )
    return p


def _benchmark(args: argparse.Namespace) -> int:
    from results_analysis.benchmark import (
        DEFAULT_BASELINE,
        benchmark_table,
        chosen_runs,
        to_markdown,
        write_benchmark,
    )

    out: Path = args.out if args.out is not None else Path.cwd()
    if out.exists() and not out.is_dir():
        raise _UsageError(f"--out {out}: exists and is not a folder")
    skipped: list[str] = []
    experiments = [chosen_runs(d, skipped) for d in args.results_dirs]
    for message in skipped:
        print(f"results_analysis: warning: {' '.join(message.split())}", file=sys.stderr)
    datasets = sorted({e.dataset for e in experiments})
    if len(datasets) > 1:
        raise _UsageError(f"the folders hold several datasets ({', '.join(datasets)}): one table is one dataset")
    table = benchmark_table(experiments, baseline=args.baseline or DEFAULT_BASELINE)
    try:
        written = write_benchmark(table, out)
    except OSError as e:
        raise _UsageError(f"cannot write the table to {out}: {e}") from None
    print(to_markdown(table))
    for path in written:
        print(f"wrote {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if len(args.results_dirs) > 1:
        return _benchmark(args)
    skipped: list[str] = []
    try:
        report = write_report(args.results_dirs[0], args.out, metric=args.metric, phase=args.phase,
                              include_unfinished=args.include_unfinished, skipped=skipped)
    finally:
        for message in skipped:
            print(f"results_analysis: warning: {' '.join(message.split())}", file=sys.stderr)
    print(report.markdown, end="")
    print()
    for path in report.written:
        print(f"wrote {path}")
    for reason in report.left_out:
        print(f"left out {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ExperimentError, _UsageError) as e:
        # One line, no traceback: these are the user's input, not bugs.
        print(f"results_analysis: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head`: the reader left, the reports are already written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
