"""Ray end to end for every registered method: the real ``search/main.py`` on digits at a tiny budget
(Tune, OptunaSearch over a SQLite study, ASHA), then a re-run of the exported YAML.

One search per method for the whole module, shared by every check of it: first what every method's
search must produce (exit 0, a winner chosen on validation and exported, a study holding every trial in
the state Tune left it, TensorBoard curves, end files of finished trials only, a re-run reproducing the
winner), then what a particular method or kind of method adds (the OpenMax post-hoc grid, a non-core
objective, the adversarial in-run baseline, CD's setting label, ClustNet's gate files)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trial_files import results, study_trials, trial_dirs

from data import load_pool
from methods import get_method, method_names
from results_analysis.catalogue import OSR_METRICS
from results_analysis.metrics import CLUSTERING_METRICS
from results_analysis.report import MIN_IMPORTANCE_TRIALS
from search.cli import Request, build_parser, validate
from search.main import main
from search.tensorboard_log import metric_tag
from spaces import config_from_trial
from trainables.tasks import Task, task_of, task_splits

pytestmark = [
    pytest.mark.ray,
    # ASHA's cutoff at a rung where every value so far is NaN (CROSR's first, unscorable epochs).
    pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning"),
]
NUM_SAMPLES = 2
MAX_EPOCHS = 2
# Beyond what a method's task needs (--splits for open-set methods, which default to all five): the
# search that checks aggregation over two splits (a cheap method), the one searched on a non-core
# objective, ClustNet's objective as a mean over two seeds (three by default), and two budgets. CROSR:
# OpenMax cannot fit DHRNet until every class has two correctly classified training images; at batch
# 256 (the seeded sampler's first draw) its model is scorable after epochs 4-5 and from epoch 7 on (at 8:
# validation accuracy 0.85), so it has 8. CD: an epoch of its ResNet-18 on two views of every digit
# costs tens of seconds here, so it has 1 (ASHA's pruning is seen in the other searches).
METHOD_ARGS = {
    "difair": ["--splits", "0,1"],
    "openmax": ["--metric", "val_oscr"],
    "clustnet": ["--seeds", "2"],
    "crosr": ["--max-epochs", "8"],
    "cd": ["--max-epochs", "1"],
}
META_KEYS = ("method", "dataset", "splits", "seeds")


@dataclasses.dataclass
class Search:
    method: str
    args: list[str]
    rc: int
    out: str
    root: Path
    export: Path
    request: Request  # what the arguments came to

    @property
    def experiment(self) -> Path:
        return self.root / "search"

    @property
    def metric(self) -> str:
        return self.request.metric

    @property
    def name(self) -> str:
        """The objective's metric name in final files and exports (no ``val_``)."""
        return self.metric.removeprefix("val_")

    @property
    def runs(self) -> int:
        return len(self.request.splits) * len(self.request.seeds)

    @property
    def task(self) -> Task:
        return task_of(self.method)

    def trials(self) -> list[Path]:
        return trial_dirs(self.experiment)

    def finished(self) -> dict[Path, dict]:
        """final_metrics.json of every trial whose final model was scored, by trial folder."""
        docs = {t: json.loads((t / "final_metrics.json").read_text())
                for t in self.trials() if (t / "final_metrics.json").exists()}
        return {t: d for t, d in docs.items() if d["status"] == "finished"}


def run_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


