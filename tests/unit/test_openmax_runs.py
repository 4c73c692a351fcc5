"""OpenMax methods inside a trial (no Ray): an unfittable half-trained model, the validation-chosen
threshold and post-hoc cell, the grid rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from data import load_pool, make_split
from methods.weibull import WeibullFitError
from results_analysis.metrics import threshold_at_tpr
from trainables.device_data import DataBundle
from trainables.open_set import OpenSetRunner


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    pool = load_pool("digits", tmp_path_factory.mktemp("nodata"))
    return DataBundle.from_pool(pool, {0: make_split(pool, 0)})


def test_unfittable_epoch_reports_nan_with_the_reason_and_the_final_test_raises(digits):
    torch.set_num_threads(2)
    # Two SGD steps at a tiny LR: some class has no correctly classified training image yet.
    config = {"method": "crosr", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 1,
              "batch_size": 256, "lr": 0.01}
    runs = OpenSetRunner(config, digits, torch.device("cpu"))
    result = runs.train_epoch(0)
    assert math.isnan(result["val_auroc"])
    assert result["val_unscorable_runs"] == 1
    assert "no valid Weibull fit for class" in result["unscorable_reason"]
    assert result["posthoc_invalid_cells"] == 5 * 6 * 3
    with pytest.raises(WeibullFitError, match=r"class \d+ \(tailsize 20, distance euclidean\)"):
        runs.test()


@pytest.fixture(scope="module")
def trained(digits):
    torch.set_num_threads(2)
    config = {"method": "openmax", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 8,
              "warmup_epochs": 0, "restarts": 0, "lr": 0.1, "batch_size": 32, "alpha_rank": 3, "tailsize": 10}
    runs = OpenSetRunner(config, digits, torch.device("cpu"))
    for epoch in range(8):
        last = runs.train_epoch(epoch)
    return runs, last, runs.test()


def test_epoch_report_holds_the_grid_and_its_best_cell(trained):
    _, last, _ = trained
    grid = {k: v for k, v in last.items() if k.startswith("posthoc/")}
    assert len(grid) == 5 * 6 * 3
    assert last["val_auroc"] == pytest.approx(grid["posthoc/T=10/alpha=3/dist=euclidean/val_auroc"])
    assert last["posthoc_best_val_auroc"] == pytest.approx(np.nanmax(list(grid.values())))


def test_thresholds_and_cell_are_chosen_on_validation(trained):
    runs, _, outcome = trained
    run = runs.runs[0]
    val_known = run.outputs("val")["known"]
    test = pd.DataFrame(outcome.records).query("phase == 'test'").set_index("metric")["value"]
    # τ accepts 95% of the known *validation* images, for the primary score and for each other one.
    assert test["threshold"] == pytest.approx(threshold_at_tpr(val_known["score"], 0.95))
    assert test["threshold_msp"] == pytest.approx(threshold_at_tpr(val_known["score_msp"], 0.95))
    assert 0.0 <= test["unknown_f1_native"] <= 1.0 and 0.0 <= test["macro_f1"] <= 1.0
    grid = outcome.grid
    val = grid[grid["phase"] == "val"].set_index("cell")["auroc"]
    assert outcome.posthoc["selected"] == val.idxmax()
    assert outcome.posthoc["sampled"] == "T=10/alpha=3/dist=euclidean"
    chosen = grid[(grid["phase"] == "test") & (grid["cell"] == outcome.posthoc["selected"])].iloc[0]
    assert test["grid_auroc"] == pytest.approx(chosen["auroc"])
    # The sampled cell's grid row is what the run itself reported as its primary AUROC.
    sampled = grid[(grid["phase"] == "test") & (grid["cell"] == outcome.posthoc["sampled"])].iloc[0]
    assert test["auroc"] == pytest.approx(sampled["auroc"])
    # T = 100 and 200 exceed every class's correctly classified images on digits: truncated, same fits.
    t100 = grid[(grid["phase"] == "val") & (grid["tailsize"] == 100)].set_index(["alpha_rank", "distance"])["auroc"]
    t200 = grid[(grid["phase"] == "val") & (grid["tailsize"] == 200)].set_index(["alpha_rank", "distance"])["auroc"]
    pd.testing.assert_series_equal(t100, t200)


def test_class_means_come_from_the_training_partition(trained):
    runs, _, _ = trained
    run = runs.runs[0]
    head = run.method.head
    train = run.method.collect_outputs(run.eval_batches("train"))
    labels = run.y["train"].numpy()
    correct = train["pred"] == labels
    for c in range(6):
        keep = correct & (labels == c)
        assert head.counts[c] == keep.sum()
        np.testing.assert_allclose(head.mavs[c], train["av"][keep].astype(np.float64).mean(axis=0), rtol=1e-5)


def test_openmax_trains_exactly_the_softmax_baseline(digits):
    """The MNIST learning check of the baseline runs through openmax: same network, recipe and RNG."""
    torch.set_num_threads(2)
    base = {"dataset": "digits", "splits": [0], "seeds": [0], "epochs": 2, "warmup_epochs": 0, "restarts": 0,
            "lr": 0.1, "batch_size": 64}
    trained = {}
    for method in ("softmax", "openmax"):
        runs = OpenSetRunner({**base, "method": method}, digits, torch.device("cpu"))
        for epoch in range(2):
            result = runs.train_epoch(epoch)
        trained[method] = (runs.runs[0].method.model.state_dict(), result["runs"]["split0_seed0"])
    for name, tensor in trained["softmax"][0].items():
        assert torch.equal(tensor, trained["openmax"][0][name]), name
    assert trained["openmax"][1]["val_auroc_mls"] == pytest.approx(trained["softmax"][1]["val_auroc"])


def test_report_rechooses_the_cell_over_all_chosen_runs(tmp_path):
    """A --config re-run trains one trial per (split, seed): the cell must be chosen on their
    validation grids together, not per trial (where each split would pick its own)."""
    from search.report import Summary, TrialOutcome

    def grid(split: int, val: dict[str, float], test: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame([{"split": split, "seed": 0, "phase": phase, "cell": cell, "auroc": v}
                             for phase, values in (("val", val), ("test", test)) for cell, v in values.items()])

    outcomes = []
    # Split 0 alone would pick A, split 1 alone B; together C has the best mean (0.85 vs 0.80, 0.75).
    for split, val, test in ((0, {"A": 0.95, "B": 0.65, "C": 0.85}, {"A": 0.5, "B": 0.5, "C": 0.9}),
                             (1, {"A": 0.65, "B": 0.95, "C": 0.85}, {"A": 0.5, "B": 0.5, "C": 0.7})):
        folder = tmp_path / f"trial{split}"
        folder.mkdir()
        grid(split, val, test).to_parquet(folder / "posthoc_grid.parquet")
        final = {"config": {"tailsize": 20}, "posthoc": {"sampled": "A"},
                 "records": [{"split": split, "seed": 0, "phase": "test", "metric": "auroc", "value": 0.5},
                             {"split": split, "seed": 0, "phase": "test", "metric": "grid_auroc", "value": 0.0}]}
        outcomes.append(TrialOutcome(f"t{split}", folder, "finished", 0.5, final=final))
    summary = Summary("crosr", "digits", "val_auroc", outcomes, chosen=outcomes)
    assert summary.posthoc["selected"] == "C" and summary.posthoc["differs"]
    test = summary.table("test")
    # The per-trial grid_* records are replaced by the jointly chosen cell's test values.
    assert test.loc["grid_auroc", "mean"] == pytest.approx(0.8)
    assert test.loc["auroc", "mean"] == pytest.approx(0.5)
