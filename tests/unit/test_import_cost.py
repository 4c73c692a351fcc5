"""What a process pays to start: every trial worker imports the trainable, every command the CLI."""

from __future__ import annotations

import subprocess
import sys

from repo_paths import ROOT

ENTRY_POINTS = "import trainables.trial, search.main, search.benchmark_main, results_analysis.__main__"


def test_workers_and_commands_start_without_importing_torchvision():
    # torchvision's import loads torch._dynamo: ~2.6 core-seconds in every Ray trial worker and every
    # command on this 2-core machine (import trainables.trial 7.5 → 4.8 core-s). It is imported where its
    # readers, RandAugment or ResNets are used. A fresh process: this one has imported it already.
    code = f"{ENTRY_POINTS}; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
