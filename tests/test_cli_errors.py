"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.main import main

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys, storage: Path, *args: str) -> str:
    rc = main([*args, "--storage-path", str(storage)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not storage.exists(), "a rejected command wrote into the results folder"
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "nope"], "unknown method 'nope': choose one of adversarial, cd, clustnet, crosr, difair, openmax, softmax"),
        (["--method", "difair", "--dataset", "imagenet"], "choose one of digits, mnist, svhn"),
        (["--method", "difair", "--splits", "0,7"], "digits has splits 0,1,2,3,4"),
        (["--method", "difair", "--splits", "zero"], "give 'all' or split ids"),
        (["--method", "difair", "--metric", "test_auroc"], "test metrics are never an objective"),
        (["--method", "difair", "--num-samples", "0"], "--num-samples must be positive"),
        (["--method", "difair", "--max-epochs", "-3"], "--max-epochs must be positive"),
        (["--method", "difair", "--gpus-per-trial", "0.3"], "1/k"),
        (["--method", "difair", "--gpus-per-trial", "lots"], "is not a number"),
        (["--method", "difair", "--resume", "--name", "never-ran"], "no osrtune experiment"),
        (["--method", "difair", "--searcher", "grid"], "invalid choice"),
        (["--method", "clustnet", "--splits", "1"], "clustnet trains on every class at once (one split, 0)"),
        (["--method", "clustnet", "--dataset", "cifar+10"], "clustnet runs on digits, mnist, svhn, cifar10"),
        (["--method", "clustnet", "--metric", "val_auroc"], "clustnet reports val_ metrics binary_acc"),
        (["--method", "clustnet", "--metric", "test_mean_cluster_acc"], "such as val_mean_cluster_acc"),
        (["--method", "difair", "--metric", "val_mean_cluster_acc"], "is a clustering metric"),
        (["--method", "difair", "--metric", "val_backbone_nmi"], "is a clustering metric"),
        (["--method", "difair", "--dataset", "cifar100_20"], "cifar100_20 has no open-set class splits"),
        (["--method", "cd", "--metric", "val_auroc"], "cd reports val_ metrics backbone_nmi"),
        (["--method", "cd", "--metric", "test_backbone_nmi"], "such as val_backbone_nmi"),
        (["--method", "cd", "--splits", "2"], "cd trains on every class at once (one split, 0)"),
        (["--method", "difair", "--address", "http://head:8265"], "give 'auto' (the cluster this machine belongs to)"),
        (["--method", "difair", "--address", "head"], "HOST:PORT or ray://HOST:PORT"),
        (["--method", "difair", "--max-failures", "-1"], "--max-failures must be 0 or more"),
        (["--method", "difair", "--checkpoint-every", "0"], "--checkpoint-every must be positive"),
    ],
)
def test_flag_errors(capsys, tmp_path, args, expected):
    assert expected in run_main(capsys, tmp_path / "results", *args)


def test_missing_dataset_says_where_and_how(capsys, tmp_path):
    line = run_main(capsys, tmp_path / "results", "--method", "difair", "--dataset", "cifar10",
                    "--data-root", str(tmp_path / "empty"))
    assert "--download" in line and str(tmp_path / "empty") in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read it"),
        ("method: [difair\n", "not valid YAML"),
        ("method: difair\n", "expected a mapping with keys method, dataset, config"),
        ("method: difair\ndataset: digits\nconfig: {lr: 0.1, not_a_key: 3}\n", "unknown DifairConfig keys ['not_a_key']"),
        ("method: difair\ndataset: digits\nconfig: {lr: fast}\n", "must be float"),
        ("method: clustnet\ndataset: digits\nconfig: {positive_classes: [0, 1], negative_classes: [2, 3]}\n",
         "disjoint, non-empty lists covering the classes 0-9"),
        ("method: cd\ndataset: digits\nconfig: {backbone: resnet101}\n", "backbone must be one of auto"),
    ],
)
def test_config_file_errors(capsys, tmp_path, content, expected):
    path = tmp_path / "best.yaml"
    if content is not None:
        path.write_text(content)
    assert expected in run_main(capsys, tmp_path / "results", "--config", str(path))


@pytest.mark.ray
@pytest.mark.parametrize("flags", [["--gpus-per-trial", "1"], ["--cpus-per-trial", "64"]])
def test_trial_no_node_can_hold_fails_before_any_trial(ray_session, capsys, tmp_path, flags):
    line = run_main(capsys, tmp_path / "results", "--method", "difair", *flags)
    assert "no node of this Ray cluster can hold a trial of" in line
    assert "(largest node: 2 CPUs, 0 GPUs)" in line


@pytest.mark.parametrize("uri", ["ftp://host/results", "http://bucket/x"])
def test_storage_scheme_other_than_a_bucket_is_refused(capsys, tmp_path, uri):
    rc = main(["--method", "difair", "--storage-path", uri])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "storage must be a local or NFS folder, or an s3:// / gs:// / gcs:// URI" in err


def test_existing_experiment_is_not_overwritten(capsys, tmp_path):
    (tmp_path / "results" / "mine").mkdir(parents=True)
    rc = main(["--method", "difair", "--storage-path", str(tmp_path / "results"), "--name", "mine"])
    assert rc == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert list((tmp_path / "results" / "mine").iterdir()) == []


def test_command_line_process_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "search/run.py", "--method", "difair", "--dataset", "nope",
                           "--storage-path", str(tmp_path / "results")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown dataset 'nope'" in proc.stderr
    assert not (tmp_path / "results").exists()
