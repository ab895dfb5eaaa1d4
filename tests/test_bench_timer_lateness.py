"""Smoke test for bench/timer_lateness.py: how late a deadline's work runs, three ways."""

from __future__ import annotations

import re

from benchrun import run_bench


def test_timer_lateness_reports_each_way_in_milliseconds() -> None:
    stdout = run_bench("timer_lateness.py", "--waits", "20")
    for way in ("callLater:", "the port, reactor alone:"):
        line = re.search(rf" {way} +late by median (-?[0-9.]+) ms, p90 (-?[0-9.]+) ms", stdout)
        assert line is not None, stdout
        assert float(line.group(1)) >= 0, stdout  # never before the deadline
    assert re.search(r" the port, its fine timer: (late by median [0-9.]+ ms|none here)", stdout)
