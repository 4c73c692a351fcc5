"""What surviving failures costs a search, measured side by side in one run: the same search (same
seed, same trials) with Tune's experiment state saved after every event (what search/run.py sets, so
a killed driver re-runs no finished trial) against Ray's default period (≥ 10 s), and with a
checkpoint every epoch (--checkpoint-every 1) against the default every 5.

    python bench/failure_cost.py [--trials 8] [--epochs 10] [--repeats 2]

Each search runs in its own process (the state-save period is read when Tune starts)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT

SETTINGS = {
    "state every event, checkpoint every 5": ({"TUNE_GLOBAL_CHECKPOINT_S": "0"}, 5),
    "state Ray default (≥10 s), checkpoint every 5": ({"TUNE_GLOBAL_CHECKPOINT_S": "auto"}, 5),
    "state every event, checkpoint every epoch": ({"TUNE_GLOBAL_CHECKPOINT_S": "0"}, 1),
}


def search_seconds(env: dict[str, str], checkpoint_every: int, trials: int, epochs: int, storage: str) -> float:
    name = f"bench-{time.monotonic_ns()}"
    cmd = [sys.executable, "search/run.py", "--method", "softmax", "--dataset", "digits", "--splits", "0",
           "--num-samples", str(trials), "--max-epochs", str(epochs), "--scheduler", "fifo", "--max-concurrent", "2",
           "--checkpoint-every", str(checkpoint_every), "--storage-path", storage, "--name", name]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; softmax on digits, "
          f"{args.trials} trials × {args.epochs} epochs, 2 at a time; wall time of the whole command, "
          f"median of {args.repeats} (settings interleaved)")
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    with tempfile.TemporaryDirectory() as storage:
        for _ in range(args.repeats):
            for label, (env, every) in SETTINGS.items():
                times[label].append(search_seconds(env, every, args.trials, args.epochs, storage))
    base = statistics.median(times["state Ray default (≥10 s), checkpoint every 5"])
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label:<46} {median:6.1f} s   ratio to Ray's defaults {median / base:.2f}")


if __name__ == "__main__":
    main()
