"""Bad input caught before anything starts (issue 15): storage, --export, --address, damaged dataset files,
non-finite and out-of-range config values, binary --config files; printed commands that paste back
intact; an analysis that skips a half-written trial. One line naming the problem and the fix, exit
status 2, no traceback, nothing written."""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_refusal import run_main
from repo_paths import MNIST_ROOT
from test_analysis import _epoch, _records, _write_trial

from data import DataMissingError, check_available, load_pool
from methods import get_method, method_names
from search import storage
from search.cli import build_parser, validate
from search.main import main

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
needs_mnist = pytest.mark.skipif(not (MNIST_ROOT / "MNIST/raw/t10k-images-idx3-ubyte").exists(),
                                 reason="the shared MNIST copy is not on this machine")


@pytest.fixture()
def started(monkeypatch) -> list:
    """Stands in for execute (Ray, trials, files): a rejected command never reaches it."""
    calls: list = []

    def fake_execute(request):
        calls.append(request)
        return 0

    monkeypatch.setattr("search.main.execute", fake_execute)
    return calls


def tree(root: Path) -> list[tuple[str, bytes | None]]:
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


# --- 6: --storage-path that cannot be written -------------------------------------------------


def test_storage_path_that_is_a_file(capsys, tmp_path, started):
    target = tmp_path / "results"
    target.write_text("not a folder\n")
    line = run_main_at(capsys, target, "--method", "softmax")
    assert line == (f"error: --storage-path {target}: {target} is a file, not a folder; give the path of a folder "
                    "(it may not exist yet)")
    assert target.read_text() == "not a folder\n" and not started


def test_storage_path_under_a_file_cannot_be_created_even_by_root(capsys, tmp_path, started):
    (tmp_path / "afile").write_text("x")
    before = tree(tmp_path)
    line = run_main_at(capsys, tmp_path / "afile" / "results", "--method", "softmax")
    assert f"{tmp_path / 'afile'} is a file, not a folder" in line
    assert tree(tmp_path) == before and not started


# Root passes os.access everywhere (bar read-only mounts), so this one runs only as another user.
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder: os.access and the check say yes")
def test_storage_path_without_write_permission(capsys, tmp_path, started):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        line = run_main_at(capsys, locked / "results", "--method", "softmax")
    finally:
        locked.chmod(0o755)
    assert line == f"error: --storage-path {locked / 'results'}: no permission to write in {locked}; give a " \
                   "folder you can write to"
    assert list(locked.iterdir()) == [] and not started


def test_writable_check_creates_nothing_and_leaves_buckets_alone(tmp_path):
    storage.check_writable(str(tmp_path / "a" / "b" / "c"))
    storage.check_writable("s3://bucket/results/name")  # no network touched, nothing refused
    assert list(tmp_path.iterdir()) == []


