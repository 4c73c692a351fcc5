"""search/benchmark.py end to end on digits at a tiny budget: two methods, each searched and its winner
re-run on every split; Ctrl+C between stages stops with 130 and the command that continues; the same
command then finishes without running a finished stage again, and writes the table."""

from __future__ import annotations

import pytest
import yaml
from trial_files import trial_dirs

from search import benchmark_stages
from search.benchmark_main import main

ARGV = ["--dataset", "digits", "--methods", "softmax,difair", "--num-samples", "2", "--max-epochs", "2",
        "--splits", "0,1", "--seeds", "1"]


@pytest.mark.ray
def test_benchmark_stops_between_stages_and_continues_without_rerunning_a_finished_one(
        ray_session, tmp_path, capsys, monkeypatch):
    argv = [*ARGV, "--storage-path", str(tmp_path), "--name", "bench"]
    bench = tmp_path / "bench"
    say = benchmark_stages.say

    def ctrl_c_after_the_first_stage(message: str) -> None:
        say(message)
        if message.startswith("softmax/search: finished"):
            raise KeyboardInterrupt

    monkeypatch.setattr(benchmark_stages, "say", ctrl_c_after_the_first_stage)
    assert main(argv) == 130
    out = capsys.readouterr().out
    assert "interrupted between stages" in out and "--name bench" in out, out[-2000:]
    searched = {t.name: (t / "result.json").stat().st_mtime_ns for t in trial_dirs(bench / "softmax" / "search")}
    assert len(searched) == 2 and not (bench / "softmax" / "rerun").exists()

    monkeypatch.setattr(benchmark_stages, "say", say)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "softmax/search: done earlier, not run again" in out
    after = {t.name: (t / "result.json").stat().st_mtime_ns for t in trial_dirs(bench / "softmax" / "search")}
    assert after == searched  # the finished search was not run again
    assert "finished in" in out and "stages left" in out  # progress with an estimate

    state = yaml.safe_load((bench / "benchmark.yaml").read_text())
    assert set(state["stages"]) == {"softmax/search", "softmax/rerun", "difair/search", "difair/rerun"}
    assert all(s["status"] == "done" and s["wall_s"] > 0 for s in state["stages"].values())
    for method in ("softmax", "difair"):  # each re-run trained the search's winner on every digits split
        best = yaml.safe_load((bench / method / "search" / "best.yaml").read_text())["config"]
        reruns = trial_dirs(bench / method / "rerun")
        assert len(reruns) == 5
        for trial in reruns:
            params = yaml.safe_load((trial / "params.json").read_text())
            assert {k: params[k] for k in best} == best

    md = (bench / "benchmark.md").read_text()
    for row in ("softmax · MLS", "softmax · MSP", "difair · MIN_DISTANCE"):
        assert f"| {row} | digits | 5 (5) |" in md, md
    assert (bench / "benchmark.png").stat().st_size > 0
    assert (bench / "benchmark.csv").read_text().count("\n") == 4  # header + three rows

    # The same benchmark with another budget is refused in one line, and nothing runs.
    assert main([*argv, "--num-samples", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-samples (it ran with 2)" in err[0]
