"""Adding a method is adding two files: in a scratch copy of the repository, ``methods/toy.py`` (the
softmax baseline with only its registered name changed) and ``spaces/toy.py`` (softmax's search space,
unchanged), nothing else. The copy's search then runs ``--method toy`` end to end and exports it, and
the copy's contract test covers ``toy`` without an edit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# What a copy of the repository leaves out when git cannot list its files.
NOT_COPIED = (".git", ".venv", "results", "__pycache__", ".pytest_cache", ".ruff_cache", "*.db", "out")

pytestmark = pytest.mark.ray  # the copy's search starts a Ray instance of its own


def copy_repository(dest: Path) -> None:
    """The tracked and untracked, not ignored, files of the working tree (what a clone plus the work in
    progress holds), without the environment, results or caches."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_COPIED), dirs_exist_ok=True)
        return
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def add_toy_method(copy: Path) -> None:
    """methods/toy.py and spaces/toy.py from softmax's files; the registered name is the only change."""
    source = (copy / "methods" / "softmax.py").read_text()
    assert source.count('@register("softmax")') == 1
    (copy / "methods" / "toy.py").write_text(source.replace('@register("softmax")', '@register("toy")'))
    shutil.copy2(copy / "spaces" / "softmax.py", copy / "spaces" / "toy.py")


def copy_env(copy: Path) -> dict[str, str]:
    """This environment with the copy, not this repository, on the import path (conftest.py puts the
    repository there for Ray's workers)."""
    return {**os.environ, "PYTHONPATH": str(copy)}


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_files") / "repo"
    root.mkdir()
    copy_repository(root)
    add_toy_method(root)
    return root


def test_search_runs_and_exports_a_method_added_as_two_files(copy, tmp_path):
    export = tmp_path / "toy.yaml"
    run = subprocess.run(
        [sys.executable, "search/run.py", "--method", "toy", "--dataset", "digits", "--num-samples", "2",
         "--max-epochs", "2", "--splits", "0", "--export", str(export),
         "--storage-path", str(tmp_path / "results")],
        cwd=copy, env=copy_env(copy), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = yaml.safe_load(export.read_text())
    assert (doc["method"], doc["dataset"]) == ("toy", "digits")
    assert {"lr", "batch_size", "label_smoothing"} <= set(doc["config"])  # drawn from spaces/toy.py
    assert doc["metrics"]["test"]["auroc"]["n"] == 1
    # The console as a user sees it (issue 18): the compact progress, not Tune's tables, and the commands
    # that show this experiment, not Ray's hint at its temporary session folder.
    before_summary = run.stdout.split("toy on digits: 2 trials,")[0].splitlines()
    experiment = next(p for p in (tmp_path / "results").iterdir() if p.is_dir())
    assert f"TensorBoard:      tensorboard --logdir {experiment}" in before_summary
    assert f"Optuna dashboard: optuna-dashboard sqlite:///{experiment}/optuna.db" in before_summary
    assert sum(" started " in line for line in before_summary) == 2
    assert sum(" finished " in line or " pruned " in line for line in before_summary) == 2
    assert not [line for line in before_summary if "╭" in line or "session_" in line or "Trial status" in line]
    assert len(before_summary) <= 12, "\n".join(before_summary)


def test_contract_test_covers_the_new_method_without_an_edit(copy, tmp_path):
    report = tmp_path / "junit.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         str(copy / "tests" / "unit" / "test_method_contract.py"), "-k", "toy"],
        cwd=copy, env=copy_env(copy), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {case.get("name"): [child.tag for child in case] for case in cases}
    assert len(outcomes) >= 5 and all("[toy]" in name for name in outcomes), outcomes
    ran = {name: tags for name, tags in outcomes.items() if not tags}  # no skipped, failure or error child
    assert ran == outcomes, {name: tags for name, tags in outcomes.items() if tags}
