"""Smoke test for bench/core_bulk.py: a bulk transfer through the sans-IO core, clean and lossy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "core_bulk.py"


def test_core_bulk_reports_a_row_per_loss_level() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--mib", "1", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # every byte arrived as sent
    rows = re.findall(r"^\s*(0 %|1 %) \|\s*([0-9.]+) \| ([0-9.]+)$", done.stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["0 %", "1 %"], done.stdout
    assert all(float(row[1]) > 0 for row in rows), done.stdout
    acks = {row[0]: float(row[2]) for row in rows}
    # Loss-free every second segment is acked; with holes open, nearly every one.
    assert acks["0 %"] == 0.5 and acks["1 %"] > 0.8, acks


def test_core_bulk_one_pass_prints_the_datagrams_it_sent() -> None:
    """What ``--instructions`` divides by: 1 MiB in 1,438-byte segments, a few resent."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--one-pass", "lossy", "--mib", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    needed = -(-1_048_678 // 1438)
    assert needed < int(done.stdout) < needed * 1.05, done.stdout
