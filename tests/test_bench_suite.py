"""
Smoke test for bench/suite.py: every scenario runs for real (separate
processes on loopback) at tiny sizes, checks what arrived, and reports a
figure for both MNET and TCP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "suite.py"


def test_every_scenario_reports_checked_figures(tmp_path: Path) -> None:
    report_path = tmp_path / "suite.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--rounds=1",
            "--bulk-mib=2",
            "--echo-count=40",
            "--connect-count=5",
            "--rate-clients=1",
            "--rate-parallel=2",
            "--rate-seconds=0.3",
            f"--json={report_path}",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    for scenario, records in report["runs"].items():
        assert {"mnet", "tcp"} <= {r["proto"] for r in records}, scenario
        assert all(r["ok"] for r in records), records
    for key, figures in report["summary"].items():
        assert figures["mnet"] and figures["tcp"] and figures["ratio"], key
    assert "MNET/TCP" in done.stdout
