"""Does the search pay? TPE + ASHA against random search, TPE alone, random + ASHA and a seed-style grid,
each given the same total number of training epochs (issue 19).

Every strategy is a real search through the project's own machinery (search.cli's validation,
search.experiment's Tuner with PruningAwareOptunaSearch and ASHA, the trial folders), run in this
process on one Ray instance so that Ray starts once, not once per search. Two things are added from
outside, without editing search/:

- a Tune stopper (RunConfig.stop) that records the order in which epochs were reported, and for the
  early-stopping strategies ends the search once more than the budget B of epochs was consumed;
- for the grid, Optuna's GridSampler in place of the sampler search.experiment makes (a few learning
  rates × one method parameter, the rest at the method's published defaults, as the seed repositories'
  scripts sweep them).

Budget. B = trials × max_epochs: the no-early-stopping strategies (random, tpe, grid) run exactly that;
the ASHA strategies may start up to B trials and are stopped after epoch B (trials run one at a time,
--max-concurrent 1, so the order of epochs, and so every budget, is exact).

Anytime curve. After c epochs consumed (over all trials, in the order reported), the best final
validation objective among the trials that had completed all max_epochs epochs by then: what the
project's choice rule (search/report.py choose_best, finished trials only) would pick if the search
stopped there. A pruned trial's low-fidelity value is never counted; NaN before the first completion.

Picked config. choose_best over the trials finished within B; its test AUROC is the mean over the
trial's (split, seed) runs in final_metrics.json (test metrics are never seen by any strategy).

Rung correlations. Over the trials of the random FIFO runs (every repetition pooled, each trial trained
to max_epochs), Spearman's rho between the objective at each ASHA rung epoch and the final objective;
the per-epoch median change shows whether a rung lands in a dip after a learning-rate restart.

    .venv/bin/python bench/search_efficiency.py --method difair --dataset digits --reps 5

Outputs under --out (default bench/out/search_efficiency/<method>-<dataset>-E<E>-N<N>): one experiment
folder per (strategy, repetition), summary.json, summary.md and search_efficiency.png. A repetition's
strategy whose folder holds bench_run.json is not run again (the command continues where it stopped).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from common import ROOT

# Ray workers import the project's folders (search/run.py does the same).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import numpy as np  # noqa: E402

# strategy -> (--searcher, --scheduler); "grid" runs Optuna's GridSampler in place of the searcher's.
STRATEGIES: dict[str, tuple[str, str]] = {
    "random": ("random", "fifo"),
    "random+asha": ("random", "asha"),
    "tpe": ("optuna", "fifo"),
    "tpe+asha": ("optuna", "asha"),
    "grid": ("grid", "fifo"),
}
COLORS = {"random": "tab:gray", "random+asha": "tab:blue", "tpe": "tab:orange", "tpe+asha": "tab:red",
          "grid": "tab:green"}
# The grid's swept method parameter and the fixed values of every other searched parameter: the
# published defaults of the method's config (methods/<method>.py), as the seed repositories' scripts
# sweep a few learning rates × one parameter and leave the rest at their defaults.
GRIDS: dict[str, tuple[str, list[Any], dict[str, list[Any]]]] = {
    "difair": ("anchor_multiplier", [5.0, 10.0],
               {"radius_ratio": [0.6], "features_per_class": [5], "smooth_coef": [0.1], "batch_size": [128],
                "search/corr_penalty": [True], "corr_penalty_weight": [1.0]}),
    "softmax": ("label_smoothing", [0.0, 0.1], {"batch_size": [128]}),
}
METRIC = "val_auroc"  # maximised; the default objective of every open-set method


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="difair", choices=sorted(GRIDS))
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", help="passed to search/run.py (mnist: ../shared/datasets)")
    p.add_argument("--splits", default="0")
    p.add_argument("--reps", type=int, default=5, help="repetitions, sampler (and training) seeds first-seed, +1, …")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=6, help="trials of the no-early-stopping strategies: B = trials × max-epochs")
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--grid-lrs", default="0.03,0.1,0.3",
                   help="the grid's learning rates; × the method's grid parameter values must make --trials configs")
    p.add_argument("--grid-values", help="the grid parameter's values (default: the method's, GRIDS)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--cpus-per-trial", default="1")
    p.add_argument("--grace", type=int, help="ASHA grace period instead of spaces/<method>.py asha()'s (a "
                   "candidate default, measured without editing it)")
    p.add_argument("--reduction-factor", type=int, help="ASHA reduction factor instead of the space's")
    p.add_argument("--out", type=Path)
    p.add_argument("--analyse-only", action="store_true", help="only read the finished runs and write the summary")
    args = p.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        p.error(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    if args.out is None:
        variant = "".join(f"-{k}{v}" for k, v in (("g", args.grace), ("rf", args.reduction_factor)) if v)
        args.out = (ROOT / "bench" / "out" / "search_efficiency"
                    / f"{args.method}-{args.dataset}-E{args.max_epochs}-N{args.trials}{variant}")
    if "grid" in args.strategies and len(grid_space(args)[1]) != args.trials:
        p.error(f"the grid has {len(grid_space(args)[1])} configs; it must have --trials ({args.trials}) for equal budgets")
    return args


def strategy_seed(args: argparse.Namespace, strategy: str, rep: int) -> int:
    """Independent seeds per strategy (and per repetition): with one seed for all, random, TPE (whose
    first 10 trials are random draws from the same seed) and both ASHA variants would try the very same
    first configs with the same training seed, and the comparison would only measure early stopping."""
    return args.first_seed + rep + 1000 * list(STRATEGIES).index(strategy)


def grid_space(args: argparse.Namespace) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """GridSampler's search space (every parameter the space suggests) and its configs."""
    param, values, fixed = GRIDS[args.method]
    if args.grid_values:
        values = [type(values[0])(v) for v in args.grid_values.split(",")]
    space = {"lr": [float(v) for v in args.grid_lrs.split(",")], param: list(values), **fixed}
    configs = [{"lr": lr, param: v} for lr in space["lr"] for v in space[param]]
    return space, configs


