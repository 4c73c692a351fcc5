"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, nothing written.
The refusals that hold whatever the method run for every method in the registry (methods.method_names()),
so a newly registered method is checked with no edit here."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_refusal import run_main
from repo_paths import ROOT

from data import DATASETS
from methods import get_method, method_names
from search.cli import runs_on
from search.main import main

METHODS = method_names()

# Refused whatever the method: each case runs once per registered method.
EVERY_METHOD = [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet': choose one of digits, mnist, svhn"),
    (["--metric", "test_auroc"], "test metrics are never an objective"),
    (["--metric", "auroc"], "use a validation metric"),
    (["--num-samples", "0"], "--num-samples must be positive"),
    (["--max-epochs", "-3"], "--max-epochs must be positive"),
    (["--seeds", "0"], "--seeds must be positive"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial must be positive"),
    (["--max-concurrent", "0"], "--max-concurrent must be positive"),
    (["--gpus-per-trial", "0.3"], "1/k"),
    (["--gpus-per-trial", "lots"], "is not a number"),
    (["--resume", "--name", "never-ran"], "no osrtune experiment"),
    (["--searcher", "grid"], "invalid choice"),
    (["--address", "http://head:8265"], "give 'auto' (the cluster this machine belongs to)"),
    (["--address", "head"], "HOST:PORT or ray://HOST:PORT"),
    (["--max-failures", "-1"], "--max-failures must be 0 or more"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be positive"),
]


def test_the_registry_holds_methods():
    assert len(METHODS) >= 2 and METHODS == sorted(set(METHODS))  # parametrizing over nothing tests nothing


@pytest.mark.parametrize("args", [["--method", "nope"], []], ids=["unknown", "missing"])
def test_an_unknown_or_missing_method_lists_every_registered_one(capsys, tmp_path, args):
    line = run_main(capsys, tmp_path / "results", *args)
    assert line.endswith(f"one of {', '.join(METHODS)}"), line


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("args", "expected"), EVERY_METHOD, ids=[" ".join(a) for a, _ in EVERY_METHOD])
def test_flag_errors_of_every_method(capsys, tmp_path, method, args, expected):
    assert expected in run_main(capsys, tmp_path / "results", "--method", method, *args)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_config_key_names_the_methods_config_class(capsys, tmp_path, method):
    path = tmp_path / "best.yaml"
    path.write_text(f"method: {method}\ndataset: digits\nconfig: {{not_a_key: 3}}\n")
    line = run_main(capsys, tmp_path / "results", "--config", str(path))
    assert f"unknown {get_method(method).Config.__name__} keys ['not_a_key']" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "difair", "--splits", "0,7"], "digits has splits 0,1,2,3,4"),
        (["--method", "difair", "--splits", "zero"], "give 'all' or split ids"),
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
    ],
)
def test_method_specific_flag_errors(capsys, tmp_path, args, expected):
    assert expected in run_main(capsys, tmp_path / "results", *args)


@pytest.mark.parametrize("method", METHODS)
def test_missing_dataset_says_where_and_how(capsys, tmp_path, method):
    # A dataset the method runs on that is not embedded (digits is): an empty --data-root lacks it.
    dataset = next(d for d in DATASETS if d != "digits" and runs_on(get_method(method), d))
    line = run_main(capsys, tmp_path / "results", "--method", method, "--dataset", dataset,
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
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("flags", [["--gpus-per-trial", "1"], ["--cpus-per-trial", "64"]])
def test_trial_no_node_can_hold_fails_before_any_trial(ray_session, capsys, tmp_path, flags, method):
    line = run_main(capsys, tmp_path / "results", "--method", method, *flags)
    assert "no node of this Ray cluster can hold a trial of" in line
    assert "(largest node: 2 CPUs, 0 GPUs)" in line


@pytest.mark.parametrize("uri", ["ftp://host/results", "http://bucket/x"])
def test_storage_scheme_other_than_a_bucket_is_refused(capsys, tmp_path, uri):
    rc = main(["--method", "difair", "--storage-path", uri])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "storage must be a local or NFS folder, or an s3:// / gs:// / gcs:// URI" in err


@pytest.mark.parametrize("method", METHODS)
def test_existing_experiment_is_not_overwritten(capsys, tmp_path, method):
    (tmp_path / "results" / "mine").mkdir(parents=True)
    rc = main(["--method", method, "--storage-path", str(tmp_path / "results"), "--name", "mine"])
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
