"""The benchmark table from experiment folders written here by hand: the chosen config (on validation,
never test), a row per score, the published column and the paired difference from the baseline, each
checked against numbers computed by hand below."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from results_analysis.__main__ import main as analysis_main
from results_analysis.benchmark import benchmark_table, chosen_runs, to_markdown

T_975_1 = 12.706204736174707  # Student t quantile, 1 degree of freedom (two splits)
SETTING = {"label": "reduced setting", "differences": {"epochs": {"ours": 2, "reference": 600},
                                                       "backbone": {"ours": "small", "reference": "vgg32"},
                                                       "lr": {"ours": 0.1, "reference": 0.3}}}


def _trial(root: Path, name: str, method: str, primary: str, config: dict, val_auroc: float,
           test: dict[str, list[float]]) -> None:
    """A finished trial of two splits (seed 0): ``test`` maps metric -> value per split."""
    d = root / name
    d.mkdir(parents=True)
    records = [{"split": s, "seed": 0, "phase": "val", "metric": "auroc", "value": val_auroc} for s in (0, 1)]
    records += [{"split": s, "seed": 0, "phase": "test", "metric": m, "value": v[s]}
                for m, v in test.items() for s in (0, 1)]
    (d / "params.json").write_text(json.dumps(config))
    (d / "result.json").write_text(json.dumps({"training_iteration": 2, "trial_id": name, "val_auroc": val_auroc}) + "\n")
    (d / "final_metrics.json").write_text(json.dumps({
        "trial_id": name, "method": method, "dataset": "mnist", "config": config, "status": "finished",
        "primary_score": primary, "setting": SETTING, "final_train_fraction": 0.8, "records": records}))


SOFTMAX_CHOSEN = {"auroc": [0.95, 0.97], "auroc_msp": [0.93, 0.94], "oscr": [0.90, 0.92], "oscr_msp": [0.88, 0.89],
                  "acc": [0.5, 0.5], "acc_full": [0.99, 0.98], "macro_f1": [0.80, 0.82], "macro_f1_msp": [0.70, 0.72]}
# Better on test, worse on validation: must never be the one shown.
SOFTMAX_OTHER = {m: [0.999, 0.999] for m in SOFTMAX_CHOSEN}
DIFAIR = {"auroc": [0.96, 0.99], "auroc_max_activation": [0.5, 0.5], "oscr": [0.91, 0.95], "acc_full": [0.97, 0.99],
          "macro_f1": [0.81, 0.85]}


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    softmax, difair = tmp_path / "softmax", tmp_path / "difair"
    _trial(softmax, "train_a", "softmax", "mls", {"lr": 0.1, "epochs": 2}, 0.90, SOFTMAX_CHOSEN)
    _trial(softmax, "train_b", "softmax", "mls", {"lr": 0.3, "epochs": 2}, 0.80, SOFTMAX_OTHER)
    (softmax / "experiment.yaml").write_text("method: softmax\ndataset: mnist\nmetric: val_auroc\n")
    _trial(difair, "train_c", "difair", "min_distance", {"lr": 0.2, "epochs": 2}, 0.85, DIFAIR)
    return softmax, difair


def test_rows_chosen_on_validation_with_published_numbers_and_paired_gaps(folders):
    table = benchmark_table([chosen_runs(f) for f in folders])
    rows = table.rows.set_index("row")
    assert list(rows.index) == ["softmax · MLS", "softmax · MSP", "difair · MIN_DISTANCE"]

    mls = rows.loc["softmax · MLS"]
    assert mls["auroc_mean"] == pytest.approx(0.96)
    assert mls["auroc_std"] == pytest.approx(math.sqrt(0.0002))
    assert mls["oscr_mean"] == pytest.approx(0.91)
    assert mls["acc_mean"] == pytest.approx(0.985)  # every known test image, not the balanced set's 0.5
    assert mls["macro_f1_mean"] == pytest.approx(0.81)
    assert mls["published_value"] == pytest.approx(0.993) and not mls["published_verified"]
    assert mls["difference"] == pytest.approx(0.96 - 0.993)
    assert "vs_baseline_n" not in rows.columns or math.isnan(mls["vs_baseline_n"])  # not paired with itself

    msp = rows.loc["softmax · MSP"]
    assert (msp["auroc_mean"], msp["oscr_mean"], msp["macro_f1_mean"]) == pytest.approx((0.935, 0.885, 0.71))
    assert msp["published_value"] == pytest.approx(0.978) and msp["published_verified"]
    # MSP − MLS per split: −0.02, −0.03 → mean −0.025, sd 0.00707, half-width t·sd/√2.
    half = T_975_1 * math.sqrt(0.00005) / math.sqrt(2)
    assert msp["vs_baseline_mean"] == pytest.approx(-0.025)
    assert (msp["vs_baseline_ci_low"], msp["vs_baseline_ci_high"]) == pytest.approx((-0.025 - half, -0.025 + half))
    assert msp["vs_baseline_verdict"] == "no clear difference"

    difair = rows.loc["difair · MIN_DISTANCE"]
    assert difair["vs_baseline_mean"] == pytest.approx(0.015)  # (0.96 − 0.95, 0.99 − 0.97)
    assert difair["vs_baseline_n"] == 2
    assert math.isnan(difair["published_value"])  # DIFAIR has no published 5-split number

    runs = table.runs[table.runs["row"] == "softmax · MLS"].sort_values("split")["value"].tolist()
    assert runs == [0.95, 0.97]
    assert table.published == {"softmax · MLS": 0.993, "softmax · MSP": 0.978}

    md = to_markdown(table)
    assert "| softmax · MSP | mnist | 2 (2) | 93.5 ± 0.7 | 88.5 ± 0.7 | 98.5 ± 0.7 | 71.0 ± 1.4 | 97.8 [" in md
    assert "99.3 (unverified)" in md and "Neal et al. 2018" in md
    assert "| reduced setting: backbone small (published vgg32), 1 other value differs; 2 epochs; train fraction 0.8 |" in md
    assert "lr: ours 0.1, published 0.3" in table.rows.loc[0, "setting_detail"]


def test_cli_builds_the_table_from_several_folders(folders, tmp_path, capsys):
    out = tmp_path / "table"
    assert analysis_main([*map(str, folders), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"benchmark.md", "benchmark.csv", "benchmark.png"}
    assert "softmax · MLS" in capsys.readouterr().out


def test_cli_refuses_two_experiments_of_one_method_and_writes_nothing(folders, tmp_path, capsys):
    out = tmp_path / "table"
    assert analysis_main([str(folders[0]), str(folders[0]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "one experiment per method" in err
    assert not out.exists()


def test_a_clustering_method_gets_its_objective_and_the_published_value_of_that_metric(tmp_path):
    d = tmp_path / "cd"
    (d / "t").mkdir(parents=True)
    records = [{"split": 0, "seed": s, "phase": p, "metric": "backbone_nmi", "value": v}
               for s, p, v in ((0, "val", 0.5), (1, "val", 0.6), (0, "test", 0.70), (1, "test", 0.74))]
    (d / "t" / "params.json").write_text("{}")
    (d / "t" / "final_metrics.json").write_text(json.dumps({
        "trial_id": "t", "method": "cd", "dataset": "cifar10", "config": {"epochs": 3}, "status": "finished",
        "setting": {"label": "reduced setting", "differences": {}}, "records": records}))
    (d / "experiment.yaml").write_text("metric: val_backbone_nmi\n")
    table = benchmark_table([chosen_runs(d)])
    row = table.rows.iloc[0]
    assert (row["row"], row["headline_metric"]) == ("cd", "backbone_nmi")
    assert row["backbone_nmi_mean"] == pytest.approx(0.72)
    assert row["published_value"] == pytest.approx(0.725)  # CD-128, CIFAR-10, backbone readout
    assert row["difference"] == pytest.approx(0.72 - 0.725)
    assert "vs_baseline_n" not in table.rows.columns  # no open-set score to pair
    assert "| cd | cifar10 | 2 (1) | backbone_nmi: 72.0 ± 2.8 |" in to_markdown(table)
