"""The one-folder report (results_analysis/report.py) on hand-made experiment folders, and the search
writing it when it ends (search/main.py ``report``): no Ray, the folders are what trials leave."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from results_analysis.report import write_report
from search.cli import build_parser, validate
from search.report import TrialOutcome

PNG = b"\x89PNG\r\n\x1a\n"
BASE = {"summary.csv", "summary.md", "val_auroc_curves.png", "test_auroc_per_split.png"}
SCORE_PLOTS = {"test_roc.png", "test_score_histograms.png"}
STUDY_PLOTS = {"optuna_history.png", "optuna_importances.png", "optuna_parallel_coordinates.png"}
DISTRIBUTIONS = {"lr": optuna.distributions.FloatDistribution(1e-6, 1.0, log=True),
                 "anchor_multiplier": optuna.distributions.FloatDistribution(1.0, 20.0)}


def _scores(rng: np.random.Generator, splits: list[int], shift: float) -> pd.DataFrame:
    """test_scores.parquet of one trial: 40 known and 40 unknown test images per split, the unknown ones'
    distances ``shift`` higher on average."""
    frames = []
    for split in splits:
        for unknown in (False, True):
            frames.append(pd.DataFrame({"split": split, "seed": 0, "test_index": np.arange(40), "is_unknown": unknown,
                                        "label": 0, "pred": 0,
                                        "score_min_distance": rng.normal(shift * unknown, 1.0, 40),
                                        "score_max_activation": rng.normal(0.0, 1.0, 40)}))
    return pd.concat(frames, ignore_index=True)


def _experiment(root: Path, study_trials: int | None, scores: bool = True, values=(0.70, 0.80, 0.75, 0.72, 0.78)) -> Path:
    """A difair experiment folder: one finished trial per value in ``values`` (validation AUROC; test
    scores the further apart the higher it is), and, unless ``study_trials`` is None, its Optuna study in
    optuna.db with that many of them COMPLETE plus one PRUNED."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    configs = [{"lr": 10.0 ** -(1 + i), "anchor_multiplier": 5.0 + 3 * i} for i in range(len(values))]
    for i, (config, value) in enumerate(zip(configs, values, strict=True)):
        folder = root / f"train_trial_{i:08x}"
        folder.mkdir()
        params = {**config, "method": "difair", "dataset": "digits", "splits": [0, 1], "seeds": [0]}
        (folder / "params.json").write_text(json.dumps(params))
        reports = [{"training_iteration": e + 1, "trial_id": folder.name, "val_auroc": value - 0.1 / (e + 1)}
                   for e in range(3)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))
        frame = _scores(rng, [0, 1], shift=3 * value - 1.5)
        records = []
        for split in (0, 1):
            part = frame[frame["split"] == split]
            records += [{"split": split, "seed": 0, "phase": "val", "metric": "auroc", "value": value},
                        {"split": split, "seed": 0, "phase": "test", "metric": "auroc",
                         "value": roc_auc_score(part["is_unknown"], part["score_min_distance"])}]
        if scores:
            frame.to_parquet(folder / "test_scores.parquet", index=False)
        final = {"trial_id": folder.name, "method": "difair", "dataset": "digits", "config": config,
                 "status": "finished", "final_train_fraction": 0.8, "records": records}
        if scores:
            final["primary_score"] = "min_distance"
        (folder / "final_metrics.json").write_text(json.dumps(final))
    if study_trials is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(study_name=root.name, storage=f"sqlite:///{root}/optuna.db",
                                        direction="maximize")
            study.set_metric_names(["val_auroc"])
        for config, value in list(zip(configs, values, strict=True))[:study_trials]:
            study.add_trial(optuna.trial.create_trial(params=config, distributions=DISTRIBUTIONS, value=value))
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.5, "anchor_multiplier": 2.0},
                                                  distributions=DISTRIBUTIONS, state=optuna.trial.TrialState.PRUNED,
                                                  intermediate_values={0: 0.4}))
    return root


