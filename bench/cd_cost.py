"""What a Contrastive Disentangling epoch is made of, measured side by side in one run: making the two
views on the device, the training steps without them, and the k-means validation readout, each as a
ratio to the whole training epoch. The spec's reference (RTX 3090) says a full evaluation adds ~30%.

    python bench/cd_cost.py [--dataset digits|mnist] [--backbone auto|cnn4_native|...] [--images 4000]

MNIST comes from ../shared/datasets when present (else pass --data-root); digits needs nothing. Runs on
the GPU when one is present (pass --device cpu to force the CPU)."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import SHARED_DATASETS, timed  # noqa: E402  (puts the project root on sys.path)

from data import load_pool, transductive_split  # noqa: E402
from data.pools import ImagePool  # noqa: E402
from data.views import two_views  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402
from trainables.tasks import trial_runs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-root", default=str(SHARED_DATASETS))
    p.add_argument("--backbone", default="auto")
    p.add_argument("--images", type=int, default=4000, help="training images used (the first N)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    full = load_pool(args.dataset, Path(args.data_root))
    n = min(args.images, len(full.train_y))
    pool = ImagePool(full.name, full.train_x[:n], full.train_y[:n], full.test_x, full.test_y, full.max_value,
                     full.class_names)
    bundle = DataBundle.from_pool(pool, {0: transductive_split(pool)})
    config = {"method": "cd", "dataset": args.dataset, "splits": [0], "seeds": [0], "epochs": args.epochs,
              "batch_size": args.batch_size, "backbone": args.backbone}
    runs = trial_runs(config, bundle, device)
    run = runs.runs[0]
    method = run.method

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def epoch(e: int) -> None:
        run.train_epoch(args.batch_size, e)
        sync()

    def views_only() -> None:
        for x, _ in run.train_batches(args.batch_size):
            if len(x) == args.batch_size:
                two_views(x, method.views)
        sync()

    def readout() -> None:
        runs.readout(run, "val")

    epochs = [timed(lambda e=e: epoch(e)) for e in range(args.epochs)]
    train = statistics.median(epochs[1:] if len(epochs) > 1 else epochs)
    views = statistics.median(timed(views_only) for _ in range(3))
    val = timed(readout)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"cd on {args.dataset}: {n} training images, {len(bundle.splits[0].val_known)} validation images, "
          f"backbone {method.backbone_name} at {method.image_size} px, batch {args.batch_size}, {device.type} "
          f"({name}), {args.threads} threads, torch {torch.__version__}")
    print(f"{'part':<44} {'s':>8} {'/ epoch':>8}")
    print(f"{'training epoch (views + steps)':<44} {train:>8.2f} {1.0:>8.2f}")
    print(f"{'  of which: two views of every batch':<44} {views:>8.2f} {views / train:>8.2f}")
    print(f"{'validation readout (forward + 2 k-means)':<44} {val:>8.2f} {val / train:>8.2f}")


if __name__ == "__main__":
    main()