class Searches:
    """Each method's search and re-run, run on first use and kept for the module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._searches: dict[str, Search] = {}
        self._reruns: dict[str, tuple[int, str, dict]] = {}

    def get(self, method: str) -> Search:
        if method not in self._searches:
            self._searches[method] = self._search(method)
        return self._searches[method]

    def _search(self, method: str) -> Search:
        root = self.root / method
        root.mkdir()
        export = root / "exported.yaml"
        args = ["--method", method, "--dataset", "digits", "--num-samples", str(NUM_SAMPLES),
                "--max-epochs", str(MAX_EPOCHS), "--max-concurrent", "1", "--seed", "0"]
        if task_of(method).class_splits:
            args += ["--splits", "0"]
        # A later flag wins in argparse, so a method's own budget or splits replace the defaults.
        args += METHOD_ARGS.get(method, [])
        args += ["--storage-path", str(root), "--name", "search", "--export", str(export)]
        request = validate(build_parser().parse_args(args), args)
        rc, out = run_main(args)
        return Search(method, args, rc, out, root, export, request)

    def rerun(self, method: str) -> tuple[int, str, dict]:
        """The exported YAML re-run on the search's splits and seeds (one trial per pair): exit status,
        output and the re-run's best.yaml."""
        if method not in self._reruns:
            search = self.get(method)
            args = ["--config", str(search.export), "--seeds", str(len(search.request.seeds))]
            if search.task.class_splits:
                args += ["--splits", ",".join(map(str, search.request.splits))]
            rc, out = run_main(args + ["--storage-path", str(search.root), "--name", "rerun"])
            doc = yaml.safe_load((search.root / "rerun" / "best.yaml").read_text()) if rc == 0 else {}
            self._reruns[method] = (rc, out, doc)
        return self._reruns[method]


@pytest.fixture(scope="module")
def searches(ray_session, tmp_path_factory) -> Searches:
    return Searches(tmp_path_factory.mktemp("searches"))


@pytest.fixture(params=method_names())
def search(request, searches) -> Search:
    found = searches.get(request.param)
    assert found.rc == 0, found.out[-3000:]
    return found


def num_known(method: str) -> int:
    return len(task_splits(load_pool("digits", "."), method, [0])[0].known)


# ---- what every method's search produces ---------------------------------------------------------


def test_search_exports_the_winner_chosen_on_validation(search):
    doc = yaml.safe_load(search.export.read_text())
    assert (doc["method"], doc["dataset"]) == (search.method, "digits")
    assert doc["metrics"]["objective"] == search.metric
    assert yaml.safe_load((search.experiment / "experiment.yaml").read_text())["metric"] == search.metric
    config = get_method(search.method).Config.from_dict(doc["config"])  # complete and valid
    assert config.epochs == search.request.max_epochs
    assert "--config" in doc["command"]
    # The winner is the finished trial with the best last validation objective; test values play no part.
    finished = search.finished()
    assert finished, "no trial finished"
    last = {t: results(t)[-1][search.metric] for t in finished}
    best = (max if search.request.mode == "max" else min)(last, key=last.get)
    assert finished[best]["config"] == doc["config"]
    assert doc["metrics"]["val"][search.name]["mean"] == pytest.approx(last[best])
    assert doc["metrics"]["val"][search.name]["n"] == search.runs
    test = pd.DataFrame(finished[best]["records"]).query(f"phase == 'test' and metric == '{search.name}'")
    assert len(test) == search.runs
    assert doc["metrics"]["test"][search.name]["mean"] == pytest.approx(test["value"].mean())
    in_experiment = yaml.safe_load((search.experiment / "best.yaml").read_text())
    assert in_experiment.pop("command").endswith("search/best.yaml")  # each copy re-runs itself
    assert in_experiment == {k: v for k, v in doc.items() if k != "command"}


