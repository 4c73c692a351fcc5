"""protocol.md §7 ``final_train_fraction`` end to end: a --config re-run with --final-train-fraction 1.0
through Ray Tune trains on all known training images and reports only threshold-free test metrics with
the selected post-hoc cell (the runs themselves, without Ray: tests/unit/test_final_train_fraction.py)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from trial_files import results, trial_dirs

from results_analysis.catalogue import is_threshold_free
from results_analysis.tables import load_experiment
from results_analysis.trial_files import TRAIN_FRACTION_KEY
from search.main import main

# As tests/unit/test_final_train_fraction.py: seconds on a CPU, trained enough that OpenMax fits every class.
OPENMAX = {"method": "openmax", "dataset": "digits", "splits": [0], "seeds": [0], "epochs": 4, "warmup_epochs": 0,
           "restarts": 0, "lr": 0.1, "batch_size": 32, "alpha_rank": 3, "tailsize": 10}


@pytest.mark.ray
def test_rerun_on_all_known_training_images_end_to_end(ray_session, tmp_path, capsys):
    config = {k: v for k, v in OPENMAX.items() if k not in ("method", "dataset", "splits", "seeds")}
    exported = tmp_path / "best.yaml"
    exported.write_text(yaml.safe_dump({"method": "openmax", "dataset": "digits", "config": config,
                                        "posthoc": {"selected": "T=20/alpha=2/dist=eucos"}}))
    rc = main(["--config", str(exported), "--final-train-fraction", "1.0", "--splits", "0", "--seeds", "1",
               "--storage-path", str(tmp_path), "--name", "final"])
    out = capsys.readouterr().out
    assert rc == 0, out
    (trial,) = trial_dirs(tmp_path / "final")
    final = json.loads((trial / "final_metrics.json").read_text())
    assert final[TRAIN_FRACTION_KEY] == 1.0
    assert final["posthoc"]["selected"] == "T=20/alpha=2/dist=eucos" and final["config"]["distance"] == "eucos"
    assert {r["phase"] for r in final["records"]} == {"test"}
    assert all(is_threshold_free(r["metric"]) for r in final["records"])
    reports = results(trial)
    assert len(reports) == OPENMAX["epochs"]
    assert all(r["val_auroc"] is None or math.isnan(r["val_auroc"]) for r in reports)
    assert all("trained_on_val_auroc" in r for r in reports)
    params = json.loads((trial / "params.json").read_text())
    assert params[TRAIN_FRACTION_KEY] == 1.0 and params["posthoc_cell"] == "T=20/alpha=2/dist=eucos"
    doc = yaml.safe_load((tmp_path / "final" / "best.yaml").read_text())
    assert doc[TRAIN_FRACTION_KEY] == 1.0 and doc["metrics"]["val"] == {}
    assert f"{TRAIN_FRACTION_KEY}: 1, trained on all known training images" in out
    tidy = load_experiment(tmp_path / "final")
    assert set(tidy["phase"]) == {"test"}
    assert pd.Series(tidy["config"]).str.contains(f'"{TRAIN_FRACTION_KEY}":1.0').all()
