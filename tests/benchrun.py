"""Running one of ``bench/``'s scripts from a test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *arguments: str) -> str:
    """The standard output of ``python bench/<script> arguments``, which must succeed."""
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def load_bench(script: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench/<script>`` imported as a module, to test its functions alone."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))  # its helper modules
    spec = importlib.util.spec_from_file_location(Path(script).stem, BENCH_DIR / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