def test_study_holds_every_trial_with_the_config_its_space_defines(search):
    """Each Tune trial trained what the method's space defines for its study trial's parameters
    (``spaces.config_from_trial``), and the study records how it ended: ASHA-stopped as PRUNED, a final
    model that could not be scored as FAIL, the others COMPLETE with the last validation value."""
    study = study_trials(search.experiment, "search")
    named = optuna.load_study(study_name="search", storage=f"sqlite:///{search.experiment}/optuna.db")
    assert named.metric_names == [search.metric]  # optuna-dashboard's label for the objective
    assert named.user_attrs["method"] == search.method and "search/run.py" in named.user_attrs["command"]
    tune_trials = search.trials()
    assert len(study) == len(tune_trials) == NUM_SAMPLES
    k = num_known(search.method)
    epochs = search.request.max_epochs
    replayed = [config_from_trial(search.method, optuna.trial.FixedTrial(t.params), epochs, k) for t in study]
    for trial in tune_trials:
        params = json.loads((trial / "params.json").read_text())
        assert {key: params[key] for key in META_KEYS} == {
            "method": search.method, "dataset": "digits", "splits": search.request.splits,
            "seeds": search.request.seeds}
        hparams = {key: v for key, v in params.items() if key not in META_KEYS}
        (index,) = [i for i, c in enumerate(replayed) if c == hparams]
        ot, last = study[index], results(trial)[-1]
        if last["training_iteration"] < search.request.max_epochs:
            assert ot.state == optuna.trial.TrialState.PRUNED
        elif math.isnan(last[search.metric]):
            assert ot.state == optuna.trial.TrialState.FAIL
        else:
            assert ot.state == optuna.trial.TrialState.COMPLETE
            assert ot.value == pytest.approx(last[search.metric])


def test_trials_write_tensorboard_curves_of_the_objective(search):
    for trial in search.trials():
        # The TensorBoard logger leaves NaN out: an epoch OpenMax could not score has no point.
        measured = [r[search.metric] for r in results(trial) if not math.isnan(r[search.metric])]
        events = EventAccumulator(str(trial))
        events.Reload()
        tag = metric_tag(search.metric)  # val_auroc -> val/auroc
        assert (tag in events.Tags()["scalars"]) == bool(measured)
        values = [e.value for e in events.Scalars(tag)] if measured else []
        assert values == pytest.approx(measured)
        assert all(0.0 <= v <= 1.0 for v in values)


def test_reports_hold_validation_only_and_end_files_come_with_the_last_epoch(search):
    for trial in search.trials():
        rows = results(trial)
        for row in rows:
            leaked = sorted(key for key in row if key.startswith("test_"))
            assert not leaked, leaked
            assert search.metric in row
        if rows[-1]["training_iteration"] < search.request.max_epochs:
            assert not (trial / "final_metrics.json").exists()  # stopped early: never tested
        else:
            final = json.loads((trial / "final_metrics.json").read_text())
            assert final["status"] in ("finished", "unscorable")
    for trial, final in search.finished().items():
        test = pd.DataFrame(final["records"]).query("phase == 'test'")
        assert set(test["split"]) == set(search.request.splits)
        assert set(test["seed"]) == set(search.request.seeds)
        assert test["value"].notna().any()
        scores = pd.read_parquet(trial / "test_scores.parquet")
        assert len(scores) and set(scores["seed"]) == set(search.request.seeds)
        assert set(search.task.core_metrics) <= set(test["metric"])
        if search.task.class_splits:
            counts = scores.groupby(["split", "is_unknown"]).size()
            for split in search.request.splits:
                assert counts[(split, True)] == counts[(split, False)]  # balanced test set
            named = [c for c in scores if c.startswith("score_")]
            assert named and scores[named].notna().all().all()


def test_exported_yaml_reruns_and_reproduces_the_winner(search, searches):
    rc, out, rerun = searches.rerun(search.method)
    assert rc == 0, out[-3000:]
    assert f"test metrics, mean ± std over {search.runs} (split, seed) runs" in out
    doc = yaml.safe_load(search.export.read_text())
    assert rerun["config"] == doc["config"]
    assert len(trial_dirs(search.root / "rerun")) == search.runs
    # Each (split, seed) run owns its RNG stream, so a trial per run repeats the search's numbers.
    assert rerun["metrics"]["test"][search.name]["mean"] == pytest.approx(
        doc["metrics"]["test"][search.name]["mean"], abs=1e-6)