@dataclass
class Run:
    """One search's trials, read back from its experiment folder."""

    strategy: str
    seed: int
    path: Path
    # Per trial, the objective after each epoch (index 0 = epoch 1), in the order the trials were run.
    curves: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[str, int]] = field(default_factory=list)  # (trial_id, epoch) in the order reported
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------- running


def make_stopper(budget: int | None, events: list[tuple[str, int]]) -> Any:
    from ray import tune

    seen: set[tuple[str, int]] = set()

    class EpochBudget(tune.Stopper):
        """Records the order of epoch reports; with a budget, ends the experiment at the first epoch
        past it (never at it: the trial that completes exactly at B still writes its test metrics)."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            if "training_iteration" in result and METRIC in result and not result.get("trial_error"):
                event = (str(result.get("trial_id", trial_id)), int(result["training_iteration"]))
                # Tune hands a trial's last result to the stopper twice (as it ends): one epoch, once.
                if event not in seen:
                    seen.add(event)
                    events.append(event)
            return False

        def stop_all(self) -> bool:
            return budget is not None and len(events) > budget

    return EpochBudget()


def asha_settings(args: argparse.Namespace) -> dict[str, int]:
    from spaces import get_space

    settings = dict(get_space(args.method).asha(args.max_epochs))
    if args.grace:
        settings["grace_period"] = args.grace
    if args.reduction_factor:
        settings["reduction_factor"] = args.reduction_factor
    return settings


@contextmanager
def patched_search(stopper: Any, grid: dict[str, list[Any]] | None, seed: int, method: str,
                   asha: dict[str, int] | None = None) -> Iterator[None]:
    """search.experiment with the epoch-recording stopper in its RunConfig; for the grid, Optuna's
    GridSampler as its sampler; with ``asha``, those ASHA settings instead of the space's."""
    import optuna

    from search import experiment
    from spaces import get_space

    if asha is not None:
        with mock.patch.object(get_space(method), "asha", lambda max_epochs: dict(asha)):
            with patched_search(stopper, grid, seed, method):
                yield
        return

    make_run_config = experiment._run_config

    def run_config(request: Any, rungs: list[int]) -> Any:
        config = make_run_config(request, rungs)
        config.stop = stopper
        return config

    with mock.patch.object(experiment, "_run_config", run_config):
        if grid is None:
            yield
        else:
            sampler = optuna.samplers.GridSampler(grid, seed=seed)
            with mock.patch.object(experiment, "make_sampler", lambda searcher, s: sampler):
                yield


