"""Entry point: ``python search/benchmark.py --dataset mnist --methods softmax,openmax,crosr,difair``. See --help."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run from anywhere: the project's folders (data, methods, …) are imported from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Ray workers import the same folders.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from search.benchmark_main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
