"""Tune's saved experiment state, made whole before a resume.

Tune saves its state (trial list, search generator, searcher) atomically into a staging folder of
the driver's Ray session, and a background thread copies that folder into the experiment folder while
the driver goes on. A driver killed with SIGKILL can therefore leave in the experiment folder a state
file cut short by the kill, or files from two different saves. Restored as is, the first makes Tune
give up the restore and silently start the search afresh beside the old searcher's bookkeeping (it
then waits for ever on trials that no longer exist); the second can leave the generator counting a
trial the trial list lacks, which is then never created. This reads and writes Tune's private state
files (Ray is pinned in requirements.txt)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ray import cloudpickle

# The kinds of state file Tune keeps per driver session, named <prefix><session time><suffix>.
STATE_FILES = ("experiment_state-", "search_gen_state-", "searcher-state-")


class SavedStateError(Exception):
    """A saved state that cannot be read and has no intact copy to take its place."""


def readable(path: Path) -> bool:
    try:
        if path.name.startswith("experiment_state-"):
            json.loads(path.read_text())
        else:
            with path.open("rb") as f:
                cloudpickle.load(f)
    except Exception:  # a file cut short fails in as many ways as pickle and JSON have
        return False
    return True


def staging_copies(name: str, file_name: str) -> list[Path]:
    """Intact copies of ``file_name`` in the driver staging folders of this machine's Ray sessions
    (a killed driver's session folder stays on disk)."""
    ray_tmp = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    found = ray_tmp.glob(f"session_*/artifacts/*/{name}/driver_artifacts/{file_name}")
    return [p for p in found if readable(p)]


def repair(experiment: Path) -> None:
    """Replaces every newest state file that cannot be read with an intact copy from the killed
    driver's staging folder; raises SavedStateError when there is none."""
    for prefix in STATE_FILES:
        files = sorted(experiment.glob(f"{prefix}*"))
        if not files or readable(files[-1]):
            continue
        copies = staging_copies(experiment.name, files[-1].name)
        if not copies:
            raise SavedStateError(f"{files[-1]} was cut short when its driver was killed, and no intact copy "
                                  "is left on this machine")
        _replace(files[-1], copies[0].read_bytes())


def reconcile_generator(experiment: Path) -> None:
    """Makes the count of trials the saved search generator has created match the trials the saved
    trial list holds."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    generators = sorted(experiment.glob("search_gen_state-*.json"))
    if not states or not generators:
        return  # a re-run (no searcher) or nothing saved yet
    trials = len(json.loads(states[-1].read_text()).get("trial_data", []))
    with generators[-1].open("rb") as f:
        saved = cloudpickle.load(f)
    if saved.get("counter", trials) == trials:
        return
    saved["counter"] = trials
    saved["finished"] = trials >= saved.get("total_samples", trials)
    _replace(generators[-1], cloudpickle.dumps(saved))


def _replace(path: Path, data: bytes) -> None:
    """Writes ``path`` whole or not at all, as Tune writes its state files."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def make_whole(experiment: Path) -> None:
    repair(experiment)
    reconcile_generator(experiment)