def test_a_search_folder_gets_roc_histograms_and_the_studys_plots(tmp_path):
    exp = _experiment(tmp_path / "exp", study_trials=5)
    facecolor = matplotlib.rcParams["axes.facecolor"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = write_report(exp)
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert matplotlib.rcParams["axes.facecolor"] == facecolor  # Optuna's ggplot style stayed in its plots
    assert {p.name for p in report.written} == BASE | SCORE_PLOTS | STUDY_PLOTS
    assert report.left_out == []
    assert len(report.plots) == 7
    for path in report.plots:
        assert path.parent == exp and path.read_bytes()[:8] == PNG


def test_roc_plot_is_of_the_config_chosen_on_validation(tmp_path, monkeypatch):
    """The curves are the saved scores of the trial best on validation (0.80), and their AUROC is the one
    its final_metrics.json records (scikit-learn on the same scores)."""
    from results_analysis import plots

    exp = _experiment(tmp_path / "exp", study_trials=None)
    seen = {}
    real = plots.plot_roc_curves

    def spy(panels, path):
        seen["panels"] = panels
        return real(panels, path)

    monkeypatch.setattr(plots, "plot_roc_curves", spy)
    write_report(exp)
    ((title, scores, column),) = seen["panels"]
    assert column == "score_min_distance" and "difair / digits" in title
    chosen = json.loads((exp / "train_trial_00000001" / "final_metrics.json").read_text())
    assert set(scores["trial_id"]) == {chosen["trial_id"]}
    for split in (0, 1):
        part = scores[scores["split"] == split]
        recorded = next(r["value"] for r in chosen["records"]
                        if (r["split"], r["phase"], r["metric"]) == (split, "test", "auroc"))
        assert roc_auc_score(part["is_unknown"], part[column]) == pytest.approx(recorded)


def test_a_study_with_one_completed_trial_gets_its_history_and_says_why_not_the_rest(tmp_path):
    exp = _experiment(tmp_path / "exp", study_trials=1)
    report = write_report(exp)
    names = {p.name for p in report.written}
    assert "optuna_history.png" in names
    assert not names & {"optuna_importances.png", "optuna_parallel_coordinates.png"}
    assert not (exp / "optuna_importances.png").exists()
    assert report.left_out == [
        "hyperparameter importances: needs 5 completed study trials, the study has 1",
        "parallel coordinates: needs 2 completed study trials, the study has 1",
    ]


def test_a_rerun_folder_without_study_or_scores_gets_no_such_plots_and_no_database(tmp_path):
    exp = _experiment(tmp_path / "rerun", study_trials=None, scores=False)
    report = write_report(exp)
    assert {p.name for p in report.written} == BASE
    assert not (exp / "optuna.db").exists()  # looking for the study made none
    assert report.left_out == ["test ROC curves: difair has no open-set score",
                               "test score histograms: difair has no open-set score"]


def test_the_command_line_writes_the_new_plots_too(tmp_path, capsys):
    from results_analysis.__main__ import main

    exp = _experiment(tmp_path / "exp", study_trials=5)
    assert main([str(exp)]) == 0
    out = capsys.readouterr().out
    for name in BASE | SCORE_PLOTS | STUDY_PLOTS:
        assert f"wrote {exp / name}" in out


# --- at the end of a search (search/main.py report) ---------------------------------------------------


def _search(tmp_path: Path, study_trials: int = 5, status: str = "finished"):
    argv = ["--method", "difair", "--dataset", "digits", "--num-samples", "5", "--splits", "0,1",
            "--storage-path", str(tmp_path / "results"), "--name", "exp"]
    request = validate(build_parser().parse_args(argv), argv)
    exp = _experiment(Path(request.experiment_path), study_trials=study_trials)
    outcomes = []
    for folder in sorted(p for p in exp.iterdir() if p.is_dir()):
        final = json.loads((folder / "final_metrics.json").read_text())
        value = next(r["value"] for r in final["records"] if r["phase"] == "val")
        outcomes.append(TrialOutcome(folder.name, folder, status, value, final=final, epochs=3))
    return request, outcomes, exp


def test_a_finished_search_writes_its_report_into_the_experiment_folder(tmp_path, capsys):
    from search.main import report

    request, outcomes, exp = _search(tmp_path)
    assert report(request, outcomes) == 0
    out = capsys.readouterr().out
    assert {p.name for p in exp.iterdir()} >= BASE | SCORE_PLOTS | STUDY_PLOTS | {"best.yaml"}
    assert f"Report: {exp}/summary.md and 7 plots in {exp}" in out.splitlines()
    assert out.index("Best config written to") < out.index("Report: ")


def test_an_interrupted_search_writes_no_report(tmp_path, capsys):
    from search.main import report

    request, outcomes, exp = _search(tmp_path)
    outcomes[-1].status = "interrupted"
    assert report(request, outcomes) == 130
    assert not (exp / "summary.md").exists() and "Report:" not in capsys.readouterr().out


def test_a_report_that_fails_is_one_error_line_and_the_search_still_succeeds(tmp_path, capsys, monkeypatch):
    import results_analysis.report
    from search.main import report

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(results_analysis.report, "write_report", broken)
    request, outcomes, exp = _search(tmp_path)
    assert report(request, outcomes) == 0
    captured = capsys.readouterr()
    assert "Best config written to" in captured.out and (exp / "best.yaml").exists()
    errors = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert errors == [f"error: the report was not written (RuntimeError: disk on fire); "
                      f"write it with: python -m results_analysis {exp}"]


def test_a_remote_experiment_gets_the_report_of_its_local_mirror_copied_up(tmp_path):
    """Remote storage: the report is written in the local mirror the summary read, then uploaded next to
    the trials (a file:// URI stands in for a bucket: the same pyarrow calls)."""
    from search.report import write_analysis_report

    mirror = _experiment(tmp_path / "scratch" / "exp", study_trials=5)
    (tmp_path / "bucket" / "exp").mkdir(parents=True)  # where the search's trials already are
    remote = f"file://{tmp_path / 'bucket' / 'exp'}"
    lines = write_analysis_report(remote, mirror, "val_auroc", None, "exp")
    assert lines == [f"Report: {remote}/summary.md and 7 plots in {remote}"]
    uploaded = {p.name: p.read_bytes() for p in (tmp_path / "bucket" / "exp").iterdir()}
    assert set(uploaded) == BASE | SCORE_PLOTS | STUDY_PLOTS
    assert all(uploaded[name] == (mirror / name).read_bytes() for name in uploaded)
