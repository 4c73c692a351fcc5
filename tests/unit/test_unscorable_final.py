"""A trial's own failure and a final model that cannot be scored are results, not crashes (issue 15,
items 10 and 13). Tune's retries (--max-failures) are for lost workers and nodes: an exception the
trial's code raises ends the trial, reported with its reason and NaN metrics, never retried. A final
model OpenMax cannot fit writes final_metrics.json with status "unscorable" and the reason; the search
goes on and its summary says what to try."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from data import load_pool, make_split
from methods.openmax import OpenMax
from results_analysis import tables as T
from search.optuna_search import PruningAwareOptunaSearch, make_sampler, make_storage
from search.report import Summary, TrialOutcome, render
from trainables import trial
from trainables.device_data import DataBundle
from trainables.open_set import OpenSetRunner

UNSCORABLE_ADVICE = OpenMax.unscorable_advice

# Two SGD steps at a tiny LR: some class has no correctly classified training image yet, so OpenMax
# cannot fit the final model (tests/unit/test_openmax_runs.py shows the same epoch reporting NaN).
UNFITTABLE_CROSR = {"method": "crosr", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 1,
                    "batch_size": 256, "lr": 0.01}
DIVERGING_SOFTMAX = {"method": "softmax", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 2,
                     "batch_size": 64, "lr": 1e8, "warmup_epochs": 0}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> DataBundle:
    pool = load_pool("digits", tmp_path_factory.mktemp("nodata"))
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


def test_unscorable_final_model_writes_its_reason_instead_of_raising(digits, tmp_path):
    torch.set_num_threads(2)
    runs = OpenSetRunner(UNFITTABLE_CROSR, digits, torch.device("cpu"))
    last = runs.train_epoch(0)
    assert math.isnan(last["val_auroc"])
    final = runs.write_final(tmp_path, "t0", last)
    written = json.loads((tmp_path / "final_metrics.json").read_text())
    assert written == json.loads(json.dumps(final, sort_keys=True))
    assert written["status"] == "unscorable" and written["trial_id"] == "t0"
    assert written["reason"].startswith("OpenMax: no valid Weibull fit for class")
    assert written["config"]["lr"] == 0.01 and written["method"] == "crosr"
    assert written["records"] == []  # no test metric, not even a NaN one to average in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_metrics.json"]  # no scores, no grid, no .tmp


class FakeContext:
    """What train_trial asks of Tune's context."""

    def __init__(self, trial_dir: Path) -> None:
        self.trial_dir = trial_dir

    def get_trial_dir(self) -> str:
        return str(self.trial_dir)

    def get_trial_id(self) -> str:
        return "t0"

    def get_trial_resources(self) -> SimpleNamespace:
        return SimpleNamespace(required_resources={"CPU": 2})