def run_strategy(args: argparse.Namespace, strategy: str, seed: int, budget: int) -> None:
    from search.cli import build_parser, validate
    from search.experiment import run_experiment

    searcher, scheduler = STRATEGIES[strategy]
    early = scheduler == "asha"
    path = args.out / f"{strategy}-s{seed}"
    argv = ["--method", args.method, "--dataset", args.dataset, "--splits", args.splits,
            "--searcher", "random" if searcher == "grid" else searcher, "--scheduler", scheduler,
            "--seed", str(seed), "--num-samples", str(budget if early else args.trials),
            "--max-epochs", str(args.max_epochs), "--max-concurrent", "1", "--cpus-per-trial", args.cpus_per_trial,
            "--storage-path", str(args.out), "--name", path.name]
    if args.data_root:
        argv += ["--data-root", args.data_root]
    request = validate(build_parser().parse_args(argv), argv)
    events: list[tuple[str, int]] = []
    start = time.perf_counter()
    asha = asha_settings(args) if args.grace or args.reduction_factor else None
    with patched_search(make_stopper(budget if early else None, events), grid_space(args)[0] if searcher == "grid"
                        else None, seed, args.method, asha):
        run_experiment(request)
    wall = time.perf_counter() - start
    (path / "bench_run.json").write_text(json.dumps({"strategy": strategy, "seed": seed, "wall_s": wall,
                                                      "budget": budget, "argv": argv, "events": events}))


def run_all(args: argparse.Namespace) -> None:
    import ray

    from search.experiment import worker_env

    budget = args.trials * args.max_epochs
    args.out.mkdir(parents=True, exist_ok=True)
    started = False
    try:
        for rep in range(args.reps):
            for strategy in args.strategies:
                seed = strategy_seed(args, strategy, rep)
                if (args.out / f"{strategy}-s{seed}" / "bench_run.json").exists():
                    continue
                if not ray.is_initialized():
                    ray.init(address="local", include_dashboard=False, log_to_driver=False,
                             runtime_env={"env_vars": worker_env()})
                    started = True
                # A folder without bench_run.json is an interrupted run: start it again from nothing.
                stale = args.out / f"{strategy}-s{seed}"
                if stale.exists():
                    import shutil

                    shutil.rmtree(stale)
                print(f"[{time.strftime('%H:%M:%S')}] {strategy} seed {seed}", flush=True)
                run_strategy(args, strategy, seed, budget)
    finally:
        if started:
            ray.shutdown()


# -------------------------------------------------------------------------------------------- analysis


def read_run(path: Path) -> Run:
    meta = json.loads((path / "bench_run.json").read_text())
    events = list(dict.fromkeys((str(t), int(e)) for t, e in meta["events"]))  # one epoch, once
    run = Run(meta["strategy"], int(meta["seed"]), path, wall_s=float(meta["wall_s"]), events=events)
    for trial_dir in sorted(path.glob("train_trial_*")):
        values: dict[int, float] = {}
        with open(trial_dir / "result.json") as f:
            for line in f:
                row = json.loads(line)
                if METRIC in row and "training_iteration" in row and not row.get("trial_error"):
                    values.setdefault(int(row["training_iteration"]), float(row[METRIC]))
        trial_id = trial_dir.name.removeprefix("train_trial_")
        run.curves[trial_id] = [values[e] for e in sorted(values)]
    return run


def anytime_curve(run: Run, max_epochs: int, budget: int) -> np.ndarray:
    """Best final objective of the trials completed after c = 1 … budget epochs (NaN before the first;
    the last value repeats past the epochs a run consumed, never beyond the budget)."""
    best, out = -math.inf, np.full(budget, np.nan)
    for c, (trial_id, epoch) in enumerate(run.events[:budget]):
        if epoch == max_epochs:
            value = run.curves[trial_id][max_epochs - 1]
            if math.isfinite(value):
                best = max(best, value)
        out[c] = best if math.isfinite(best) else np.nan
    consumed = min(len(run.events), budget)
    if 0 < consumed < budget:
        out[consumed:] = out[consumed - 1]
    return out


