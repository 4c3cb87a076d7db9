"""Imported first by every benchmark script (`python bench/NAME.py`): puts this checkout's
src/ (shoal) and root (bench.common, tests.harness) at the front of sys.path, so that a
benchmark measures this checkout even where another copy of shoal is installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
for folder in (SRC, ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def subprocess_env() -> dict[str, str]:
    """PYTHONPATH for the `shoal` subprocesses a benchmark starts: this checkout's src/
    first, as in this process."""
    paths = [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}