def run_main_at(capsys, where: Path, *args: str) -> str:
    """run_main for a storage path that may exist (a file): one line, exit 2, no traceback."""
    rc = main([*args, "--storage-path", str(where)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    return lines[0]


# --- 7: --export naming a folder -------------------------------------------------------------


def test_export_to_an_existing_folder_is_refused_before_start(capsys, tmp_path, started):
    folder = tmp_path / "exports"
    folder.mkdir()
    line = run_main(capsys, tmp_path / "results", "--method", "softmax", "--export", str(folder))
    assert line == f"error: --export {folder}: is a folder; give a file name such as {folder / 'best.yaml'}"
    assert list(folder.iterdir()) == [] and not started


def _finished(tmp_path: Path, value: float = 0.9):
    from search.report import TrialOutcome

    records = [{"split": s, "seed": 0, "phase": ph, "metric": "auroc", "value": value - 0.1 * s}
               for s in (0, 1) for ph in ("val", "test")]
    return TrialOutcome("t_00000", tmp_path / "trial", "finished", value, epochs=1,
                        final={"config": {"lr": 0.1, "batch_size": 32}, "records": records})


def _request(tmp_path: Path, *args: str):
    argv = ["--method", "softmax", "--num-samples", "1", "--max-epochs", "1", *args]
    return validate(build_parser().parse_args(argv), argv)


def test_export_failing_at_the_end_still_prints_the_summary(capsys, tmp_path):
    from search.main import report

    export = tmp_path / "out" / "best.yaml"
    export.parent.mkdir()
    request = _request(tmp_path, "--storage-path", str(tmp_path / "results"), "--name", "x", "--export", str(export))
    export.mkdir()  # became a folder while the search ran
    rc = report(request, [_finished(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "Best config (trial t_00000)" in out and "test metrics, mean ± std" in out
    best = tmp_path / "results" / "x" / "best.yaml"
    assert f"Best config written to {best}" in out
    # This made-up search has no trial folders, so the analysis report says in its own line that it
    # could not be written; the export's failure is one line of its own.
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("error: the report was not written")]
    assert len(lines) == 1 and lines[0].startswith(f"error: --export {export}: cannot write it (")
    assert lines[0].endswith(f"); the best config is in {best}")
    assert yaml.safe_load(best.read_text())["config"] == {"lr": 0.1, "batch_size": 32}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


def test_write_text_onto_a_folder_raises_and_leaves_no_partial(tmp_path):
    (tmp_path / "best.yaml").mkdir()
    with pytest.raises(storage.StorageError, match="cannot write it"):
        storage.write_text(str(tmp_path / "best.yaml"), "a: 1\n")
    assert [p.name for p in tmp_path.iterdir()] == ["best.yaml"]


# --- 8: --address nobody answers at -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_address_nobody_listens_at(capsys, tmp_path, started, scheme):
    port = _closed_port()
    line = run_main(capsys, tmp_path / "results", "--method", "softmax", "--address", f"{scheme}127.0.0.1:{port}")
    assert line.startswith(f"error: --address {scheme}127.0.0.1:{port}: cannot reach 127.0.0.1:{port} (")
    assert line.endswith("); check the head node's address and port, or drop --address to start Ray here")
    assert not started


def test_address_whose_host_does_not_exist(capsys, tmp_path, started):
    line = run_main(capsys, tmp_path / "results", "--method", "softmax", "--address", "nosuchhost.invalid:6379")
    assert line.startswith("error: --address nosuchhost.invalid:6379: cannot reach nosuchhost.invalid:6379 (")
    assert not started


def test_address_that_answers_is_accepted(capsys, tmp_path, started):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert main(["--method", "softmax", "--address", f"127.0.0.1:{port}",
                     "--storage-path", str(tmp_path / "results")]) == 0
    assert len(started) == 1 and started[0].address == f"127.0.0.1:{port}"


# --- 9: damaged dataset files -----------------------------------------------------------------


def _mnist_root(tmp_path: Path, damaged: str, content: bytes) -> Path:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        if name == damaged:
            (raw / name).write_bytes(content)
        else:
            (raw / name).symlink_to(MNIST_ROOT / "MNIST" / "raw" / name)
    return tmp_path / "data"


def _real(name: str, size: int | None = None) -> bytes:
    with open(MNIST_ROOT / "MNIST" / "raw" / name, "rb") as fh:
        return fh.read(size if size is not None else -1)


@pytest.mark.mnist
@needs_mnist
@pytest.mark.parametrize(
    ("damaged", "make", "problem"),
    [
        ("t10k-images-idx3-ubyte", lambda: np.random.default_rng(0).bytes(5000),
         "not an IDX file of unsigned bytes with 3 dimensions (magic number "),
        ("t10k-images-idx3-ubyte", lambda: _real("t10k-images-idx3-ubyte", 100_000),
         "truncated: 100000 bytes, its header says 10000 × 28 × 28 images need 7840016"),
        ("train-labels-idx1-ubyte", lambda: _real("train-labels-idx1-ubyte")[:-1],
         "truncated: 60007 bytes, its header says 60000 labels need 60008"),
        ("train-labels-idx1-ubyte", lambda: _real("train-labels-idx1-ubyte") + b"\x00" * 7,
         "too long: 60015 bytes, its header says 60000 labels need 60008"),
        ("t10k-labels-idx1-ubyte", lambda: _real("t10k-labels-idx1-ubyte", 4) + (60000).to_bytes(4, "big"),
         "the header says 60000 labels, MNIST's t10k file has 10000"),
        ("train-images-idx3-ubyte", lambda: b"", "empty"),
    ],
)
def test_damaged_mnist_file_is_named_with_the_fix(capsys, tmp_path, started, damaged, make, problem):
    root = _mnist_root(tmp_path, damaged, make())
    path = root / "MNIST" / "raw" / damaged
    with pytest.raises(DataMissingError) as err:
        load_pool("mnist", root)
    assert str(err.value).startswith(f"mnist file {path} is corrupted (")
    assert problem in str(err.value)
    assert str(err.value).endswith("): delete it and run again with --download to fetch a fresh copy "
                                   "(or point --data-root / OSRTUNE_DATA at a good copy)")
    line = run_main(capsys, tmp_path / "results", "--method", "softmax", "--dataset", "mnist", "--data-root", str(root))
    assert line == f"error: {err.value}" and not started


@pytest.mark.mnist
@needs_mnist
def test_damaged_mnist_file_is_refused_with_download_too(tmp_path):
    # torchvision skips the download when the file exists and then reads the damaged bytes.
    root = _mnist_root(tmp_path, "t10k-labels-idx1-ubyte", b"\x01\x02")
    with pytest.raises(DataMissingError, match="t10k-labels-idx1-ubyte is corrupted"):
        check_available("mnist", root, download=True)


@pytest.mark.mnist
def test_intact_mnist_passes(tmp_path):
    if not (MNIST_ROOT / "MNIST/raw/train-images-idx3-ubyte").exists():
        pytest.skip("the shared MNIST copy is not on this machine")
    check_available("mnist", MNIST_ROOT, download=False)


@pytest.mark.parametrize(
    ("dataset", "files", "named"),
    [
        ("cifar10", [f"cifar-10-batches-py/{f}" for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                                                          "batches.meta")], "cifar-10-batches-py/data_batch_1"),
        ("svhn", ["train_32x32.mat", "test_32x32.mat"], "train_32x32.mat"),
        ("cifar100_20", [f"cifar-100-python/{f}" for f in ("train", "test", "meta")], "cifar-100-python/train"),
    ],
)
def test_damaged_cifar_and_svhn_files_fail_torchvisions_md5(capsys, tmp_path, started, dataset, files, named):
    root = tmp_path / "data"
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(np.random.default_rng(1).bytes(2000))
    expected = (f"{dataset} file {root / named} is corrupted (its MD5 differs from the one torchvision publishes: "
                "truncated or altered): delete it and run again with --download to fetch a fresh copy "
                "(or point --data-root / OSRTUNE_DATA at a good copy)")
    with pytest.raises(DataMissingError) as err:
        load_pool(dataset, root)
    assert str(err.value) == expected
    method = "cd" if dataset == "cifar100_20" else "softmax"
    line = run_main(capsys, tmp_path / "results", "--method", method, "--dataset", dataset, "--data-root", str(root))
    assert line == f"error: {expected}" and not started


# --- 10 and 12: config values ----------------------------------------------------------------


def _float_keys(cls) -> list[str]:
    hints = typing.get_type_hints(cls.Config)
    return [k for k in cls.Config.keys() if hints[k] in (float, float | None)]


@pytest.mark.parametrize("name", method_names())
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1e999"])
def test_non_finite_numbers_are_refused_in_every_method_config(name, bad):
    cls = get_method(name)
    for key in _float_keys(cls):
        with pytest.raises(ValueError) as err:
            cls.Config.from_dict({key: bad})
        assert str(err.value).startswith(f"config key {key!r} must be a finite float")
        assert f"e.g. {key}: " in str(err.value)


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "best.yaml"
    path.write_text(text)
    return path


def test_nan_lr_in_a_config_file(capsys, tmp_path, started):
    path = _config_file(tmp_path, "method: softmax\ndataset: digits\nconfig: {lr: .nan, batch_size: 32}\n")
    line = run_main(capsys, tmp_path / "results", "--config", str(path))
    assert line == f"error: --config {path}: config key 'lr' must be a finite float > 0, e.g. lr: 0.3; got nan"
    assert not started


def test_yaml_1_2_floats_are_read_as_numbers(capsys, tmp_path, started):
    # PyYAML (YAML 1.1) reads 1e-3 and 5e4 as strings; YAML 1.2 and every user read them as numbers.
    path = _config_file(tmp_path, "method: softmax\ndataset: digits\nconfig: {lr: 1e-3, weight_decay: 5E-4}\n")
    assert main(["--config", str(path), "--storage-path", str(tmp_path / "results")]) == 0
    assert started[0].fixed_config == {"lr": 0.001, "weight_decay": 0.0005}
    config = get_method("difair").Config.from_dict({"lr": "+1.5e-1", "anchor_multiplier": ".5e1"})
    assert (config.lr, config.anchor_multiplier) == (0.15, 5.0)


@pytest.mark.parametrize(
    ("method", "values", "expected"),
    [
        ("difair", {"lr": "fast"}, "config key 'lr' must be float > 0, e.g. lr: 0.3; got 'fast'"),
        ("difair", {"lr": -1}, "config key 'lr' must be float > 0, e.g. lr: 0.3; got -1.0"),
        ("difair", {"anchor_multiplier": "10"}, "config key 'anchor_multiplier' must be float > 0, e.g. "
                                                "anchor_multiplier: 10.0; got '10'"),
        ("difair", {"batch_size": 0}, "config key 'batch_size' must be int >= 1, e.g. batch_size: 128; got 0"),
        ("difair", {"batch_size": True}, "config key 'batch_size' must be int >= 1, e.g. batch_size: 128; got True"),
        ("difair", {"features_per_class": 2.5},
         "config key 'features_per_class' must be int >= 1, e.g. features_per_class: 5; got 2.5"),
        ("difair", {"lr_schedule": "cosine"}, "config key 'lr_schedule': lr_schedule must be one of cosine_restarts, "
                                              "cosine_restarts_reference; got 'cosine'; e.g. lr_schedule: cosine_restarts"),
        ("softmax", {"dropout": 1.0}, "config key 'dropout' must be float in [0, 1), e.g. dropout: 0.2; got 1.0"),
        ("softmax", {"label_smoothing": 1},
         "config key 'label_smoothing' must be float in [0, 1), e.g. label_smoothing: 0.0; got 1.0"),
        ("adversarial", {"batch_size": 1}, "config key 'batch_size' must be int >= 2, e.g. batch_size: 256; got 1"),
        ("adversarial", {"d_width": 0}, "config key 'd_width' must be int >= 1 or null, e.g. d_width: 16; got 0"),
        ("crosr", {"step_gamma": 0.0}, "config key 'step_gamma' must be float in (0, 1], e.g. step_gamma: 0.5; got 0.0"),
        ("clustnet", {"lr_gate": -0.1}, "config key 'lr_gate' must be float > 0 or null, e.g. lr_gate: 0.01; got -0.1"),
        ("cd", {"crop_scale_min": 2}, "config key 'crop_scale_min' must be float in (0, 1], e.g. crop_scale_min: 0.08; "
                                      "got 2.0"),
        ("cd", {"blur": "yes"}, "config key 'blur' must be true or false, e.g. blur: false; got 'yes'"),
        ("openmax", {"tailsize": 1}, "config key 'tailsize' must be int >= 2, e.g. tailsize: 20; got 1"),
        ("crosr", {"av": "latents"}, "config key 'av': av must be one of "),
    ],
)
def test_config_errors_name_the_key_its_range_and_an_example(method, values, expected):
    with pytest.raises(ValueError) as err:
        get_method(method).Config.from_dict(values)
    assert str(err.value).startswith(expected)
    assert "e.g. " in str(err.value)


@pytest.mark.parametrize("name", method_names())
def test_every_numeric_key_has_a_range_its_default_meets(name):
    """Each int/float key of every method declares its valid range (methods/base.py): the default lies in
    it, a value just inside is accepted and one just outside is refused naming the key."""
    from methods.base import key_range

    cls = get_method(name)
    config = cls.Config()
    hints = typing.get_type_hints(cls.Config)
    for key in cls.Config.keys():
        kind = next((t for t in (int, float) if hints[key] in (t, t | None)), None)
        if kind is None:
            continue
        rng = key_range(cls.Config, key)
        assert rng is not None, f"{name}: config key {key!r} has no declared range"
        default = getattr(config, key)
        assert default is None or rng.contains(default), (name, key, default)
        inside, outside = [], []
        if rng.low is not None:
            inside.append(rng.low + (1e-6 if rng.low_open else 0))
            outside.append(rng.low if rng.low_open else rng.low - 1)
        if rng.high is not None:
            inside.append(rng.high - (1e-6 if rng.high_open else 0))
            outside.append(rng.high if rng.high_open else rng.high + 1)
        for value in inside:
            cls.Config.from_dict({key: kind(value)})
        for value in outside:
            with pytest.raises(ValueError, match=f"^config key '{key}' must be {kind.__name__} "):
                cls.Config.from_dict({key: value})


# --- 11: a binary --config ------------------------------------------------------------------


def test_binary_config_file(capsys, tmp_path, started):
    path = tmp_path / "best.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    line = run_main(capsys, tmp_path / "results", "--config", str(path))
    assert line == (f"error: --config {path}: not a text file (byte 0x89 at offset 0 is not UTF-8); "
                    "give the path of an exported best.yaml")
    assert not started


# --- 12: printed commands paste back intact -----------------------------------------------------


def test_commands_with_spaces_are_quoted(capsys, tmp_path):
    from search.experiment_file import write_experiment_file
    from search.main import report
    from search.report import Summary, render

    where = tmp_path / "my results"
    argv = ["--method", "softmax", "--num-samples", "2", "--max-epochs", "1", "--name", "my run",
            "--storage-path", str(where)]
    request = validate(build_parser().parse_args(argv), argv)
    write_experiment_file(request)
    command = yaml.safe_load((where / "my run" / "experiment.yaml").read_text())["command"]
    assert shlex.split(command) == ["python", "search/run.py", *argv]

    assert report(request, [_finished(tmp_path)]) == 130  # one of two trials: interrupted
    resume = capsys.readouterr().out.split("Continue with: ", 1)[1].strip()
    assert shlex.split(resume) == ["python", "search/run.py", "--resume", "--name", "my run",
                                   "--storage-path", str(where)]

    summary = Summary("softmax", "digits", "val_auroc", [_finished(tmp_path)])
    summary.chosen = summary.outcomes
    best = str(where / "my run" / "best.yaml")
    text = render(summary, best)
    rerun = text.split("Re-run it on every split: ", 1)[1].splitlines()[0]
    assert shlex.split(rerun) == ["python", "search/run.py", "--config", best]


def test_exported_command_is_quoted(tmp_path):
    from search.report import Summary, export_yaml

    summary = Summary("softmax", "digits", "val_auroc", [_finished(tmp_path)])
    summary.chosen = summary.outcomes
    path = str(tmp_path / "a b" / "best.yaml")
    export_yaml(summary, path)
    assert shlex.split(yaml.safe_load(Path(path).read_text())["command"]) == ["python", "search/run.py", "--config", path]


# --- 12: results_analysis skips a half-written trial ---------------------------------------------


def test_analysis_skips_a_half_written_final_metrics_with_a_warning(capsys, tmp_path):
    from results_analysis.__main__ import main as analysis_main

    exp = tmp_path / "exp"
    for i, auroc in enumerate((0.8, 0.6)):
        _write_trial(exp, f"t{i}", f"t{i}", {"lr": 0.1 * (i + 1)}, [_epoch(auroc, {})],
                     final={"method": "softmax", "dataset": "digits", "config": {"lr": 0.1 * (i + 1)},
                            "records": _records({(0, 0, "val", "auroc"): auroc, (0, 0, "test", "auroc"): auroc})})
    broken = exp / "t1" / "final_metrics.json"
    broken.write_text(broken.read_text()[:40])  # the writer died mid-file
    assert analysis_main([str(exp), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"results_analysis: warning: skipped trial t1: cannot read {broken}: {_json_error(broken)}; "
        "it is left out of the summary"]
    assert "80.0" in out and "60.0" not in out
    assert (tmp_path / "out" / "summary.md").is_file()


def _json_error(path: Path) -> str:
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return str(err)
    raise AssertionError("the file parses")


def test_analysis_of_only_half_written_trials_fails_in_one_line(capsys, tmp_path):
    from results_analysis.__main__ import main as analysis_main

    broken = tmp_path / "exp" / "t" / "final_metrics.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"records": [')
    assert analysis_main([str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"results_analysis: {tmp_path / 'exp'}: no readable trial "
                                               f"(t: cannot read {broken}: ")
    assert sorted(p.name for p in (tmp_path / "exp").rglob("*")) == ["final_metrics.json", "t"]


def test_a_trial_line_counts_one_epoch_in_the_singular():
    from search.report import TrialOutcome

    line = TrialOutcome("abc", Path("."), "interrupted", 0.5, epochs=1).line("val_auroc")
    assert line.endswith("  1 epoch"), line
    assert TrialOutcome("abc", Path("."), "interrupted", 0.5, epochs=7).line("val_auroc").endswith("  7 epochs")
