"""Running one of ``bench/``'s scripts from a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