def test_search_and_rerun_write_their_report_into_the_experiment_folder(search, searches):
    """summary.md/csv and the plots are there when the command ends, without python -m results_analysis."""
    names = {p.name for p in search.experiment.iterdir()}
    expected = {"summary.md", "summary.csv", f"val_{search.name}_curves.png", f"test_{search.name}_per_split.png",
                "optuna_history.png"}
    if get_method(search.method).primary_score:  # open-set: the chosen config's saved test scores
        expected |= {"test_roc.png", "test_score_histograms.png"}
    assert expected <= names, sorted(expected - names)
    completed = [t for t in study_trials(search.experiment, "search") if t.state == optuna.trial.TrialState.COMPLETE]
    for plot, what, needs in (("optuna_importances.png", "hyperparameter importances", MIN_IMPORTANCE_TRIALS),
                              ("optuna_parallel_coordinates.png", "parallel coordinates", 2)):
        # With fewer completed trials the report says why the plot is missing.
        assert (plot in names) == (len(completed) >= needs)
        assert (plot in names) or f"{what}: needs {needs} completed study trials" in search.out
    assert f"Report: {search.experiment}/summary.md and " in search.out
    rc, out, _ = searches.rerun(search.method)
    rerun = {p.name for p in (search.root / "rerun").iterdir()}
    assert {"summary.md", "summary.csv"} <= rerun and not any(n.startswith("optuna") for n in rerun)
    assert f"Report: {search.root / 'rerun'}/summary.md and " in out


def test_max_epochs_overrides_the_exported_epochs(search):
    argv = ["--config", str(search.export), "--max-epochs", "1"]
    request = validate(build_parser().parse_args(argv), argv)
    doc = yaml.safe_load(search.export.read_text())
    assert request.fixed_config == {**doc["config"], "epochs": 1} and request.max_epochs == 1


# ---- methods with OpenMax's post-hoc parameters (crosr, openmax) -----------------------------------