@pytest.fixture()
def reports(monkeypatch, tmp_path) -> list[dict]:
    """train_trial outside Ray: its reports land in the returned list, its trial folder is tmp_path."""
    threads = torch.get_num_threads()
    reported: list[dict] = []
    monkeypatch.setattr(trial.tune, "get_context", lambda: FakeContext(tmp_path))
    monkeypatch.setattr(trial.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trial.tune, "report", lambda metrics, checkpoint=None: reported.append(metrics))
    monkeypatch.setattr(trial.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n0"))
    yield reported
    torch.set_num_threads(threads)


def test_diverging_trial_reports_its_error_instead_of_raising_it(digits, reports, tmp_path):
    assert trial.train_trial(DIVERGING_SOFTMAX, digits) is None  # returns: Tune sees no failure to retry
    (report,) = reports
    assert report["trial_error"].startswith("DivergedError: softmax: train loss became")
    assert report["epoch"] == 0 and report["node_id"] == "n0"
    # No epoch was reported before: the names come from a freshly built trial, the objective among them.
    assert {"val_auroc", "val_oscr", "val_acc", "train_loss"} <= set(report)
    assert all(math.isnan(v) for k, v in report.items() if k not in ("trial_error", "epoch", "node_id"))
    text = (tmp_path / "trial_error.txt").read_text()
    assert text.splitlines()[0] == report["trial_error"]
    assert "Traceback (most recent call last)" in text and "train_epoch" in text


def test_failure_after_an_epoch_reports_that_epochs_metrics_as_nan(digits, reports, monkeypatch):
    def write_epoch(self, trial_dir, epoch):
        if epoch == 2:
            raise KeyError("lost a file")

    monkeypatch.setattr(OpenSetRunner, "write_epoch", write_epoch)
    config = {**DIVERGING_SOFTMAX, "lr": 0.05, "epochs": 3}
    trial.train_trial(config, digits, checkpoint_every=10)
    first, error = reports
    assert "trial_error" not in first and math.isfinite(first["val_auroc"])
    assert error["trial_error"] == "KeyError: 'lost a file'"
    assert error["epoch"] == 2  # epochs trained, not Tune's count of reports
    numeric = {k for k, v in first.items() if isinstance(v, float) and k != "epoch"}
    assert numeric <= set(error) and all(math.isnan(error[k]) for k in numeric)
    assert "runs" not in error  # an analysis keeps the last real per-run values


def test_failure_before_a_report_names_the_post_hoc_objectives_too(digits, reports, monkeypatch):
    def train_epoch(self, epoch):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(OpenSetRunner, "train_epoch", train_epoch)
    trial.train_trial({**UNFITTABLE_CROSR, "posthoc_objective": "grid_best"}, digits)
    (report,) = reports
    assert report["trial_error"] == "RuntimeError: out of memory"
    # A fresh crosr model cannot be fitted either: the names come from the stand-in outputs.
    assert {"val_auroc", "val_auroc_sampled", "val_oscr", "posthoc_best_val_auroc"} <= set(report)
    assert math.isnan(report["val_auroc"])


def test_optuna_is_told_fail_for_a_trial_error_and_an_unscorable_final(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"

    def define(t: optuna.Trial) -> dict:
        t.suggest_float("lr", 1e-3, 1.0, log=True)
        return {"method": "softmax"}

    searcher = PruningAwareOptunaSearch(space=define, metric="val_auroc", mode="max",
                                        sampler=make_sampler("optuna", 0), storage=make_storage(url),
                                        study_name="s", max_t=4)
    searcher.suggest("a")
    searcher.on_trial_result("a", {"val_auroc": 0.5, "training_iteration": 1})
    error = {"val_auroc": math.nan, "training_iteration": 2, "trial_error": "DivergedError: …"}
    searcher.on_trial_result("a", error)
    searcher.on_trial_complete("a", error)
    # All epochs trained, but the final model unscorable: Optuna refuses NaN, which left it RUNNING.
    searcher.suggest("b")
    searcher.on_trial_complete("b", {"val_auroc": math.nan, "training_iteration": 4})
    errored, unscorable = optuna.load_study(study_name="s", storage=url).trials
    assert errored.state == TrialState.FAIL and errored.intermediate_values == {1: 0.5}
    assert unscorable.state == TrialState.FAIL


def outcome(name: str, status: str, reason: str = "", restarts: int = 0) -> TrialOutcome:
    return TrialOutcome(name, Path(name), status, math.nan, reason=reason, epochs=3, restarts=restarts)


WEIBULL = "OpenMax: no valid Weibull fit for class 1 (tailsize 20, distance euclidean): no correctly classified training samples"


def test_summary_of_only_unscorable_trials_says_so_in_one_line_with_advice():
    outcomes = [outcome("a", "unscorable", WEIBULL), outcome("b", "unscorable", WEIBULL)]
    lines = render(Summary("crosr", "digits", "val_auroc", outcomes), None).strip().splitlines()
    assert lines[0].startswith("crosr on digits: 2 trials, 0 finished, 0 pruned, 0 errored, 2 unscorable")
    assert all("unscorable" in ln and WEIBULL in ln and "restarted" not in ln for ln in lines[1:3])
    assert lines[3:] == [f"No best config: no trial's final model could be scored (e.g. {WEIBULL}); {UNSCORABLE_ADVICE}."]
    assert "--max-epochs" in UNSCORABLE_ADVICE and "learning rate" in UNSCORABLE_ADVICE and "grid" in UNSCORABLE_ADVICE


def test_summary_with_some_unscorable_trials_adds_the_advice():
    outcomes = [outcome("a", "unscorable", WEIBULL), outcome("b", "errored", "DivergedError: x")]
    lines = render(Summary("crosr", "digits", "val_auroc", outcomes), None).strip().splitlines()
    assert lines[3:] == [f"1 trial ended unscorable (the final model could not be scored, reasons above): "
                         f"{UNSCORABLE_ADVICE}.", "No trial finished all its epochs: no best config."]


def test_analysis_keeps_unscorable_and_errored_trials_out_of_the_means(tmp_path):
    exp = tmp_path / "exp"
    run = {"split0_seed0": {"val_auroc": 0.7}}
    common = {"method": "crosr", "dataset": "digits", "config": {"lr": 0.1}}
    for name, final in (("fin", {**common, "status": "finished", "records": [
                            {"split": 0, "seed": 0, "phase": "test", "metric": "auroc", "value": 0.8}]}),
                        ("uns", {**common, "config": {"lr": 0.01}, "status": "unscorable", "reason": WEIBULL,
                                 "records": []}),
                        ("err", None)):
        folder = exp / name
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"lr": 0.1, "method": "crosr", "dataset": "digits"}))
        rows = [{"training_iteration": 1, "trial_id": name, "val_auroc": 0.7, "runs": run}]
        if final is not None:
            (folder / "final_metrics.json").write_text(json.dumps({"trial_id": name, **final}))
        else:
            rows.append({"training_iteration": 2, "trial_id": name, "val_auroc": math.nan, "epoch": 1,
                         "trial_error": "DivergedError: x"})
            (folder / "trial_error.txt").write_text("DivergedError: x\n\nTraceback …\n")
        (folder / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    df = T.load_experiment(exp)
    status = df.drop_duplicates("trial_id").set_index("trial_id")["status"].to_dict()
    assert status == {"fin": "finished", "uns": "unscorable", "err": "errored"}
    summary = T.summarize(df, phase="test")
    assert summary["n_runs"].tolist() == [1] and summary["mean"].tolist() == [0.8]
    curves = T.load_curves(exp)
    assert curves[curves["trial_id"] == "err"]["training_iteration"].tolist() == [1]  # not the error's report
