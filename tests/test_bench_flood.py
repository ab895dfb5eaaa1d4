"""Smoke test for bench/handshake_flood.py: both phases run for real and report figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "handshake_flood.py"


def test_flood_phases_report_an_honest_session_and_the_cookies_answered(tmp_path: Path) -> None:
    report_path = tmp_path / "flood.json"
    command = [sys.executable, str(BENCH), "--seconds", "0.5", "--flooders", "1"]
    done = subprocess.run(
        [*command, "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    quiet, flooded = json.loads(report_path.read_text())["phases"]
    for record in (quiet, flooded):
        assert record["error"] is None, record["error"]
        assert record["echoes"] > 0 and record["p50_ms"] > 0
    assert quiet["inits_per_second"] == 0 and flooded["inits_per_second"] > 0
    # Within the per-source rate (10,000/s) plus its burst (a tenth of a
    # second), with room for a flooder that stops a little late.
    assert 0 < flooded["cookies_per_second"] <= (10_000 * 0.6 + 1_000) / 0.5