def samples_posthoc_parameters(method: str) -> bool:
    """Whether the method's space samples OpenMax's post-hoc parameters (spaces.suggest_openmax): its
    reports then carry the whole post-hoc grid."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    return {"tailsize", "alpha_rank", "distance"} <= set(config_from_trial(method, trial, MAX_EPOCHS, 6))


POSTHOC_METHODS = [m for m in method_names() if samples_posthoc_parameters(m)]


@pytest.fixture(params=POSTHOC_METHODS)
def posthoc_search(request, searches) -> Search:
    found = searches.get(request.param)
    assert found.rc == 0, found.out[-3000:]
    return found


def cell_key(config: dict) -> str:
    """The post-hoc cell a config samples, as reports and exports name it."""
    return f"T={config['tailsize']}/alpha={config['alpha_rank']}/dist={config['distance']}"


def grid_cells(search: Search) -> int:
    return 5 * num_known(search.method) * 3  # tailsize × alpha rank × distance (spaces.suggest_openmax)


def test_posthoc_grid_is_reported_every_epoch_and_the_objective_is_the_sampled_cell(posthoc_search):
    search = posthoc_search
    cells = grid_cells(search)
    for trial in search.trials():
        for row in results(trial):
            grid = {k: v for k, v in row.items() if k.startswith("posthoc/")}
            assert len(grid) == cells
            finite = [v for v in grid.values() if not math.isnan(v)]
            assert row["posthoc_invalid_cells"] == cells - len(finite)
            if math.isnan(row["val_auroc"]):
                # A model OpenMax cannot fit yet: NaN with the reason, never a number made up for it.
                assert "no valid Weibull fit for class" in row["unscorable_reason"]
                continue
            assert row["posthoc_best_val_auroc"] == pytest.approx(max(finite))
            cfg = row["config"]
            sampled = f"posthoc/{cell_key(cfg)}/val_auroc"
            assert row["val_auroc"] == pytest.approx(grid[sampled])  # mean over the runs


def test_posthoc_cell_is_rechosen_on_validation_in_the_end_files_and_export(posthoc_search):
    search = posthoc_search
    k = num_known(search.method)
    for trial in search.trials():
        path = trial / "final_metrics.json"
        final = json.loads(path.read_text()) if path.exists() else {"status": "pruned"}
        if final["status"] == "unscorable":
            # A final model OpenMax cannot fit: its reason and no metric, no scores, no grid.
            assert "no valid Weibull fit for class" in final["reason"]
            assert final["records"] == [] and not (trial / "posthoc_grid.parquet").exists()
    for trial, final in search.finished().items():
        grid = pd.read_parquet(trial / "posthoc_grid.parquet")
        assert len(grid) == grid_cells(search) * 2 * search.runs  # cells × {val, test} × runs
        val = grid[grid["phase"] == "val"]
        means = val.groupby("cell")["auroc"].agg(lambda v: v.mean(skipna=False)).dropna()
        assert final["posthoc"]["selected"] == means.idxmax()  # chosen on validation, not test
        test = pd.DataFrame(final["records"]).query("phase == 'test'").set_index(["split", "metric"])["value"]
        for split in search.request.splits:
            # Thresholded macro-F1 (τ from validation knowns) and OpenMax's native rule.
            for metric in ("macro_f1", "unknown_f1", "threshold", "macro_f1_native", "unknown_f1_native",
                           "grid_auroc", "acc", "auroc", "oscr"):
                assert (split, metric) in test.index, metric
            row = grid[(grid["phase"] == "test") & (grid["split"] == split)
                       & (grid["cell"] == final["posthoc"]["selected"])].iloc[0]
            assert test[(split, "grid_auroc")] == pytest.approx(row["auroc"])
        scores = pd.read_parquet(trial / "test_scores.parquet")
        assert scores["score_openmax"].between(0, 1).all()
        assert set(scores["pred_native"]) <= set(range(k + 1))
    doc = yaml.safe_load(search.export.read_text())
    assert {"sampled", "selected", "differs", "selection"} <= set(doc["posthoc"])
    cfg = doc["config"]
    assert doc["posthoc"]["sampled"] == cell_key(cfg)
    assert {"auroc", "grid_auroc", "macro_f1", "macro_f1_native"} <= set(doc["metrics"]["test"])


# ---- openmax: searched on val_oscr, a metric other than the core val_auroc -------------------------


def test_openmax_search_on_val_oscr_keeps_every_metric_in_every_report(searches):
    """Tune refuses a report that lacks the objective; an epoch OpenMax cannot score must still carry
    val_oscr (as NaN, with the reason), like every other validation metric."""
    search = searches.get("openmax")
    assert search.rc == 0 and search.metric == "val_oscr"
    rows = [row for trial in search.trials() for row in results(trial)]
    common = {f"val_{m}" for m in OSR_METRICS}
    for row in rows:
        assert common <= set(row), sorted(common - set(row))
        if row["val_unscorable_runs"]:
            assert "no valid Weibull fit for class" in row["unscorable_reason"]
            assert math.isnan(row["val_oscr"]) and math.isnan(row["val_auroc"])
        else:
            assert math.isfinite(row["val_oscr"])
    assert any(row["val_unscorable_runs"] for row in rows), \
        "no epoch was unscorable: the search no longer tests what it should"


# ---- adversarial: the in-run baseline beside the method --------------------------------------------


def test_adversarial_reports_the_ensemble_beside_its_baseline(searches):
    search = searches.get("adversarial")
    assert search.rc == 0
    for trial in search.trials():
        for row in results(trial):
            assert row["config"]["lr_schedule"] == "cosine"
            for name in ("auroc", "auroc_jsd", "acc_c1", "acc_c2", "disagreement", "tpa_0of2"):
                assert 0.0 <= row[f"val_{name}"] <= 1.0
                assert row[f"val_delta_{name}"] == pytest.approx(row[f"val_{name}"] - row[f"val_base_{name}"])
            assert row["d_loss"] > 0 and "base_train_loss" in row
    for trial, final in search.finished().items():
        test = pd.DataFrame(final["records"]).query("phase == 'test'").set_index("metric")["value"]
        assert test["delta_auroc"] == pytest.approx(test["auroc"] - test["base_auroc"])
        scores = pd.read_parquet(trial / "test_scores.parquet")
        columns = {"score_msp", "score_jsd", "pred_c1", "pred_c2", "base/score_msp", "base/pred_c1"}
        assert columns <= set(scores)
    doc = yaml.safe_load(search.export.read_text())
    for metric in ("auroc", "base_auroc", "delta_auroc", "auroc_jsd", "disagreement", "base_disagreement"):
        assert doc["metrics"]["test"][metric]["n"] == search.runs


def test_adversarial_rerun_prints_the_baseline_and_the_difference_beside_each_metric(searches):
    rc, out, _ = searches.rerun("adversarial")
    assert rc == 0, out[-3000:]
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("disagreement "))
    assert " base " in line and " Δ " in line
    assert not any(ln.strip().startswith(("base_", "delta_")) for ln in out.splitlines())


# ---- cd: clustering readouts and the setting label -------------------------------------------------


def test_cd_reports_clustering_readouts_and_labels_its_setting(searches):
    search = searches.get("cd")
    assert search.rc == 0 and search.metric == "val_backbone_nmi"
    for trial in search.trials():
        for row in results(trial):
            for name in CLUSTERING_METRICS:
                assert 0.0 <= row[f"val_{name}"] <= 1.0
    for final in search.finished().values():
        assert final["derived"]["backbone"] == "resnet18_cifar_native" and final["derived"]["image_size"] == 8
        assert final["setting"]["label"] == "reduced setting"
        assert {r["metric"] for r in final["records"] if r["phase"] == "test"} == set(CLUSTERING_METRICS)
    assert "backbone_nmi" in search.out
    assert "setting: reduced setting, NOT comparable with the published numbers" in search.out
    doc = yaml.safe_load(search.export.read_text())
    assert doc["setting"]["label"] == "reduced setting"
    assert doc["derived"]["backbone"] == "resnet18_cifar_native"
    for metric in CLUSTERING_METRICS:
        assert doc["metrics"]["test"][metric]["n"] == 1


# ---- clustnet: the objective over seeds and the gate-vs-class files --------------------------------


def test_clustnet_objective_is_the_mean_over_seeds_of_the_validation_cluster_accuracy(searches):
    search = searches.get("clustnet")
    assert search.rc == 0 and search.metric == "val_mean_cluster_acc" and len(search.request.seeds) == 2
    for trial in search.trials():
        for row in results(trial):
            per_run = [v["val_mean_cluster_acc"] for v in row["runs"].values()]
            assert len(per_run) == 2
            assert row["val_mean_cluster_acc"] == pytest.approx(np.mean(per_run))
            assert 0.0 <= row["val_mean_cluster_acc"] <= 1.0
    doc = yaml.safe_load(search.export.read_text())
    assert doc["config"]["positive_classes"] == [0, 1, 2, 3, 4]
    for metric in ("binary_acc", "pos_cluster_acc", "neg_cluster_acc", "mean_cluster_acc", "gate_confidence"):
        assert doc["metrics"]["test"][metric]["n"] == 2


def test_clustnet_trials_hold_per_epoch_confusion_matrices_as_data_and_png(searches):
    search = searches.get("clustnet")
    for trial in search.trials():
        folder = trial / "gate_confusion"
        for epoch in range(len(results(trial)) + 1):  # epoch 0 is the initial weights
            doc = json.loads((folder / f"epoch_{epoch:03d}.json").read_text())
            assert set(doc["runs"]) == {"split0_seed0", "split0_seed1"}
            assert np.array(doc["runs"]["split0_seed0"]["val"]["counts"]).shape == (5, 10)
            assert (folder / f"epoch_{epoch:03d}.png").read_bytes()[:4] == b"\x89PNG"
        if (trial / "final_metrics.json").exists():
            assert (folder / "test.json").exists() and (folder / "test.png").exists()
