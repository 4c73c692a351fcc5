"""Experiment folder -> tidy table -> mean ± std, and the CLI, on tiny hand-made experiments."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from repo_paths import ROOT

from results_analysis import markdown as MD
from results_analysis import tables as T
from results_analysis import trial_files as TF

REPO = ROOT

CFG_A = {"lr": 0.1, "anchor_multiplier": 10.0}
# Same config as CFG_B but keys in another order: the two trials must group together.
CFG_B1 = {"lr": 0.3, "anchor_multiplier": 10.0}
CFG_B2 = {"anchor_multiplier": 10.0, "lr": 0.3}


def _records(values: dict[tuple[int, int, str, str], float]) -> list[dict]:
    return [
        {"split": sp, "seed": se, "phase": ph, "metric": m, "value": v}
        for (sp, se, ph, m), v in values.items()
    ]


def _write_trial(
    root: Path,
    folder: str,
    trial_id: str,
    params: dict,
    epochs: list[dict],
    final: dict | None = None,
    error: bool = False,
) -> None:
    d = root / folder
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(params))
    lines = [
        json.dumps({"training_iteration": i + 1, "trial_id": trial_id, **e}) for i, e in enumerate(epochs)
    ]
    (d / "result.json").write_text("\n".join(lines) + "\n")
    if final is not None:
        (d / "final_metrics.json").write_text(json.dumps({"trial_id": trial_id, **final}))
    if error:
        (d / "error.txt").write_text("Traceback ...\nRuntimeError: loss is nan\n")


def _epoch(val_auroc: float, runs: dict[str, dict[str, float]]) -> dict:
    return {"val_auroc": val_auroc, "val_acc": 0.5, "train_loss": 1.0, "runs": runs}


@pytest.fixture()
def experiment(tmp_path: Path) -> Path:
    """Five trials: config A (1 trial, seed 0), config B (2 trials, seeds 0 and 1), one stopped, one errored."""
    exp = tmp_path / "storage" / "difair_digits"
    common = {"method": "difair", "dataset": "digits", "status": "finished"}
    _write_trial(
        exp,
        "train_osr_t1_00000_0_lr=0.1",
        "t1_00000",
        {**CFG_A, "method": "difair", "dataset": "digits"},
        [_epoch(0.80, {}), _epoch(0.85, {})],
        final={
            **common,
            "config": CFG_A,
            "records": _records(
                {
                    (0, 0, "val", "auroc"): 0.80,
                    (1, 0, "val", "auroc"): 0.90,
                    (0, 0, "val", "acc"): 0.90,
                    (1, 0, "val", "acc"): 0.85,
                    (0, 0, "test", "auroc"): 0.70,
                    (1, 0, "test", "auroc"): 0.76,
                    (0, 0, "test", "acc"): 0.90,
                    (1, 0, "test", "acc"): 0.80,
                }
            ),
        },
    )
    for folder, tid, cfg, seed, val, test in [
        ("train_osr_t2_00001_1_lr=0.3", "t2_00001", CFG_B1, 0, (0.88, 0.86), (0.60, 0.70)),
        ("train_osr_t2_00002_2_lr=0.3", "t2_00002", CFG_B2, 1, (0.90, 0.88), (0.64, 0.74)),
    ]:
        _write_trial(
            exp,
            folder,
            tid,
            {**cfg, "method": "difair", "dataset": "digits"},
            [_epoch(0.86, {}), _epoch(0.87, {}), _epoch(0.89, {})],
            final={
                **common,
                "config": cfg,
                "records": _records(
                    {
                        (0, seed, "val", "auroc"): val[0],
                        (1, seed, "val", "auroc"): val[1],
                        (0, seed, "val", "acc"): 0.95,
                        (1, seed, "val", "acc"): 0.95,
                        (0, seed, "test", "auroc"): test[0],
                        (1, seed, "test", "auroc"): test[1],
                        (0, seed, "test", "acc"): 0.90,
                        (1, seed, "test", "acc"): 0.90,
                    }
                ),
            },
        )
    # Stopped by the scheduler after 2 epochs; params.json does not name method/dataset.
    _write_trial(
        exp,
        "train_osr_t3_00003_3_lr=1.0",
        "t3_00003",
        {"lr": 1.0, "anchor_multiplier": 1.0},
        [
            _epoch(
                0.40,
                {"split0_seed0": {"val_auroc": 0.30, "val_acc": 0.2}, "split1_seed0": {"val_auroc": 0.50}},
            ),
            _epoch(
                0.60,
                {
                    "split0_seed0": {"val_auroc": 0.55, "val_acc": 0.5, "train_loss": 2.0},
                    "split1_seed0": {"val_auroc": 0.65, "val_acc": 0.6},
                },
            ),
        ],
    )
    # Errored in epoch 1; its result.json ends in a truncated line.
    _write_trial(
        exp,
        "train_osr_t4_00004_4_lr=5.0",
        "t4_00004",
        {"lr": 5.0, "anchor_multiplier": 10.0, "method": "difair", "dataset": "digits"},
        [_epoch(0.52, {"split0_seed0": {"val_auroc": 0.52}})],
        error=True,
    )
    with open(exp / "train_osr_t4_00004_4_lr=5.0" / "result.json", "a") as f:
        f.write('{"training_iteration": 2, "val_au')
    # Experiment-level clutter Ray writes next to the trials.
    (exp / "experiment_state-2025-01-01.json").write_text("{}")
    (exp / "tuner.pkl").write_bytes(b"\x80\x04")
    (exp / "searcher-state").mkdir()
    (exp / "searcher-state" / "state.json").write_text("{}")
    return exp


def _key(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


# --- load_experiment --------------------------------------------------------------------------


def test_load_experiment_rows(experiment):
    df = T.load_experiment(experiment)
    assert list(df.columns) == T.COLUMNS
    assert len(df) == 8 + 8 + 8 + 4 + 1
    assert df["split"].dtype == np.int64 and df["seed"].dtype == np.int64
    assert set(df["method"]) == {"difair"} and set(df["dataset"]) == {"digits"}

    status = df.drop_duplicates("trial_id").set_index("trial_id")["status"].to_dict()
    assert status == {
        "t1_00000": "finished",
        "t2_00001": "finished",
        "t2_00002": "finished",
        "t3_00003": "stopped",
        "t4_00004": "errored",
    }
    # Configs with keys in a different order are one config.
    b = df[df["trial_id"].isin(["t2_00001", "t2_00002"])]
    assert set(b["config"]) == {_key(CFG_B1)}

    row = df[
        (df["trial_id"] == "t2_00002")
        & (df["phase"] == "test")
        & (df["metric"] == "auroc")
        & (df["split"] == 1)
    ]
    assert len(row) == 1 and row["seed"].item() == 1 and row["value"].item() == pytest.approx(0.74)


def test_unfinished_trials_keep_last_validation_values(experiment):
    df = T.load_experiment(experiment)
    stopped = df[df["trial_id"] == "t3_00003"].sort_values(["split", "metric"])
    assert set(stopped["phase"]) == {"val"}
    got = list(stopped[["split", "seed", "metric", "value"]].itertuples(index=False, name=None))
    # The last epoch's per-run values, not the first epoch's; train_loss is not a val metric.
    assert got == [(0, 0, "acc", 0.5), (0, 0, "auroc", 0.55), (1, 0, "acc", 0.6), (1, 0, "auroc", 0.65)]
    assert stopped["config"].iloc[0] == _key({"lr": 1.0, "anchor_multiplier": 1.0})
    errored = df[df["trial_id"] == "t4_00004"]
    assert list(
        errored[["split", "seed", "phase", "metric", "value"]].itertuples(index=False, name=None)
    ) == [(0, 0, "val", "auroc", 0.52)]


def test_flattened_runs_keys_are_read(tmp_path):
    exp = tmp_path / "exp"
    _write_trial(
        exp,
        "trial_a",
        "a_00000",
        {"lr": 1.0},
        [{"val_auroc": 0.6, "runs/split2_seed1/val_auroc": 0.61, "runs/split3_seed1/val_auroc": 0.59}],
    )
    df = T.load_experiment(exp)
    assert list(df[["split", "seed", "metric", "value"]].itertuples(index=False, name=None)) == [
        (2, 1, "auroc", 0.61),
        (3, 1, "auroc", 0.59),
    ]
    assert df["status"].tolist() == ["stopped", "stopped"]


def test_null_value_becomes_nan_and_poisons_the_mean(tmp_path):
    exp = tmp_path / "exp"
    records = [
        {"split": 0, "seed": 0, "phase": "test", "metric": "auroc", "value": 0.9},
        {"split": 1, "seed": 0, "phase": "test", "metric": "auroc", "value": None},
    ]
    _write_trial(
        exp, "t", "t_0", {}, [], final={"method": "m", "dataset": "d", "config": {}, "records": records}
    )
    s = T.summarize(T.load_experiment(exp))
    assert s["n_runs"].item() == 2 and math.isnan(s["mean"].item())


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_load_experiment_bad_folder(tmp_path, make):
    path = tmp_path / "exp"
    if make == "empty":
        path.mkdir()
        (path / "not_a_trial").mkdir()
    elif make == "file":
        path.write_text("x")
    with pytest.raises(TF.ExperimentError):
        T.load_experiment(path)


def test_corrupt_final_metrics_names_the_file(tmp_path):
    exp = tmp_path / "exp"
    (exp / "t").mkdir(parents=True)
    (exp / "t" / "final_metrics.json").write_text("{not json")
    with pytest.raises(TF.ExperimentError, match="final_metrics.json"):
        T.load_experiment(exp)


# --- summarize / best_config ------------------------------------------------------------------


def test_summarize_test_phase_hand_computed(experiment):
    s = T.summarize(T.load_experiment(experiment), phase="test")
    # Config B has the better validation AUROC (0.88 vs 0.85) but the worse test AUROC: the
    # ranking must follow validation.
    assert list(zip(s["config"], s["metric"], strict=True)) == [
        (_key(CFG_B1), "auroc"),
        (_key(CFG_B1), "acc"),
        (_key(CFG_A), "auroc"),
        (_key(CFG_A), "acc"),
    ]
    assert s["rank"].tolist() == [1, 1, 2, 2]
    assert s["n_runs"].tolist() == [4, 4, 2, 2]
    assert s["n_splits"].tolist() == [2, 2, 2, 2]
    # B auroc: 0.60 0.64 0.70 0.74 -> mean 0.67, squared deviations sum 0.0116, /3.
    # A auroc: 0.70 0.76 -> std 0.06/sqrt(2). A acc: 0.9 0.8 -> std 0.1/sqrt(2).
    expected_mean = [0.67, 0.90, 0.73, 0.85]
    expected_std = [math.sqrt(0.0116 / 3), 0.0, 0.06 / math.sqrt(2), 0.1 / math.sqrt(2)]
    np.testing.assert_allclose(s["mean"], expected_mean, atol=1e-12)
    np.testing.assert_allclose(s["std"], expected_std, atol=1e-12)
    np.testing.assert_allclose(s["mean_split0"], [0.62, 0.90, 0.70, 0.90], atol=1e-12)
    np.testing.assert_allclose(s["mean_split1"], [0.72, 0.90, 0.76, 0.80], atol=1e-12)
    assert set(s["method"]) == {"difair"} and set(s["dataset"]) == {"digits"}


def test_summarize_val_phase_excludes_unfinished_by_default(experiment):
    df = T.load_experiment(experiment)
    s = T.summarize(df, phase="val")
    assert _key({"lr": 1.0, "anchor_multiplier": 1.0}) not in set(s["config"])
    b = s[(s["config"] == _key(CFG_B1)) & (s["metric"] == "auroc")]
    assert b["mean"].item() == pytest.approx(0.88)
    assert b["std"].item() == pytest.approx(np.std([0.88, 0.86, 0.90, 0.88], ddof=1))

    s_all = T.summarize(df, phase="val", include_unfinished=True)
    stopped = s_all[
        (s_all["config"] == _key({"lr": 1.0, "anchor_multiplier": 1.0})) & (s_all["metric"] == "auroc")
    ]
    assert stopped["mean"].item() == pytest.approx(0.60) and pd.isna(stopped["rank"].item())
    errored = s_all[(s_all["config"].str.contains('"lr":5.0')) & (s_all["metric"] == "auroc")]
    # One run: the sample std is undefined.
    assert errored["n_runs"].item() == 1 and math.isnan(errored["std"].item())


def test_best_config_uses_validation_only(experiment):
    df = T.load_experiment(experiment)
    assert T.best_config(df) == {"anchor_multiplier": 10.0, "lr": 0.3}
    assert T.best_config(df, metric="acc") == {"anchor_multiplier": 10.0, "lr": 0.3}
    with pytest.raises(ValueError, match="validation"):
        T.best_config(df, phase="test")
    with pytest.raises(ValueError):
        T.best_config(df, metric="no_such_metric")


def _tidy(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("t" + str(i), m, "d", st, c, sp, 0, "val", met, v)
            for i, (m, st, c, sp, met, v) in enumerate(rows)
        ],
        columns=T.COLUMNS,
    )


def test_best_config_direction_nan_and_status():
    df = _tidy(
        [
            ("m", "finished", '{"a":1}', 0, "fpr_at_tpr95", 0.30),
            ("m", "finished", '{"a":2}', 0, "fpr_at_tpr95", 0.10),
            ("m", "finished", '{"a":3}', 0, "fpr_at_tpr95", float("nan")),
            # A stopped trial's low-fidelity value never wins.
            ("m", "stopped", '{"a":4}', 0, "fpr_at_tpr95", 0.01),
            ("m", "finished", '{"a":1}', 0, "auroc", 0.9),
            ("m", "finished", '{"a":2}', 0, "auroc", 0.7),
            ("m", "finished", '{"a":3}', 0, "auroc", float("nan")),
            # One diverged run of two: the config's mean is NaN, not the other run's 0.99.
            ("m", "finished", '{"a":5}', 0, "auroc", 0.99),
            ("m", "finished", '{"a":5}', 1, "auroc", float("nan")),
        ]
    )
    assert T.best_config(df, metric="fpr_at_tpr95") == {"a": 2}
    assert T.best_config(df, metric="auroc") == {"a": 1}
    ranked = T.rank_configs(df, "auroc")
    assert ranked["config"].tolist()[:2] == ['{"a":1}', '{"a":2}']
    assert ranked["val_mean"].isna().tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="no finished trial"):
        T.best_config(df[df["config"] == '{"a":3}'])


def test_best_config_needs_one_method_dataset():
    df = _tidy(
        [("m1", "finished", '{"a":1}', 0, "auroc", 0.9), ("m2", "finished", '{"a":2}', 0, "auroc", 0.8)]
    )
    with pytest.raises(ValueError, match="method="):
        T.best_config(df)
    assert T.best_config(df, method="m2") == {"a": 2}


# --- formatting -------------------------------------------------------------------------------


def test_format_mean_std():
    assert MD.format_mean_std(0.9361, 0.0042) == "93.6 ± 0.4"
    assert MD.format_mean_std(0.9361, 0.0042, scale=1, digits=3) == "0.936 ± 0.004"
    assert MD.format_mean_std(0.5, float("nan")) == "50.0 ± n/a"
    assert MD.format_mean_std(float("nan"), float("nan")) == "n/a"


def test_rate_variants_print_in_percent():
    df = _tidy([("m", "finished", "{}", 0, "auroc_maxact", 0.9), ("m", "finished", "{}", 0, "radius", 12.5)])
    md = MD.to_markdown(T.summarize(df, phase="val"))
    assert "90.0 ± n/a" in md and "12.500 ± n/a" in md


def test_to_markdown_and_csv(experiment, tmp_path):
    s = T.summarize(T.load_experiment(experiment))
    md = MD.to_markdown(s)
    lines = md.splitlines()
    assert lines[0] == "| rank | method | dataset | n runs | auroc | acc | config (keys that differ) |"
    # Only lr differs between the two configs; the full best config is listed below the table.
    assert lines[2] == "| 1 | difair | digits | 4 | 67.0 ± 6.2 | 90.0 ± 0.0 | lr=0.3 |"
    assert lines[3] == "| 2 | difair | digits | 2 | 73.0 ± 4.2 | 85.0 ± 7.1 | lr=0.1 |"
    assert f"- difair / digits: `{_key(CFG_B1)}`" in md
    assert "| difair | digits | auroc | 62.0 | 72.0 |" in md
    MD.to_csv(s, tmp_path / "s.csv")
    back = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_allclose(back["mean"], s["mean"])
    assert back["config"].tolist() == s["config"].tolist()


def test_load_curves(experiment):
    c = T.load_curves(experiment)
    t3 = c[(c["trial_id"] == "t3_00003") & (c["metric"] == "auroc")]
    assert t3["training_iteration"].tolist() == [1, 2] and t3["value"].tolist() == [0.40, 0.60]
    # The truncated last line of the errored trial is skipped, the complete one kept.
    assert c[c["trial_id"] == "t4_00004"]["training_iteration"].unique().tolist() == [1]


# --- CLI --------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "results_analysis", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_reports(experiment):
    before = set(p.name for p in experiment.iterdir())
    r = _cli(str(experiment))
    assert r.returncode == 0, r.stderr
    written = set(p.name for p in experiment.iterdir()) - before
    assert written == {"summary.csv", "summary.md", "val_auroc_curves.png", "test_auroc_per_split.png"}
    assert "67.0 ± 6.2" in r.stdout and "73.0 ± 4.2" in r.stdout
    assert r.stdout.index("67.0 ± 6.2") < r.stdout.index("73.0 ± 4.2")
    for png in ("val_auroc_curves.png", "test_auroc_per_split.png"):
        assert (experiment / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(experiment / "summary.csv")
    assert len(csv) == 4 and csv["n_runs"].tolist() == [4, 4, 2, 2]


def test_cli_out_dir_and_val_phase(experiment, tmp_path):
    before = sorted(p.name for p in experiment.iterdir())
    out = tmp_path / "reports" / "nested"
    r = _cli(str(experiment), "--phase", "val", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in experiment.iterdir()) == before
    assert {p.name for p in out.iterdir()} == {
        "summary.csv",
        "summary.md",
        "val_auroc_curves.png",
        "val_auroc_per_split.png",
    }
    assert "88.0 ± 1.6" in (out / "summary.md").read_text()


@pytest.mark.parametrize("make", ["missing", "no_trials"])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, make):
    path = tmp_path / "exp"
    if make == "no_trials":
        path.mkdir()
        (path / "tuner.pkl").write_bytes(b"x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = _cli(str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert str(path) in r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_cli_unknown_metric_exits_2(experiment):
    before = sorted(p.name for p in experiment.iterdir())
    r = _cli(str(experiment), "--metric", "nmi")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "auroc" in r.stderr
    assert sorted(p.name for p in experiment.iterdir()) == before


def _companion_rows() -> pd.DataFrame:
    """One adversarial config, two runs: the method's and the in-run baseline's TP-agreement and AUROC."""
    rows = []
    for seed, (tpa, base, auroc, base_auroc) in enumerate([((0.1, 0.2, 0.7), (0.1, 0.1, 0.8), 0.9, 0.85),
                                                           ((0.1, 0.3, 0.6), (0.1, 0.1, 0.8), 0.8, 0.80)]):
        values = {"auroc": auroc, "base_auroc": base_auroc, "delta_auroc": auroc - base_auroc, "phi": 0.4}
        for k in range(3):
            values[f"tpa_{k}of2"], values[f"base_tpa_{k}of2"] = tpa[k], base[k]
            values[f"tpa_indep_{k}of2"] = (0.04, 0.32, 0.64)[k]
        for phase in ("val", "test"):
            rows += [("t", "adversarial", "digits", "finished", "{}", 0, seed, phase, m, v) for m, v in values.items()]
    return pd.DataFrame(rows, columns=T.COLUMNS)


def test_companion_metrics_sort_beside_their_own_and_are_percent():
    summary = T.summarize(_companion_rows(), phase="test")
    metrics = summary["metric"].tolist()
    assert metrics[:3] == ["auroc", "base_auroc", "delta_auroc"]
    assert metrics.index("phi") < metrics.index("tpa_0of2")  # the METRIC_ORDER ones first
    table = MD.to_markdown(summary)
    assert "85.0 ± 7.1" in table  # auroc in percent: mean 0.85, std 0.0707
    assert "82.5 ± 3.5" in table and "2.5 ± 3.5" in table  # base_auroc and delta_auroc too
    assert "0.400 ± 0.000" in table  # a correlation is not a percentage


def test_tp_agreement_plot(tmp_path):
    from results_analysis.plots import plot_tp_agreement

    df = _companion_rows()
    path = tmp_path / "tpa.png"
    assert plot_tp_agreement(df, {("adversarial", "digits"): "{}"}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_tpa = df[~df["metric"].str.contains("tpa")]
    assert not plot_tp_agreement(no_tpa, {("adversarial", "digits"): "{}"}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