def finished_within(run: Run, max_epochs: int, budget: int) -> list[str]:
    return [t for t, e in run.events[:budget] if e == max_epochs]


def picked(run: Run, max_epochs: int, budget: int) -> tuple[str | None, float, float]:
    """The trial search/report.py's choose_best picks among those finished within the budget: its id,
    final validation objective and mean test AUROC."""
    from search.report import TrialOutcome, choose_best

    done = set(finished_within(run, max_epochs, budget))
    outcomes = [TrialOutcome(t, run.path / f"train_trial_{t}", "finished" if t in done else "pruned",
                             run.curves[t][-1] if run.curves[t] else None, epochs=len(run.curves[t]))
                for t in run.curves]
    best = choose_best(outcomes, METRIC)
    if best is None:
        return None, math.nan, math.nan
    final = json.loads((best.path / "final_metrics.json").read_text())
    tests = [r["value"] for r in final["records"] if r["phase"] == "test" and r["metric"] == "auroc"]
    return best.trial_id, float(best.value), float(np.mean(tests)) if tests else math.nan


def epochs_to_reach(curve: np.ndarray, target: float) -> int | None:
    hits = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= target)
    return int(hits[0]) + 1 if hits.size else None


def rung_epochs(args: argparse.Namespace) -> list[int]:
    """The ASHA rungs the searches used at this budget (read from Ray's ASHA, as the console does)."""
    from ray.tune.schedulers import ASHAScheduler

    from search.experiment import scheduler_rungs

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=args.max_epochs, **asha_settings(args))
    return scheduler_rungs(scheduler, args.max_epochs)


def restart_epochs(max_epochs: int) -> list[int]:
    """Epochs (1-based, as Tune counts) that are the first of a new cosine cycle in the project's recipe."""
    from methods.optim import cycle_shape
    from spaces import recipe_fixed

    shape = cycle_shape(max_epochs, recipe_fixed(max_epochs)["warmup_epochs"], 2)
    return [k * shape.period + 1 for k in range(1, shape.cycles)]


def rung_correlations(runs: list[Run], max_epochs: int) -> dict[int, dict[str, float]]:
    """Spearman's rho of the objective at every epoch against the final one, over the full-length
    trials of the given (FIFO) runs, and the median epoch-on-epoch change (a dip is negative)."""
    from scipy.stats import spearmanr

    full = np.array([c for r in runs for c in r.curves.values() if len(c) == max_epochs and np.all(np.isfinite(c))])
    out: dict[int, dict[str, float]] = {}
    for epoch in range(1, max_epochs + 1):
        rho = float(spearmanr(full[:, epoch - 1], full[:, -1]).statistic) if len(full) > 2 else math.nan
        change = float(np.median(full[:, epoch - 1] - full[:, epoch - 2])) if epoch > 1 else math.nan
        out[epoch] = {"spearman": rho, "median_change": change, "median": float(np.median(full[:, epoch - 1])),
                      "q25": float(np.quantile(full[:, epoch - 1], 0.25)),
                      "q75": float(np.quantile(full[:, epoch - 1], 0.75)), "trials": len(full)}
    return out


