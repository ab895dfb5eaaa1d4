"""Smoke test for bench/receiver_holes.py: every pass delivers its bytes and reports."""

from __future__ import annotations

import re
import shutil
import sys

import pytest
from benchrun import BENCH_DIR, run_bench


def _bench(*extra: str) -> str:
    """The bench's output for a short run (it must succeed)."""
    return run_bench("receiver_holes.py", "--segments", "600", "--repeats", "1", *extra)


def test_receiver_holes_reports_a_row_per_pattern() -> None:
    stdout = _bench()
    rows = re.findall(r"^\s*(none|\d+) \|\s*([0-9.]+) \| ([0-9.]+)$", stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["none", "100", "20"], stdout
    assert all(float(row[1]) > 0 for row in rows), stdout
    acks = {row[0]: float(row[2]) for row in rows}
    # In order, every second segment is acked; past a hole, every segment.
    assert acks["none"] == 0.5 and acks["100"] > 0.8 and acks["20"] > 0.8, acks


def test_receiver_holes_counts_calls_per_segment() -> None:
    """``--calls`` adds a column that cannot swing with the machine: holes cost calls."""
    stdout = _bench("--calls")
    rows = re.findall(r"^\s*(none|\d+) \|.*\| ([0-9.]+)$", stdout, re.MULTILINE)
    calls = {label: float(value) for label, value in rows}
    assert list(calls) == ["none", "100", "20"], stdout
    assert 0 < calls["none"] < calls["100"] <= calls["20"], calls


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_receiver_holes_counts_instructions_per_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--instructions``: callgrind's count over two passes, start-up subtracted."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import receiver_holes
    finally:
        sys.path.remove(str(BENCH_DIR))
    monkeypatch.setattr(receiver_holes, "_SHORT_PASS", 100)
    monkeypatch.setattr(receiver_holes, "_LONG_PASS", 400)
    count = receiver_holes.instructions_per_segment(20)
    # A segment takes thousands of instructions, not millions: start-up and
    # the handshake did not leak in.
    assert 5_000 < count < 200_000, count
