"""The benchmark figure (results_analysis.plots.plot_benchmark) is written as a PNG, and not at all for
an empty table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from results_analysis.plots import plot_benchmark

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _runs() -> pd.DataFrame:
    records = [
        {"row": row, "split": split, "seed": seed, "value": base + 0.01 * split - 0.005 * seed}
        for row, base in (("softmax · MLS", 0.93), ("openmax · openmax", 0.88))
        for split in range(5)
        for seed in range(2)
    ]
    # A diverged run must not stop the figure from being drawn.
    records.append({"row": "crosr · openmax", "split": 0, "seed": 0, "value": math.nan})
    records.append({"row": "crosr · openmax", "split": 1, "seed": 0, "value": 0.85})
    return pd.DataFrame(records)


def test_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "benchmark.png"
    assert plot_benchmark(_runs(), {"softmax · MLS": 0.936, "not a row": 0.5}, path, metric_label="AUROC")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_empty_runs_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "benchmark.png"
    empty = pd.DataFrame(columns=["row", "split", "seed", "value"])
    assert plot_benchmark(empty, {"softmax · MLS": 0.936}, path) is False
    assert not path.exists()
