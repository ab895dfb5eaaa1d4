"""Smoke test for bench/sim_early_data.py: every path gets a row for both handshakes."""

from __future__ import annotations

import re

from benchrun import run_bench


def test_sim_early_data_counts_failures_per_path() -> None:
    stdout = run_bench("sim_early_data.py", "--seeds", "3")
    rows = re.findall(r"^\s+(\d+)% \|\s+(\d+)% \| (\d+)\b.*\| (\d+)\b", stdout, re.MULTILINE)
    assert len(rows) == 6, stdout
    assert all(int(default) <= 3 and int(early) <= 3 for *_, default, early in rows), stdout
