"""The pyflakes rules (unused imports and names, undefined names) hold in the whole tree.

Oracle: ruff with the configuration of ``pyproject.toml`` (``select = ["F"]``)
finds nothing in the engine, the app, the tests and the benchmarks.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e .[dev])")
def test_ruff_finds_nothing():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "nmfcore", "app", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"ruff findings:\n{run.stdout}{run.stderr}"
