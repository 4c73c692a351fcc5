"""GPU training throughput, measured side by side in one run (issue 20).

(a) One trial's steady epoch time (the first epoch, which compiles and autotunes, is not counted) of
    DIFAIR and the softmax baseline on VGG32 at 32 px, at fp32, bf16 and bf16 + torch.compile; ratios
    against fp32.
(b) Aggregate training images/s of k = 1, 2, 4, 8 DIFAIR trials at once through Ray Tune, each holding
    1/k of the GPU (``--gpus-per-trial 1/k``); ratios against k = 1. Each trial's images/s is its training
    images over its median steady epoch time; the trials of one k run at the same time, so their sum is
    what the GPU delivers.

Data: synthetic CIFAR-shaped images (50,000 training images of 3 × 32 × 32, uint8, 6 known classes; 1,000
validation knowns and unknowns), so no dataset is needed and the numbers measure compute only.

    python bench/gpu_throughput.py                # on a GPU machine: the benchmark
    python bench/gpu_throughput.py --smoke        # anywhere: a tiny size, says so (what CI runs)

Without CUDA it always runs the smoke size, k = 1, 2 on CPUs instead of GPU shares, and without compile
(Inductor's first compile takes minutes on a small CPU): its table is marked as not the benchmark."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data import Split  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402

KNOWN, UNKNOWN = tuple(range(6)), tuple(range(6, 10))
SMOKE_NOTE = "(CPU smoke size: not the benchmark)"


@dataclass(frozen=True)
class Size:
    images: int  # training images
    held_out: int  # validation knowns, and as many unknowns
    epochs: int  # the first is warm-up
    ks: tuple[int, ...]
    compile: bool
    batch_size: int = 128


BENCHMARK = Size(images=50_000, held_out=1_000, epochs=4, ks=(1, 2, 4, 8), compile=True)
SMOKE = Size(images=64, held_out=16, epochs=2, ks=(1, 2), compile=False, batch_size=32)


def synthetic_bundle(size: Size, seed: int = 0) -> DataBundle:
    """CIFAR-shaped random images: ``size.images`` of the known classes to train on, then the held-out
    validation knowns and unknowns; a small test set of each (the trial's final test)."""
    rng = np.random.default_rng(seed)
    n_train = size.images + 2 * size.held_out
    train_x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    train_y = np.concatenate([rng.choice(KNOWN, size.images + size.held_out), rng.choice(UNKNOWN, size.held_out)])
    test_x = rng.integers(0, 256, (2 * size.held_out, 3, 32, 32), dtype=np.uint8)
    test_y = np.concatenate([rng.choice(KNOWN, size.held_out), rng.choice(UNKNOWN, size.held_out)])
    index = np.arange(n_train, dtype=np.int64)
    known_test = np.arange(size.held_out, dtype=np.int64)
    split = Split(dataset="cifar10", id=0, known=KNOWN, unknown=UNKNOWN, train=index[:size.images],
                  train_full=index[:size.images + size.held_out], val_known=index[size.images:size.images + size.held_out],
                  val_unknown=index[size.images + size.held_out:], test_known=known_test,
                  test_unknown=known_test + size.held_out, test_known_full=known_test)
    return DataBundle(dataset="cifar10", train_x=train_x, train_y=train_y.astype(np.int64), test_x=test_x,
                      test_y=test_y.astype(np.int64), max_value=255, splits={0: split})


def trial_config(method: str, size: Size, precision: str, compile: bool, seed: int = 0) -> dict:
    return {"method": method, "dataset": "cifar10", "splits": [0], "seeds": [seed], "backbone": "vgg32",
            "epochs": size.epochs, "batch_size": size.batch_size, "precision": precision, "compile": compile}


def epoch_seconds(method: str, size: Size, bundle: DataBundle, device: torch.device, precision: str,
                  compile: bool) -> float:
    """Median steady epoch time of one trial, in this process (no Ray)."""
    from trainables.tasks import trial_runs

    runner = trial_runs(trial_config(method, size, precision, compile), bundle, device)
    times = []
    for epoch in range(size.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        runner.train_epoch(epoch)  # ends in .item() calls: the GPU has finished the epoch
        times.append(time.perf_counter() - start)
    del runner
    return statistics.median(times[1:])


def packed_images_per_second(k: int, size: Size, bundle: DataBundle, gpu: bool, storage: Path,
                             method: str = "difair") -> tuple[float, list[float]]:
    """k concurrent trials through Tune, 1/k GPU each (or one CPU each without a GPU): the sum of their
    training images/s, and each trial's."""
    from ray import tune

    from trainables.trial import train_trial

    resources = {"cpu": 1, "gpu": 1 / k} if gpu else {"cpu": 1}
    trainable = tune.with_resources(tune.with_parameters(train_trial, bundle=bundle), resources)
    space = {**trial_config(method, size, "auto", False), "seeds": tune.grid_search([[s] for s in range(k)])}
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(metric="val_auroc", mode="max", reuse_actors=True,
                                                   max_concurrent_trials=k),
                       run_config=tune.RunConfig(name=f"pack-{k}", storage_path=str(storage), verbose=0))
    grid = tuner.fit()
    rates = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"k = {k}: a trial failed: {result.error}")
        epochs = result.metrics_dataframe["time_this_iter_s"].tolist()[1:]
        rates.append(size.images / statistics.median(epochs))
    return sum(rates), rates


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny size (always so without CUDA)")
    parser.add_argument("--methods", default="difair,softmax", help="methods of part (a)")
    parser.add_argument("--ks", help="concurrent trials of part (b), e.g. 1,2,4,8")
    parser.add_argument("--storage", help="where part (b) writes its Tune folders (default: a temporary one)")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    size = BENCHMARK if gpu and not args.smoke else SMOKE
    if args.ks:
        size = Size(size.images, size.held_out, size.epochs, tuple(int(k) for k in args.ks.split(",")),
                    size.compile, size.batch_size)
    note = "" if size is BENCHMARK or (gpu and not args.smoke) else f" {SMOKE_NOTE}"
    device = torch.device("cuda" if gpu else "cpu")
    where = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    lines = [f"gpu_throughput on {where}, torch {torch.__version__}, {platform.node()}: {size.images} "
             f"training images of 3x32x32, batch {size.batch_size}, {size.epochs} epochs (first not timed){note}"]
    bundle = synthetic_bundle(size)

    lines.append(f"\n(a) one trial's epoch time, VGG32{note}")
    lines.append("| method | fp32 s | bf16 s | bf16 + compile s | bf16 / fp32 | bf16 + compile / fp32 |")
    lines.append("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        fp32 = epoch_seconds(method, size, bundle, device, "fp32", False)
        bf16 = epoch_seconds(method, size, bundle, device, "bf16", False)
        if size.compile:
            compiled = epoch_seconds(method, size, bundle, device, "bf16", True)
            shown, ratio = f"{compiled:.2f}", f"{fp32 / compiled:.2f}x"
        else:
            shown, ratio = "not run (CPU smoke)", "-"
        lines.append(f"| {method} | {fp32:.2f} | {bf16:.2f} | {shown} | {fp32 / bf16:.2f}x | {ratio} |")

    import ray

    started = not ray.is_initialized()
    if started:
        from search.experiment import worker_env

        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": worker_env()}, **({} if gpu else {"num_cpus": max(size.ks)}))
    share = "GPU share 1/k" if gpu else "one CPU each, no GPU"
    lines.append(f"\n(b) k DIFAIR trials at once through Tune ({share}, precision auto){note}")
    lines.append("| k | aggregate images/s | per trial images/s | aggregate / k=1 |")
    lines.append("|---|---|---|---|")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            storage = Path(args.storage) if args.storage else Path(tmp)
            base = None
            for k in size.ks:
                total, each = packed_images_per_second(k, size, bundle, gpu, storage.absolute())
                base = base or total
                lines.append(f"| {k} | {total:.0f} | {', '.join(f'{r:.0f}' for r in each)} | {total / base:.2f}x |")
    finally:
        if started:
            ray.shutdown()
    for line in lines:
        print(line, flush=True)
    return lines


if __name__ == "__main__":
    main()
