"""Smoke test for bench/core_echo.py: the sans-IO echo loop runs and reports a figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "core_echo.py"


def test_core_echo_reports_microseconds_per_round_trip() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--messages", "300"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figure = re.search(r"both ends: ([0-9.]+) µs", done.stdout)
    assert figure is not None and float(figure.group(1)) > 0, done.stdout


def test_core_echo_says_so_when_it_cannot_count_instructions(tmp_path: Path) -> None:
    """Without valgrind on the PATH, ``--instructions`` says why and still times."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--messages", "300", "--instructions"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(tmp_path)},  # an empty directory: no valgrind there
    )
    assert done.returncode == 0, done.stderr
    assert "valgrind is not installed: instructions not counted" in done.stdout, done.stdout
    assert re.search(r"both ends: ([0-9.]+) µs", done.stdout), done.stdout
