"""What Ray Tune costs on top of the training it runs, measured side by side in one run.

(a) a DIFAIR trial's epoch time inside Tune over the same epochs in a bare PyTorch loop (target ≤ 1.05);
(b) N short trials through Tune with actor reuse over the same trials run one after another without Ray.

    python bench/overhead.py [--dataset mnist|digits] [--epochs 4] [--trials 8]

MNIST comes from ../shared/datasets when present (else pass --data-root); digits needs nothing."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402

from data import load_pool, make_split  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402
from trainables.open_set import OpenSetRunner  # noqa: E402
from trainables.trial import train_trial  # noqa: E402


def bare_epochs(config: dict, bundle: DataBundle, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    runs = OpenSetRunner(config, bundle, torch.device("cpu"))
    times = []
    for epoch in range(runs.epochs):
        start = time.perf_counter()
        runs.train_epoch(epoch)
        times.append(time.perf_counter() - start)
    return times


def tune_fit(trainable, param_space: dict, storage: Path, name: str) -> tune.ResultGrid:
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_auroc", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
    return tuner.fit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--storage", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()

    pool = load_pool(args.dataset, args.data_root if args.dataset != "digits" else ".")
    bundle = DataBundle.from_pool(pool, {0: make_split(pool, 0)})
    config = {"method": "difair", "dataset": args.dataset, "splits": [0], "seeds": [0],
              "epochs": args.epochs, "warmup_epochs": 0}
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    trainable = tune.with_resources(tune.with_parameters(train_trial, bundle=bundle), {"cpu": args.cpus})
    storage = Path(args.storage).absolute()
    stamp = time.strftime("%Y%m%d-%H%M%S")

    # (a) One trial, same config and thread count; the first epoch (allocator, kernel warm-up) is left out.
    bare = bare_epochs(config, bundle, args.cpus)
    grid = tune_fit(trainable, config, storage, f"epoch-{stamp}")
    in_tune = list(grid[0].metrics_dataframe["time_this_iter_s"])
    bare_mean, tune_mean = statistics.mean(bare[1:]), statistics.mean(in_tune[1:])

    # (b) N one-epoch trials on one split of digits-sized work: Tune with actor reuse vs a plain loop.
    short = {**config, "epochs": 1}
    lrs = [0.05 * (i + 1) for i in range(args.trials)]
    start = time.perf_counter()
    for lr in lrs:
        bare_epochs({**short, "lr": lr}, bundle, args.cpus)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    tune_fit(trainable, {**short, "lr": tune.grid_search(lrs)}, storage, f"trials-{stamp}")
    through_tune = time.perf_counter() - start
    ray.shutdown()

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, ray {ray.__version__}, device cpu, {args.cpus} threads")
    print(f"(a) DIFAIR {args.dataset} split 0, {args.epochs} epochs: bare {bare_mean:.2f} s/epoch, "
          f"in Tune {tune_mean:.2f} s/epoch -> ratio {tune_mean / bare_mean:.3f} (target <= 1.05)")
    print(f"(b) {args.trials} one-epoch trials: sequential without Ray {sequential:.1f} s, through Tune with "
          f"actor reuse {through_tune:.1f} s -> ratio {through_tune / sequential:.2f} "
          f"({(through_tune - sequential) / args.trials:.2f} s per trial)")


if __name__ == "__main__":
    main()
