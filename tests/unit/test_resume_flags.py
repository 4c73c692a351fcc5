"""--resume continues an experiment as it was started: a flag that would change it is refused in one
line listing every such flag and the value it ran with (Tune restores its searcher, scheduler and
trial resources from its own state, so a new value would be silently ignored). --metric is checked
against what the method reports before anything starts, and an experiment started with an objective
its method never reports says how to start again."""

from __future__ import annotations

import dataclasses

import pytest

from methods import get_method, method_names
from results_analysis.catalogue import OSR_METRICS
from search.cli import build_parser, validate
from search.experiment_file import write_experiment_file
from search.main import main
from trainables.tasks import objective_of, reported_metrics, task_of

OSR_METHODS = [m for m in method_names() if task_of(m).class_splits]


def started(tmp_path, *flags: str, metric: str | None = None) -> list[str]:
    """Writes the experiment.yaml a search with ``flags`` starts with (what --resume reads); returns the
    flags naming it."""
    where = ["--name", "exp", "--storage-path", str(tmp_path / "results")]
    argv = ["--method", "softmax", "--num-samples", "2", "--max-epochs", "1", "--scheduler", "fifo", *flags, *where]
    request = validate(build_parser().parse_args(argv), argv)
    if metric is not None:
        request = dataclasses.replace(request, metric=metric)
    write_experiment_file(request)
    return where


def files_under(path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_resume_refuses_every_changed_flag_in_one_line(tmp_path, capsys):
    where = started(tmp_path)
    before = files_under(tmp_path)
    rc = main(["--resume", *where, "--num-samples", "4", "--max-epochs", "3", "--metric", "val_acc",
               "--scheduler", "asha"])
    line = one_error_line(capsys)
    assert rc == 2
    for flag, was in [("--num-samples", "2"), ("--max-epochs", "1"), ("--metric", "val_auroc"),
                      ("--scheduler", "fifo")]:
        assert f"{flag} (it ran with {flag} {was})" in line, line
    assert "another --name" in line
    assert files_under(tmp_path) == before


def test_resume_refuses_flags_it_cannot_compare(tmp_path, capsys):
    where = started(tmp_path)
    assert main(["--resume", *where, "--final-train-fraction", "1.0"]) == 2
    assert "--final-train-fraction" in one_error_line(capsys)


def test_resume_accepts_flags_that_repeat_the_started_values_or_may_change(tmp_path):
    where = started(tmp_path, "--seeds", "2", "--splits", "0,1")
    argv = ["--resume", *where, "--method", "softmax", "--num-samples", "2", "--max-epochs", "1", "--splits", "1,0",
            "--seeds", "2", "--scheduler", "fifo", "--checkpoint-every", "7", "--data-root", str(tmp_path)]
    request = validate(build_parser().parse_args(argv), argv)
    assert (request.num_samples, request.max_epochs, request.splits, request.seeds) == (2, 1, [0, 1], [0, 1])
    assert request.scheduler == "fifo" and request.checkpoint_every == 7  # the trainable's own setting applies


def test_an_objective_the_method_does_not_report_is_refused_before_anything_is_written(tmp_path, capsys):
    rc = main(["--method", "softmax", "--metric", "val_nonexistent", "--num-samples", "1", "--max-epochs", "1",
               "--storage-path", str(tmp_path / "results")])
    line = one_error_line(capsys)
    assert rc == 2 and "--metric val_nonexistent: softmax does not report it" in line, line
    assert "val_auroc," in line and "val_auroc_msp" in line and "test_" not in line
    assert not (tmp_path / "results").exists()


def test_an_objective_only_some_methods_report_is_checked_per_method(tmp_path, capsys):
    argv = ["--method", "crosr", "--metric", "val_auroc_mls", "--storage-path", str(tmp_path)]
    assert validate(build_parser().parse_args(argv), argv).metric == "val_auroc_mls"
    assert main(["--method", "difair", "--metric", "val_auroc_mls", "--storage-path", str(tmp_path)]) == 2
    assert "difair does not report it" in one_error_line(capsys)


@pytest.mark.parametrize("method", OSR_METHODS)
def test_every_open_set_method_reports_the_metrics_accepted_without_a_probe(method):
    reported = reported_metrics(method)
    assert {f"val_{m}" for m in OSR_METRICS} <= reported
    assert objective_of(get_method(method)) in reported


def test_resuming_an_experiment_started_with_an_unreported_objective_says_how_to_start_again(tmp_path, capsys):
    where = started(tmp_path, metric="val_nonexistent")  # as a search from before the check was
    before = files_under(tmp_path)
    assert main(["--resume", *where]) == 2
    line = one_error_line(capsys)
    assert "experiment exp cannot continue" in line and "val_nonexistent" in line and "new --name" in line, line
    assert main(["--resume", *where, "--metric", "val_auroc"]) == 2  # the objective of a saved search is fixed
    assert "--metric (it ran with --metric val_nonexistent)" in one_error_line(capsys)
    assert files_under(tmp_path) == before
