"""What OpenMax's per-epoch evaluation costs next to the training it scores, measured side by side.

Per epoch of an ``openmax`` (or ``crosr``) run: training, the head fit (forward pass over the training
partition in eval mode, class means, Weibull fits), validation at the sampled cell, and the whole
post-hoc grid (5·K·3 cells) on validation. Prints each as a ratio to the training time, and the Weibull
fits of both backends on the same distances.

    python bench/openmax_cost.py [--method openmax|crosr] [--dataset digits|mnist] [--epochs 3]

MNIST comes from ../shared/datasets when present (else pass --data-root); digits needs nothing."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import SHARED_DATASETS, timed  # noqa: E402  (puts the project root on sys.path)

from data import load_pool, make_split  # noqa: E402
from methods.openmax_head import DISTANCES, TAILSIZES  # noqa: E402
from methods.weibull import fit_high  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402
from trainables.open_set import OpenSetRunner  # noqa: E402
from trainables.open_set_scoring import cell_auroc, open_set_metrics  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["openmax", "crosr"], default="openmax")
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-root", default=str(SHARED_DATASETS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed epochs first, until OpenMax can fit every class (default 6 on digits, 0 on mnist)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    pool = load_pool(args.dataset, Path(args.data_root))
    bundle = DataBundle.from_pool(pool, {0: make_split(pool, 0)})
    recipe = ({"lr": 0.1, "warmup_epochs": 0, "restarts": 0} if args.method == "openmax" else {})
    warmup = args.warmup if args.warmup is not None else (6 if args.dataset == "digits" else 0)
    config = {"method": args.method, "dataset": args.dataset, "splits": [0], "seeds": [0],
              "epochs": warmup + args.epochs,
              "batch_size": 32 if args.dataset == "digits" else 128, **recipe}
    runs = OpenSetRunner(config, bundle, torch.device("cpu"))
    run = runs.runs[0]
    rows: dict[str, list[float]] = {"train": [], "head fit": [], "validation (sampled cell)": [], "grid": []}
    for epoch in range(warmup):
        run.train_epoch(runs.batch_size, epoch)
    for epoch in range(warmup, warmup + args.epochs):
        rows["train"].append(timed(lambda e=epoch: run.train_epoch(runs.batch_size, e)))
        rows["head fit"].append(timed(lambda: run.method.prepare_evaluation(lambda: run.labelled_batches("train"))))
        found: dict = {}
        rows["validation (sampled cell)"].append(timed(lambda f=found: f.update(out=open_set_metrics(run, "val")[1])))
        cells = run.method.posthoc_cells()
        rows["grid"].append(timed(lambda f=found, cs=cells: [cell_auroc(run, f["out"], c) for c in cs]))

    print(f"# {args.method} on {args.dataset} split 0, {len(run.y['train'])} training images, "
          f"{len(run.y['val_known']) + len(run.y['val_unknown'])} validation images, {len(cells)} grid cells; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    train = statistics.mean(rows["train"][1:] or rows["train"])
    print("| per epoch (mean of epochs 2…) | seconds | ratio to training |")
    print("|---|---|---|")
    for name, values in rows.items():
        mean = statistics.mean(values[1:] or values)
        print(f"| {name} | {mean:.3f} | {mean / train:.3f} |")

    head = run.method.head
    distances = [head.train_distances("euclidean")[c] for c in range(head.num_classes)]
    distances = [d for d in distances if len(d) >= 2]
    for backend in ("libmr", "scipy"):
        seconds = timed(lambda b=backend: [fit_high(d, t, b) for d in distances for t in TAILSIZES
                                           for _ in DISTANCES])
        print(f"Weibull fits for one grid pass ({len(distances) * len(TAILSIZES) * len(DISTANCES)} fits), "
              f"{backend}: {seconds:.3f} s")
    print(f"(mean fitted distance tail: {np.mean([d.max() for d in distances]):.3f})")


if __name__ == "__main__":
    main()
