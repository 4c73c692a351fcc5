"""``python -m results_analysis RESULTS_DIR [--phase test] [--out DIR]``
``python -m results_analysis DIR1 DIR2 … [--out DIR] [--baseline softmax]``

One experiment folder: prints mean ± std per config (best config first, chosen on validation), writes
summary.csv, summary.md and PNG plots into RESULTS_DIR (or --out). Several (one method each, on one
dataset: searches or --config re-runs): the benchmark table (results_analysis/benchmark.py) beside the
published numbers, written as benchmark.md, benchmark.csv and benchmark.png into --out (default: the
current folder). Bad input ends in one line on stderr, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from results_analysis.markdown import to_csv, to_markdown
from results_analysis.tables import load_curves, load_experiment, rank_configs, summarize
from results_analysis.trial_files import ExperimentError

# The ranking metric when --metric is not given: the first one the experiment has.
DEFAULT_METRICS = ("auroc", "mean_cluster_acc")


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
    results_dir: Path = args.results_dirs[0]
    out: Path = args.out if args.out is not None else results_dir
    if out.exists() and not out.is_dir():
        raise _UsageError(f"--out {out}: exists and is not a folder")

    skipped: list[str] = []
    df = load_experiment(results_dir, skipped)
    curves = load_curves(results_dir, [])  # the same trials: skipped once is enough
    for message in skipped:
        print(f"results_analysis: warning: {' '.join(message.split())}", file=sys.stderr)

    val_metrics = sorted(df.loc[(df["phase"] == "val") & (df["status"] == "finished"), "metric"].unique())
    if args.metric is None:
        args.metric = next((m for m in DEFAULT_METRICS if m in val_metrics), DEFAULT_METRICS[0])
    if val_metrics and args.metric not in val_metrics:
        raise _UsageError(
            f"{results_dir}: no validation {args.metric!r} values; pass --metric one of {', '.join(val_metrics)}"
        )
    summary = summarize(
        df, phase=args.phase, rank_metric=args.metric, include_unfinished=args.include_unfinished
    )
    if summary.empty:
        counts = ", ".join(
            f"{n} {s}" for s, n in df.drop_duplicates("trial_id")["status"].value_counts().items()
        )
        hint = " (try --phase val --include-unfinished)" if not args.include_unfinished else ""
        raise _UsageError(
            f"{results_dir}: no {args.phase} metrics to summarise [{counts or 'no values'}]{hint}"
        )

    report = to_markdown(summary)
    ranked = rank_configs(df, args.metric)
    best = {(r.method, r.dataset): r.config for r in ranked[ranked["rank"] == 1].itertuples(index=False)}

    # matplotlib is imported only once the input is known to be good: bad input fails fast.
    from results_analysis.plots import plot_split_metric, plot_tp_agreement, plot_val_curves

    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "summary.csv", out / "summary.md"]
        to_csv(summary, written[0])
        header = f"# {results_dir.name}: {args.phase} metrics, mean ± std over (split, seed) runs\n\n"
        written[1].write_text(header + report)
        curves_png = out / f"val_{args.metric}_curves.png"
        if plot_val_curves(curves, curves_png, metric=args.metric):
            written.append(curves_png)
        split_png = out / f"{args.phase}_{args.metric}_per_split.png"
        if plot_split_metric(df, best, split_png, metric=args.metric, phase=args.phase):
            written.append(split_png)
        tpa_png = out / f"{args.phase}_tp_agreement.png"
        if plot_tp_agreement(df, best, tpa_png, phase=args.phase):
            written.append(tpa_png)
    except OSError as e:
        raise _UsageError(f"cannot write reports to {out}: {e}") from None

    print(report, end="")
    print()
    for path in written:
        print(f"wrote {path}")
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
