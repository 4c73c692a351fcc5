"""What ClustNet's per-epoch measurement and files cost next to its training, measured side by side.

Per epoch of a ``clustnet`` trial: training (every seed), the evaluation on the training and
validation images (metrics and count matrices), and ``write_epoch``'s files (JSON + PNG of the
gate-vs-class matrices). Prints each as a ratio to the training time, and the training throughput at
several batch sizes (small batches are the method's point, and cost Python overhead per step).

    python bench/clustnet_cost.py [--dataset digits|mnist] [--epochs 3] [--seeds 3]

MNIST comes from ../shared/datasets when present (else pass --data-root); digits needs nothing."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import SHARED_DATASETS, timed  # noqa: E402  (puts the project root on sys.path)

from data import load_pool  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402
from trainables.tasks import task_splits, trial_runs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-root", default=str(SHARED_DATASETS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    pool = load_pool(args.dataset, Path(args.data_root))
    bundle = DataBundle.from_pool(pool, task_splits(pool, "clustnet", [0]))
    base = {"method": "clustnet", "dataset": args.dataset, "splits": [0], "seeds": list(range(args.seeds)),
            "epochs": args.epochs, "balance_weight": 0.1}
    runs = trial_runs({**base, "batch_size": 4}, bundle, torch.device("cpu"))
    rows: dict[str, list[float]] = {"train": [], "evaluate train + val": [], "write_epoch (JSON + PNG)": []}
    with tempfile.TemporaryDirectory() as folder:
        for epoch in range(args.epochs):
            rows["train"].append(sum(timed(lambda r=r, e=epoch: r.train_epoch(runs.batch_size, e)) for r in runs.runs))
            rows["evaluate train + val"].append(timed(lambda e=epoch: runs._evaluate_all(e + 1)))
            rows["write_epoch (JSON + PNG)"].append(timed(lambda e=epoch: runs.write_epoch(Path(folder), e + 1)))
    train = statistics.median(rows["train"])
    print(f"clustnet on {args.dataset}, {args.seeds} seeds, batch 4, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'per epoch':<28} {'median s':>9} {'/ train':>8}")
    for name, values in rows.items():
        print(f"{name:<28} {statistics.median(values):>9.3f} {statistics.median(values) / train:>8.3f}")

    print(f"\ntraining throughput, one seed, one epoch ({len(bundle.splits[0].train)} images)")
    for batch in (4, 16, 64):
        one = trial_runs({**base, "seeds": [0], "batch_size": batch}, bundle, torch.device("cpu")).runs[0]
        one.train_epoch(batch, 0)  # warm-up
        seconds = timed(lambda b=batch, r=one: r.train_epoch(b, 1))
        print(f"  batch {batch:>3}: {seconds:7.2f} s, {len(bundle.splits[0].train) / seconds:8.0f} images/s")


if __name__ == "__main__":
    main()
