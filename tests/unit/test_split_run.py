"""Building one run of a trial (trainables/split_run.py) from a split as a Ray trial receives it."""

from __future__ import annotations

import subprocess
import sys

from repo_paths import ROOT

READ_ONLY_SPLIT = """
import dataclasses, warnings, torch
from data import load_pool, make_split
from trainables.device_data import DataBundle
from trainables.split_run import build_split_run
pool = load_pool("digits", "unused")
split = make_split(pool, 0)
for field in dataclasses.fields(split):
    value = getattr(split, field.name)
    if hasattr(value, "setflags"):
        value.setflags(write=False)
warnings.filterwarnings("error", message="The given NumPy array is not writable")
build_split_run("softmax", {}, DataBundle.from_pool(pool, {0: split}), 0, 0, torch.device("cpu"))
"""


def test_a_run_built_from_read_only_split_indices_makes_pytorch_warn_nothing():
    # A Ray trial gets the split's index arrays read-only (zero-copy from the object store), and
    # torch.from_numpy warned about that in every trial. PyTorch warns once per process, so this runs in
    # a fresh one.
    done = subprocess.run([sys.executable, "-c", READ_ONLY_SPLIT], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
