"""Inference time per evaluation batch size, side by side: what ``trainables.device_data.EVAL_BATCH`` is.

Times eval-mode forward passes (no gradients, channels_last, as ``Run.evaluate`` runs them) of each
method family's small CPU trunk over the same images at several batch sizes, interleaved over
``--repeats`` rounds so that machine noise falls on every size alike, and prints the median time per
size and its ratio to the 1024 batch.

    python bench/eval_batch.py [--images 8192] [--repeats 5] [--threads 2]"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import timed  # noqa: E402  (puts the project root on sys.path)

from methods.adversarial import ThreeBlockNet  # noqa: E402
from methods.backbones import SmallCNN  # noqa: E402
from methods.crosr import DHRNet  # noqa: E402

SIZES = (128, 256, 512, 1024)


def trunks() -> dict[str, tuple[torch.nn.Module, int]]:
    """(network, input side) of each small trunk the CPU tests and digits searches use."""
    return {
        "SmallCNN 28 px (difair, softmax, openmax)": (SmallCNN(1), 28),
        "DHRNet quarter width 32 px (crosr)": (DHRNet(1, 6, 32, (16, 32, 64), 256), 32),
        "three-block net width 8, 32 px (adversarial)": (ThreeBlockNet(1, 6, 32, width=8), 32),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"eval-mode inference of {args.images} images, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'trunk':<46} " + " ".join(f"{f'batch {s}':>12}" for s in SIZES) + "   (median s; ratio to 1024)")
    for name, (net, side) in trunks().items():
        net = net.eval().to(memory_format=torch.channels_last)
        x = torch.randn(args.images, 1, side, side).contiguous(memory_format=torch.channels_last)

        @torch.no_grad()
        def run(size: int, net: torch.nn.Module = net, x: torch.Tensor = x) -> None:
            for start in range(0, len(x), size):
                net(x[start:start + size])

        run(SIZES[0])  # warm-up
        times: dict[int, list[float]] = {s: [] for s in SIZES}
        for _ in range(args.repeats):
            for size in SIZES:
                times[size].append(timed(lambda size=size: run(size)))
        medians = {s: statistics.median(v) for s, v in times.items()}
        print(f"{name:<46} " + " ".join(f"{medians[s]:>6.2f} {medians[s] / medians[1024]:>5.2f}" for s in SIZES))


if __name__ == "__main__":
    main()
