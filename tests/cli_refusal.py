"""The command line's refusal of bad input, as tests in every tier check it: one line on stderr, exit
status 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.main import main


def run_main(capsys: pytest.CaptureFixture[str], storage: Path, *args: str) -> str:
    """Runs ``main(args)`` with ``--storage-path storage``, asserts it was refused as above and returns
    the one line it printed."""
    rc = main([*args, "--storage-path", str(storage)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not storage.exists(), "a rejected command wrote into the results folder"
    return lines[0]