def analyse(args: argparse.Namespace) -> dict[str, Any]:
    budget = args.trials * args.max_epochs
    by = {s: [read_run(args.out / f"{s}-s{strategy_seed(args, s, rep)}") for rep in range(args.reps)
              if (args.out / f"{s}-s{strategy_seed(args, s, rep)}" / "bench_run.json").exists()]
          for s in args.strategies}
    summary: dict[str, Any] = {"method": args.method, "dataset": args.dataset, "splits": args.splits,
                               "max_epochs": args.max_epochs, "trials": args.trials, "budget": budget,
                               "rungs": rung_epochs(args), "asha": asha_settings(args),
                               "restarts": restart_epochs(args.max_epochs), "strategies": {}}
    curves: dict[str, np.ndarray] = {}
    for strategy, rs in by.items():
        if not rs:
            continue
        cs = np.array([anytime_curve(r, args.max_epochs, budget) for r in rs])
        curves[strategy] = cs
        picks = [picked(r, args.max_epochs, budget) for r in rs]
        summary["strategies"][strategy] = {
            "seeds": [r.seed for r in rs],
            "consumed": [min(len(r.events), budget) for r in rs],
            "trials_started": [len(r.curves) for r in rs],
            "trials_finished": [len(finished_within(r, args.max_epochs, budget)) for r in rs],
            "final_best_val": [float(c[-1]) for c in cs],
            "picked_trial": [p[0] for p in picks],
            "picked_val": [p[1] for p in picks],
            "picked_test_auroc": [p[2] for p in picks],
            "wall_s": [r.wall_s for r in rs],
        }
    if "random" in curves and "tpe+asha" in curves:
        # Repetition k of TPE + ASHA against repetition k of random search (independent seeds).
        pairs = []
        for k, (rnd, tpe) in enumerate(zip(curves["random"], curves["tpe+asha"], strict=False)):
            reached = epochs_to_reach(tpe, float(rnd[-1]))
            pairs.append({"rep": k, "random_final": float(rnd[-1]), "epochs": reached,
                          "ratio": reached / budget if reached is not None else None})
        med_rnd = float(np.nanmedian(curves["random"][:, -1]))
        med_reach = epochs_to_reach(np.nanmedian(curves["tpe+asha"], axis=0), med_rnd)
        summary["headline"] = {"per_seed": pairs, "median_curves_epochs": med_reach,
                               "median_curves_ratio": med_reach / budget if med_reach is not None else None}
    fifo = by.get("random", [])
    if fifo:
        summary["epochs"] = rung_correlations(fifo, args.max_epochs)
    if "grid" in by and by["grid"]:
        summary["grid_epochs"] = rung_correlations(by["grid"], args.max_epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(markdown(summary))
    plot(summary, curves, args.out / "search_efficiency.png")
    return summary


def _med(values: list[float]) -> str:
    v = np.array([x for x in values if x is not None and math.isfinite(x)])
    if not v.size:
        return "—"
    return f"{np.median(v):.3f} [{v.min():.3f}–{v.max():.3f}]"


def markdown(summary: dict[str, Any]) -> str:
    b = summary["budget"]
    lines = [f"{summary['method']} on {summary['dataset']} (splits {summary['splits']}), budget B = "
             f"{summary['trials']} × {summary['max_epochs']} = {b} epochs per search; ASHA {summary.get('asha')}, rungs at "
             f"epochs {summary['rungs']}; LR restarts begin epochs {summary['restarts']}.", "",
             "| strategy | reps | epochs consumed | trials started / finished (median) | best val AUROC at B, median [min–max] "
             "| picked config's test AUROC, median [min–max] | wall s (median) |",
             "|---|---|---|---|---|---|---|"]
    for s, d in summary["strategies"].items():
        lines.append(f"| {s} | {len(d['seeds'])} | {min(d['consumed'])}–{max(d['consumed'])} | "
                     f"{np.median(d['trials_started']):.0f} / {np.median(d['trials_finished']):.0f} | "
                     f"{_med(d['final_best_val'])} | {_med(d['picked_test_auroc'])} | {np.median(d['wall_s']):.0f} |")
    if "headline" in summary:
        h = summary["headline"]
        per = ", ".join(f"rep {p['rep']}: {p['epochs']}/{b}" if p["epochs"] is not None
                        else f"rep {p['rep']}: not reached" for p in h["per_seed"])
        # A repetition that never reached it counts as worse than any ratio (its median is then honest).
        ratios = [p["ratio"] if p["ratio"] is not None else math.inf for p in h["per_seed"]]
        lines += ["", f"Epochs TPE + ASHA needs to reach random search's final best (repetition k against repetition k), over B: {per}; "
                  f"median ratio {np.median(ratios):.2f}; on the median curves "
                  + (f"{h['median_curves_epochs']}/{b} = {h['median_curves_ratio']:.2f}" if h["median_curves_epochs"]
                     else "not reached") + "."]
    for key, title in (("epochs", "random FIFO trials"), ("grid_epochs", "grid trials")):
        if key in summary:
            e = summary[key]
            n = next(iter(e.values()))["trials"]
            lines += ["", f"Per epoch over the {n} {title} (every repetition): Spearman ρ with the final val AUROC, "
                      "median val AUROC, median change from the epoch before (R = first epoch after a restart, "
                      "A = ASHA rung):", "",
                      "| epoch | " + " | ".join(f"{t}{' A' if t in summary['rungs'] else ''}"
                                               f"{' R' if t in summary['restarts'] else ''}" for t in e) + " |",
                      "|---|" + "---|" * len(e),
                      "| ρ | " + " | ".join(f"{v['spearman']:.2f}" for v in e.values()) + " |",
                      "| median | " + " | ".join(f"{v['median']:.3f}" for v in e.values()) + " |",
                      "| change | " + " | ".join("—" if math.isnan(v["median_change"]) else f"{v['median_change']:+.3f}"
                                                 for v in e.values()) + " |"]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], curves: dict[str, np.ndarray], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    b = summary["budget"]
    x = np.arange(1, b + 1)
    for s, cs in curves.items():
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs before a first completion
                med, lo, hi = np.nanmedian(cs, axis=0), np.nanmin(cs, axis=0), np.nanmax(cs, axis=0)
        ax.step(x, med, where="post", color=COLORS[s], lw=2, label=f"{s} (median of {len(cs)})")
        ax.fill_between(x, lo, hi, step="post", color=COLORS[s], alpha=0.12)
    if "random" in curves:
        ax.axhline(float(np.nanmedian(curves["random"][:, -1])), color="tab:gray", ls=":", lw=1)
    h = summary.get("headline", {})
    asha = summary.get("asha", {})
    title = (f"{summary['method']} on {summary['dataset']}: best finished trial's val AUROC vs epochs consumed\n"
             f"ASHA grace {asha.get('grace_period')}, reduction factor {asha.get('reduction_factor')} "
             f"(rungs {summary['rungs']})")
    if h.get("median_curves_ratio") is not None:
        title += f"\nTPE+ASHA reaches random's final best (median curves) after {h['median_curves_ratio']:.2f} B"
    ax.set(xlabel=f"epochs consumed (B = {summary['trials']} trials × {summary['max_epochs']} epochs = {b})",
           ylabel="best val AUROC so far (median, band = min–max over seeds)", xlim=(1, b))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    if "epochs" in summary:
        e = summary["epochs"]
        epochs = np.array(list(e))
        bx.plot(epochs, [v["median"] for v in e.values()], "k-o", ms=3, label="median val AUROC")
        bx.fill_between(epochs, [v["q25"] for v in e.values()], [v["q75"] for v in e.values()], color="k", alpha=0.1,
                        label="quartiles")
        for i, r in enumerate(summary["restarts"]):
            bx.axvline(r, color="tab:purple", ls=":", lw=1.5, label="first epoch after LR restart" if i == 0 else None)
        for i, r in enumerate(summary["rungs"]):
            bx.axvline(r, color="tab:red", ls="--", lw=1, label="ASHA rung" if i == 0 else None)
            bx.annotate(f"ρ={e[r]['spearman']:.2f}", (r, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -12),
                        textcoords="offset points", color="tab:red", fontsize=9)
        # Every epoch labelled up to 15; beyond, every third keeps the labels apart.
        bx.set(xlabel="epoch", ylabel="val AUROC", xticks=epochs if len(epochs) <= 15 else epochs[::3])
        bx.set_title(f"random FIFO trials ({next(iter(e.values()))['trials']}): val AUROC per epoch\n"
                     "ρ = Spearman with the final epoch's value", fontsize=10)
        bx.grid(alpha=0.3)
        bx.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.analyse_only:
        run_all(args)
    summary = analyse(args)
    print(markdown(summary))
    print(f"PNG: {args.out / 'search_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
