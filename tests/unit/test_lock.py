"""requirements.lock: the installed environment is exactly the locked one, and the check that
scripts/setup_env.sh runs finds every kind of difference."""

from __future__ import annotations

import importlib.util
from importlib import metadata

from repo_paths import ROOT

_spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def test_this_environment_has_exactly_the_locked_versions():
    assert lock.differences() == []


def test_every_direct_dependency_is_locked_with_one_exact_version():
    locked = {lock.canonical(r.name): r for r in lock.locked()}
    for req in lock.locked(lock.DIRECT):
        pinned = locked[lock.canonical(req.name)]
        assert [s.operator for s in pinned.specifier] == ["=="], pinned


def test_the_check_names_a_wrong_version_a_missing_package_and_an_unlocked_dependency(tmp_path):
    numpy = metadata.version("numpy")
    bad = tmp_path / "requirements.lock"
    bad.write_text("# header\n"
                   f"numpy=={numpy}\n"
                   "pyyaml==0.0.1\n"
                   "no-such-package-osrtune==1.0\n"
                   'windows-only-package==1.0 ; sys_platform == "win32"\n')
    direct = tmp_path / "requirements.txt"
    direct.write_text("numpy\nscipy\n")
    assert lock.differences(bad, direct) == [
        f"pyyaml: {metadata.version('pyyaml')} installed, locked 0.0.1",
        "no-such-package-osrtune: not installed, locked 1.0",
        "scipy: in requirements.txt but not in requirements.lock (run make lock)",
    ]


def test_a_written_lock_marks_the_linux_only_cuda_packages():
    text = lock.write()
    assert text.startswith("# ")
    lines = [ln for ln in text.splitlines() if ln.startswith(("nvidia-", "triton=="))]
    assert all(ln.endswith(lock.MARKER) for ln in lines)
    assert not any(ln.startswith("numpy==") and ";" in ln for ln in text.splitlines())
