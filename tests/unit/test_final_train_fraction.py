"""protocol.md §7 ``final_train_fraction``: a --config re-run may train on all known training images
(1.0); it then reports no validation number, only threshold-free test metrics, with the post-hoc cell
the 80% runs selected. Searches stay on the 80% partition, and the default is today's run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data import load_pool, make_split
from results_analysis.catalogue import THRESHOLD_FREE_METRICS, is_threshold_free
from results_analysis.markdown import to_markdown
from results_analysis.metrics import auroc
from results_analysis.tables import load_experiment, summarize
from results_analysis.trial_files import TRAIN_FRACTION_KEY
from search.cli import build_parser, validate
from search.main import main
from search.report import Summary, TrialOutcome, export_yaml, render
from trainables.device_data import DataBundle
from trainables.open_set import AllKnownRunner, OpenSetRunner
from trainables.open_set_scoring import cell_scores
from trainables.tasks import trial_runs

CPU = torch.device("cpu")
# Small enough for seconds on a CPU, trained enough that OpenMax fits every class (as tests/unit/test_openmax_runs.py).
OPENMAX = {"method": "openmax", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 4, "warmup_epochs": 0,
           "restarts": 0, "lr": 0.1, "batch_size": 32, "alpha_rank": 3, "tailsize": 10}
SOFTMAX = {"method": "softmax", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 1, "batch_size": 64}
THRESHOLD_METRICS = ("macro_f1", "unknown_f1", "threshold")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    torch.set_num_threads(2)
    pool = load_pool("digits", tmp_path_factory.mktemp("nodata"))
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


def train(runs: OpenSetRunner, tmp_path: Path) -> tuple[dict, dict]:
    for epoch in range(runs.epochs):
        last = runs.train_epoch(epoch)
    return last, runs.write_final(tmp_path, "t", last)


def images(bundle: DataBundle, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bundle.train_x[idx])


# --- what a run trains on -----------------------------------------------------------------------------


def test_all_known_run_trains_on_exactly_train_and_validation_knowns(digits):
    split = digits.splits[0]
    all_known = trial_runs({**SOFTMAX, TRAIN_FRACTION_KEY: 1.0}, digits, CPU)
    default = trial_runs(SOFTMAX, digits, CPU)
    assert type(all_known) is AllKnownRunner and type(default) is OpenSetRunner
    union = np.union1d(split.train, split.val_known)
    assert np.array_equal(union, split.train_full)  # on digits the balanced val_known is the whole hold-out
    run = all_known.runs[0]
    assert len(run.x["train"]) == len(union) > len(split.train)
    assert torch.equal(run.x["train"], images(digits, union))
    assert run.y["train"].tolist() == [split.known.index(int(label)) for label in digits.train_y[union]]
    assert torch.equal(default.runs[0].x["train"], images(digits, split.train))
    # Evaluation sets are the same: only training changes.
    for part in ("val_known", "val_unknown", "test_known", "test_unknown", "test_known_full"):
        assert torch.equal(run.x[part], default.runs[0].x[part])


def test_default_is_the_80_percent_partition_run_of_before(digits, tmp_path):
    """No key and an explicit 0.8 give one identical run: same images, same records, same files."""
    _, implicit = train(trial_runs(SOFTMAX, digits, CPU), tmp_path / "a")
    _, explicit = train(trial_runs({**SOFTMAX, TRAIN_FRACTION_KEY: 0.8}, digits, CPU), tmp_path / "b")
    assert implicit["records"] == explicit["records"]
    assert implicit[TRAIN_FRACTION_KEY] == explicit[TRAIN_FRACTION_KEY] == 0.8
    names = {r["metric"] for r in implicit["records"]}
    assert {"val", "test"} == {r["phase"] for r in implicit["records"]}
    assert "macro_f1" in names and "threshold" in names  # the 80% run keeps its validation-chosen metrics


# --- a 1.0 run's reports ------------------------------------------------------------------------------


def test_all_known_run_reports_no_validation_and_only_threshold_free_test_metrics(digits, tmp_path):
    last, final = train(trial_runs({**SOFTMAX, TRAIN_FRACTION_KEY: 1.0}, digits, CPU), tmp_path)
    assert final[TRAIN_FRACTION_KEY] == 1.0
    assert json.loads((tmp_path / "final_metrics.json").read_text())[TRAIN_FRACTION_KEY] == 1.0
    assert {r["phase"] for r in final["records"]} == {"test"}
    names = {r["metric"] for r in final["records"]}
    assert THRESHOLD_FREE_METRICS <= names
    assert {"auroc_msp", "auroc_mls"} & names  # per-score AUROCs stay
    assert all(is_threshold_free(n) for n in names)
    assert not any(word in n for n in names for word in THRESHOLD_METRICS)
    # The epoch report: Tune's metric present but NaN; the trained-on numbers under their own name only.
    assert math.isnan(last["val_auroc"]) and 0.0 <= last["trained_on_val_auroc"] <= 1.0
    assert all(math.isnan(v) for k, v in last.items() if k.startswith("val_"))
    assert not any(k.startswith("val_") for values in last["runs"].values() for k in values)
    assert not any(k.startswith("posthoc") for k in last)


def test_threshold_free_names():
    for name in ("acc", "acc_full", "auroc", "auroc_mls", "oscr", "tnr_at_tpr95", "fpr_at_tpr95", "base_auroc",
                 "delta_acc_full"):
        assert is_threshold_free(name), name
    for name in ("macro_f1", "unknown_f1", "threshold", "threshold_mls", "macro_f1_native", "base_macro_f1",
                 "hypersphere_pct", "openmax_all_w_zero", "ensemble_gain"):
        assert not is_threshold_free(name), name


@pytest.fixture(scope="module")
def fixed_cell(digits, tmp_path_factory):
    cell = "T=20/alpha=2/dist=eucos"  # not the config's own T=10/alpha=3/dist=euclidean
    runs = trial_runs({**OPENMAX, TRAIN_FRACTION_KEY: 1.0, "posthoc_cell": cell}, digits, CPU)
    folder = tmp_path_factory.mktemp("openmax")
    last, final = train(runs, folder)
    return cell, runs, folder, final


def test_all_known_run_scores_with_the_given_posthoc_cell(fixed_cell):
    cell, runs, folder, final = fixed_cell
    assert (final["config"]["tailsize"], final["config"]["alpha_rank"], final["config"]["distance"]) == (20, 2, "eucos")
    assert final["posthoc"]["selected"] == cell and final["posthoc"]["fixed"] is True
    assert not (folder / "posthoc_grid.parquet").exists()  # nothing is chosen again
    assert not any(r["metric"].startswith("grid_") for r in final["records"])
    # The reported AUROC is that of the given cell, scored independently on the test outputs.
    run = runs.runs[0]
    by_key = {c.key: c for c in run.method.posthoc_cells()}
    known, unknown = cell_scores(run, run.outputs("test"), by_key[cell])
    reported = next(r["value"] for r in final["records"] if r["metric"] == "auroc")
    assert reported == pytest.approx(auroc(known["score"], unknown["score"]), abs=1e-12)


def test_all_known_run_without_a_selected_cell_keeps_the_configs_own(digits):
    runs = trial_runs({**OPENMAX, "epochs": 1, TRAIN_FRACTION_KEY: 1.0}, digits, CPU)
    assert runs.posthoc["selected"] == "T=10/alpha=3/dist=euclidean"
    assert "named no cell" in runs.posthoc["selection"]
    with pytest.raises(ValueError, match="is not a post-hoc cell of openmax"):
        trial_runs({**OPENMAX, "epochs": 1, TRAIN_FRACTION_KEY: 1.0, "posthoc_cell": "T=7"}, digits, CPU)


# --- report, export and analysis ----------------------------------------------------------------------


def test_report_and_export_say_which_fraction_the_numbers_used(fixed_cell, tmp_path):
    _, _, folder, _ = fixed_cell
    outcome = TrialOutcome("t", folder, "finished", math.nan, final=json.loads((folder / "final_metrics.json").read_text()))
    summary = Summary("openmax", "digits", "val_auroc", [outcome], chosen=[outcome])
    assert summary.final_train_fraction == 1.0
    assert summary.table("val").empty
    text = render(summary, None)
    assert f"{TRAIN_FRACTION_KEY}: 1, trained on all known training images" in text
    assert "no validation numbers" in text
    assert "val metrics" not in text
    assert f"(split, seed) runs [per-split means], models trained at {TRAIN_FRACTION_KEY} 1" in text
    assert "Post-hoc cell: T=20/alpha=2/dist=eucos, fixed to the cell selected on validation in the 80% runs" in text
    export_yaml(summary, str(tmp_path / "best.yaml"))
    doc = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert doc[TRAIN_FRACTION_KEY] == 1.0
    assert doc["metrics"]["val"] == {}
    assert not any(word in m for m in doc["metrics"]["test"] for word in THRESHOLD_METRICS)
    assert doc["posthoc"]["selected"] == "T=20/alpha=2/dist=eucos"
    # Re-running the export keeps its fraction and its cell.
    request = validate(build_parser().parse_args(["--config", str(tmp_path / "best.yaml"), "--storage-path",
                                                  str(tmp_path / "r")]), [])
    assert (request.final_train_fraction, request.posthoc_cell) == (1.0, "T=20/alpha=2/dist=eucos")


def _final(folder: Path, fraction: float | None, value: float) -> TrialOutcome:
    folder.mkdir(parents=True)
    final = {"trial_id": folder.name, "method": "softmax", "dataset": "digits", "config": {"lr": 0.1},
             "status": "finished", "records": [{"split": 0, "seed": 0, "phase": "test", "metric": "auroc", "value": value}]}
    if fraction is not None:
        final[TRAIN_FRACTION_KEY] = fraction
    (folder / "final_metrics.json").write_text(json.dumps(final))
    return TrialOutcome(folder.name, folder, "finished", 0.5, final=final)


def test_numbers_of_different_fractions_never_share_a_mean(tmp_path):
    a = _final(tmp_path / "exp" / "a", 0.8, 0.6)
    b = _final(tmp_path / "exp" / "b", 1.0, 0.9)
    summary = summarize(load_experiment(tmp_path / "exp"), phase="test")
    assert sorted(summary["mean"]) == [0.6, 0.9] and set(summary["n_runs"]) == {1}
    markdown = to_markdown(summary)
    assert "final_train_fraction=1" in markdown and "never averaged together" in markdown
    with pytest.raises(ValueError, match="mix final_train_fraction"):
        Summary("softmax", "digits", "val_auroc", [a, b], chosen=[a, b]).table("test")


def test_analysis_of_an_80_percent_experiment_is_unchanged(tmp_path):
    _final(tmp_path / "exp" / "a", 0.8, 0.6)
    _final(tmp_path / "exp" / "b", None, 0.7)  # written before the fraction was recorded: also 80%
    summary = summarize(load_experiment(tmp_path / "exp"), phase="test")
    assert summary["config"].tolist() == ['{"lr":0.1}'] and summary["mean"].tolist() == [pytest.approx(0.65)]
    assert "final_train_fraction" not in to_markdown(summary)


# --- the command line ---------------------------------------------------------------------------------


def _one_error_line(capsys, tmp_path: Path, *args: str) -> str:
    storage = tmp_path / "results"
    rc = main([*args, "--storage-path", str(storage)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not storage.exists(), "a refused command wrote into the results folder"
    return lines[0]


def test_a_search_with_the_flag_is_refused(capsys, tmp_path):
    line = _one_error_line(capsys, tmp_path, "--method", "softmax", "--final-train-fraction", "1.0")
    assert "--final-train-fraction is for re-running a chosen config" in line
    assert "a search selects on validation images" in line


def test_bad_values_and_non_open_set_methods_are_refused(capsys, tmp_path):
    assert "invalid choice" in _one_error_line(capsys, tmp_path, "--method", "softmax", "--final-train-fraction", "0.5")
    clustnet = tmp_path / "clustnet.yaml"
    clustnet.write_text(yaml.safe_dump({"method": "clustnet", "dataset": "digits", "config": {}}))
    line = _one_error_line(capsys, tmp_path, "--config", str(clustnet), "--final-train-fraction", "1.0")
    assert "clustnet is a gate_clustering method" in line
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump({"method": "softmax", "dataset": "digits", "config": {}, TRAIN_FRACTION_KEY: 0.5}))
    assert "final_train_fraction 0.5 in the --config file" in _one_error_line(capsys, tmp_path, "--config", str(odd))


def test_the_flag_overrides_the_files_fraction(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"method": "openmax", "dataset": "digits", "config": {},
                                    "posthoc": {"selected": "T=20/alpha=2/dist=eucos"}, TRAIN_FRACTION_KEY: 0.8}))

    def request(*flags: str):
        return validate(build_parser().parse_args(["--config", str(path), "--storage-path", str(tmp_path / "r"),
                                                   *flags]), [])

    assert (request().final_train_fraction, request().posthoc_cell) == (0.8, None)
    assert (request("--final-train-fraction", "1.0").final_train_fraction,
            request("--final-train-fraction", "1.0").posthoc_cell) == (1.0, "T=20/alpha=2/dist=eucos")
