"""Smoke test for bench/core_bulk.py: a bulk transfer through the sans-IO core, clean and lossy."""

from __future__ import annotations

import re

from benchrun import run_bench


def _bench(*arguments: str) -> str:
    return run_bench("core_bulk.py", *arguments)  # (it checks every byte it delivers)


def test_core_bulk_reports_a_row_per_loss_level() -> None:
    stdout = _bench("--mib", "1", "--repeats", "1")
    rows = re.findall(r"^\s*(0 %|1 %) \|\s*([0-9.]+) \| ([0-9.]+)$", stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["0 %", "1 %"], stdout
    assert all(float(row[1]) > 0 for row in rows), stdout
    acks = {row[0]: float(row[2]) for row in rows}
    # Loss-free every second segment is acked; with holes open, nearly every one.
    assert acks["0 %"] == 0.5 and acks["1 %"] > 0.8, acks


def test_core_bulk_one_pass_prints_the_datagrams_it_sent() -> None:
    """What ``--instructions`` divides by: 1 MiB in 1,438-byte segments, a few resent."""
    needed = -(-1_048_678 // 1438)
    assert needed < int(_bench("--one-pass", "lossy", "--mib", "1")) < needed * 1.05
