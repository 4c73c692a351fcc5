"""Experiment storage: local/NFS folders and s3:// / gs:// URIs through pyarrow, files written whole,
and the local copy the end-of-search report reads a remote experiment from."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import storage
from search.cli import build_parser, validate


def test_local_paths_become_absolute_and_bucket_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("results") == str(tmp_path / "results")
    assert storage.normalize("s3://bucket/osrtune/") == "s3://bucket/osrtune"
    assert storage.normalize("gs://bucket/x") == "gs://bucket/x"
    assert storage.join("s3://bucket/osrtune", "exp", "best.yaml") == "s3://bucket/osrtune/exp/best.yaml"
    for uri in ("ftp://host/x", "hdfs://nn/x", "http://bucket/x"):
        with pytest.raises(storage.StorageError, match="local or NFS folder"):
            storage.normalize(uri)


def test_storage_path_defaults_to_the_cluster_bucket_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.STORAGE_ENV, str(tmp_path / "shared"))
    request = validate(build_parser().parse_args(["--method", "softmax", "--name", "x"]), [])
    assert request.storage_path == str(tmp_path / "shared") and request.experiment_path == str(tmp_path / "shared/x")
    monkeypatch.delenv(storage.STORAGE_ENV)
    monkeypatch.chdir(tmp_path)
    request = validate(build_parser().parse_args(["--method", "softmax", "--name", "x"]), [])
    assert request.storage_path == str(tmp_path / "results")


def test_files_are_written_whole_and_read_back(tmp_path):
    target = str(tmp_path / "exp" / "experiment.yaml")
    assert not storage.exists(target)
    storage.write_text(target, "first")
    storage.write_text(target, "second")
    assert storage.read_text(target) == "second" and storage.exists(target)
    assert [p.name for p in (tmp_path / "exp").iterdir()] == ["experiment.yaml"]  # no partial file left
    with pytest.raises(storage.StorageError, match="cannot read it"):
        storage.read_text(str(tmp_path / "exp" / "absent.yaml"))


def test_mirror_copies_an_experiment_without_its_checkpoints(tmp_path):
    experiment = tmp_path / "bucket" / "exp"
    files = {
        "experiment.yaml": "a", "tuner.pkl": "b",
        "train_trial_1/result.json": "{}", "train_trial_1/final_metrics.json": "{}",
        "train_trial_1/checkpoint_000004/state.pt": "weights",
        "train_trial_2/gate_confusion/epoch_001.json": "[]",
    }
    for name, text in files.items():
        (experiment / name).parent.mkdir(parents=True, exist_ok=True)
        (experiment / name).write_text(text)
    copy = storage.mirror(str(experiment), tmp_path / "local")
    copied = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert copy == tmp_path / "local" / "exp"
    assert copied == sorted(n for n in files if "checkpoint_" not in n)
    assert (copy / "train_trial_1" / "result.json").read_text() == "{}"
    assert not Path(copy / "train_trial_1" / "checkpoint_000004").exists()
