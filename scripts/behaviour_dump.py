"""Every number a tiny trial of each registered method writes, dumped for comparing two versions of the
code: a refactor must leave this dump byte-identical.

    python scripts/behaviour_dump.py OUT.json [--methods a,b] [--epochs 2]

Runs each trial without Ray (the path trainables/trial.py drives), single-threaded with fixed seeds:
every epoch report, every per-epoch and end file (final_metrics.json, the parquet tables as rows). An
open-set method (ALL_KNOWN) is also re-run at final_train_fraction 1.0."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from data import load_pool  # noqa: E402
from methods import method_names  # noqa: E402
from trainables.device_data import DataBundle  # noqa: E402
from trainables.tasks import task_splits, trial_runs  # noqa: E402

# Open-set methods also dumped as a re-run on every known training image (protocol.md §7): one plain,
# one whose post-hoc cell the re-run fixes.
ALL_KNOWN = ("softmax", "openmax")


def plain(value: Any) -> Any:
    """JSON-comparable: NaN and infinities as strings, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def folder_contents(folder: Path) -> dict[str, Any]:
    contents: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            contents[name] = plain(pd.read_parquet(path).to_dict(orient="list"))
        elif path.suffix == ".json":
            contents[name] = plain(json.loads(path.read_text()))
        else:
            contents[name] = path.read_bytes().hex()
    return contents


def dump_trial(config: dict[str, Any], bundle: DataBundle) -> dict[str, Any]:
    runs = trial_runs(config, bundle, torch.device("cpu"))
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs.write_epoch(folder, 0)
        for epoch in range(runs.epochs):
            reports.append(runs.train_epoch(epoch))
            runs.write_epoch(folder, epoch + 1)
        runs.write_final(folder, "dump", reports[-1])
        return {"reports": plain(reports), "files": folder_contents(folder)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--methods", default=",".join(method_names()))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pool = load_pool("digits", ".")
    dump: dict[str, Any] = {}
    for method in args.methods.split(","):
        bundle = DataBundle.from_pool(pool, task_splits(pool, method, [0]))
        config = {"method": method, "dataset": "digits", "splits": [0], "seeds": [0], "epochs": args.epochs}
        dump[method] = dump_trial(config, bundle)
        if method in ALL_KNOWN:
            dump[f"{method}@1.0"] = dump_trial({**config, "final_train_fraction": 1.0}, bundle)
        print(method, "done", flush=True)
    Path(args.out).write_text(json.dumps(dump, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
