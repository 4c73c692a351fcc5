"""What the discriminator and the in-run baseline cost in an adversarial-separation trial, measured
side by side: one training epoch of the same data in each update scheme, and the evaluation of the
validation images with and without the baseline pair, each as a ratio to ``mode: none`` (two
independently trained classifiers, no D).

    python bench/adversarial_cost.py [--dataset digits|mnist] [--epochs 2] [--batch-size 128]

MNIST comes from ../shared/datasets when present (else pass --data-root); digits needs nothing. The
first epoch of each scheme is a warm-up when --epochs > 1 (the median of the rest is reported)."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import SHARED_DATASETS, timed  # noqa: E402  (puts the project root on sys.path)

from data import load_pool, make_split  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402
from trainables.open_set import OpenSetRunner  # noqa: E402

SCHEMES = {
    "none (two classifiers, no D)": {"mode": "none"},
    "alternating, no baseline": {"mode": "alternating", "in_run_baseline": False},
    "alternating + in-run baseline (default)": {"mode": "alternating"},
    "joint, no baseline": {"mode": "joint", "in_run_baseline": False},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-root", default=str(SHARED_DATASETS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    pool = load_pool(args.dataset, Path(args.data_root))
    bundle = DataBundle.from_pool(pool, {0: make_split(pool, 0)})
    base = {"method": "adversarial", "dataset": args.dataset, "splits": [0], "seeds": [0], "epochs": args.epochs,
            "batch_size": args.batch_size, "lr_cls": 0.05, "lr_schedule": "cosine"}
    train: dict[str, float] = {}
    evaluate: dict[str, float] = {}
    for name, scheme in SCHEMES.items():
        run = OpenSetRunner({**base, **scheme}, bundle, torch.device("cpu")).runs[0]
        times = [timed(lambda e=e, run=run: run.train_epoch(args.batch_size, e)) for e in range(args.epochs)]
        train[name] = statistics.median(times[1:] if len(times) > 1 else times)
        evaluate[name] = timed(lambda run=run: run.outputs("val"))
    split = bundle.splits[0]
    print(f"adversarial on {args.dataset} split 0 ({len(split.train)} training, "
          f"{len(split.val_known) + len(split.val_unknown)} validation images), batch {args.batch_size}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    ref_train, ref_eval = train[next(iter(SCHEMES))], evaluate[next(iter(SCHEMES))]
    print(f"{'scheme':<42} {'train s/epoch':>13} {'/ none':>7} {'val eval s':>11} {'/ none':>7}")
    for name in SCHEMES:
        print(f"{name:<42} {train[name]:>13.2f} {train[name] / ref_train:>7.2f} "
              f"{evaluate[name]:>11.2f} {evaluate[name] / ref_eval:>7.2f}")


if __name__ == "__main__":
    main()
