"""bench/gpu_throughput.py's smoke size runs end to end (issue 20): on this CPU it trains the synthetic
CIFAR-shaped set with DIFAIR at fp32 and bf16 in-process (the GPU run adds the softmax baseline) and
k = 1, 2 DIFAIR trials through Tune, and prints both tables marked as not the benchmark. No number is
checked: tests never assert on time. About 2 minutes on the shared 2-core machine under load."""

from __future__ import annotations

import sys

import pytest
import torch
from repo_paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import gpu_throughput  # noqa: E402


@pytest.mark.ray
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine run the benchmark itself")
def test_smoke_size_prints_both_tables_marked_as_smoke(ray_session, tmp_path):
    lines = gpu_throughput.main(["--smoke", "--methods", "difair", "--storage", str(tmp_path)])
    text = "\n".join(lines)
    assert gpu_throughput.SMOKE_NOTE in lines[0]
    assert text.count(gpu_throughput.SMOKE_NOTE) == 3  # the header and both tables
    rows_a = [ln for ln in lines if ln.startswith("| difair |")]
    assert len(rows_a) == 1 and all("not run (CPU smoke)" in r for r in rows_a)
    rows_b = [ln for ln in lines if ln.startswith(("| 1 |", "| 2 |"))]
    assert len(rows_b) == 2 and rows_b[0].endswith("| 1.00x |")
