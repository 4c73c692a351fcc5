"""Where the tests find the repository and the shared data, from whichever tier folder they run in
(tests/unit, tests/integration, tests/learning): one definition instead of a ``parents[N]`` per file."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED = ROOT.parent / "shared"
MNIST_ROOT = SHARED / "datasets"
