"""search/benchmark.py refuses a mistake in one line with exit status 2, before anything is written."""

from __future__ import annotations

import pytest

from search.benchmark_cli import build_parser, validate
from search.benchmark_main import main
from search.benchmark_stages import RERUN, SEARCH, Stage, plan_stages, stage_argv


@pytest.mark.parametrize(("flags", "says"), [
    (["--methods", "softmax,nosuch"], "--methods: unknown nosuch"),
    (["--methods", "softmax,softmax"], "names a method twice"),
    (["--methods", ","], "--methods is empty"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--num-samples", "0"], "--num-samples must be positive"),
    (["--baseline", "nosuch"], "--baseline: unknown method"),
    (["--splits", "0,9"], "--splits"),
    (["--preset", "reference"], "no published setting on digits"),
    (["--name", "a/b"], "must be a plain folder name"),
])
def test_a_mistake_is_one_line_and_exit_2(tmp_path, capsys, flags, says):
    assert main(["--storage-path", str(tmp_path / "results"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "results").exists()


def _request(tmp_path, *flags: str):
    argv = ["--storage-path", str(tmp_path), "--name", "b", "--methods", "softmax,difair", *flags]
    return validate(build_parser().parse_args(argv), argv)


def test_stages_reuse_search_run_and_resume_what_exists(tmp_path):
    request = _request(tmp_path, "--num-samples", "3", "--max-epochs", "4", "--seeds", "2", "--final-train-fraction",
                       "1.0")
    assert plan_stages(request) == [Stage("softmax", SEARCH), Stage("softmax", RERUN), Stage("difair", SEARCH),
                                    Stage("difair", RERUN)]
    search = stage_argv(request, Stage("softmax", SEARCH))
    assert search[:8] == ["--method", "softmax", "--dataset", "digits", "--num-samples", "3", "--max-epochs", "4"]
    assert "--seeds" not in search  # a search trains one seed per split; the re-run takes --seeds
    rerun = stage_argv(request, Stage("softmax", RERUN))
    assert rerun[:4] == ["--config", str(tmp_path / "b" / "softmax" / "search" / "best.yaml"), "--splits", "all"]
    assert rerun[rerun.index("--seeds") + 1] == "2" and rerun[rerun.index("--final-train-fraction") + 1] == "1.0"
    (tmp_path / "b" / "softmax" / "search").mkdir(parents=True)  # an interrupted search resumes
    assert stage_argv(request, Stage("softmax", SEARCH))[:5] == ["--resume", "--name", "search", "--storage-path",
                                                                 str(tmp_path / "b" / "softmax")]


def test_the_continue_command_names_the_benchmark(tmp_path):
    request = _request(tmp_path)
    assert request.command.count("--name b") == 1
    unnamed = validate(build_parser().parse_args(["--storage-path", str(tmp_path)]), ["--storage-path", str(tmp_path)])
    assert f"--name {unnamed.name}" in unnamed.command and unnamed.name.startswith("benchmark-digits-")


def test_time_left_is_the_mean_finished_stage_of_each_kind(tmp_path):
    from search.benchmark_stages import BenchmarkState, remaining_estimate

    state = BenchmarkState(_request(tmp_path))
    state.stages = {"softmax/search": {"status": "done", "wall_s": 100.0},
                    "difair/search": {"status": "done", "wall_s": 200.0},
                    "softmax/rerun": {"status": "failed", "wall_s": 999.0}}  # a failed stage times nothing
    todo = [Stage("crosr", SEARCH), Stage("crosr", RERUN), Stage("difair", RERUN)]
    assert remaining_estimate(state, todo) == ("3 stages left, about 2m30s plus 2 rerun stage(s) not yet timed "
                                              "(none of that kind has finished)")
    state.stages["softmax/rerun"] = {"status": "done", "wall_s": 60.0}
    assert remaining_estimate(state, todo) == "3 stages left, about 4m30s"  # 150 + 60 + 60 s
    assert remaining_estimate(state, todo[-1:]) == "1 stage left, about 1m00s"
