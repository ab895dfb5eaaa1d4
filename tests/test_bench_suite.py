"""
Smoke test for bench/suite.py: every scenario runs for real (separate
processes on loopback) at tiny sizes, checks what arrived, and reports a
figure for both MNET and TCP.  The scenarios run as four suite invocations
at once, since most of their time is Python processes starting.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "suite.py"

#: The optional aioquic column runs where aioquic is installed (the test extra has it).
QUIC_INSTALLED = importlib.util.find_spec("aioquic") is not None

TINY = [
    "--rounds=1",
    "--bulk-mib=2",
    "--echo-count=40",
    "--connect-count=5",
    "--rate-clients=1",
    "--rate-parallel=2",
    "--rate-seconds=0.3",
]


def test_every_scenario_reports_checked_figures(tmp_path: Path) -> None:
    runs = {}
    for scenario in ("bulk", "echo", "connect", "rate"):
        report = tmp_path / f"{scenario}.json"
        command = [sys.executable, str(BENCH), *TINY, f"--only={scenario}", f"--json={report}"]
        if scenario == "echo":
            command.append("--breakdown")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        runs[scenario] = (process, report)
    for scenario, (process, report_path) in runs.items():
        stdout, stderr = process.communicate(timeout=110)
        assert process.returncode == 0, (stdout + stderr).decode()
        assert b"MNET/TCP" in stdout
        report = json.loads(report_path.read_text())
        records = report["runs"][scenario]
        protocols = {"mnet", "tcp"}
        if QUIC_INSTALLED and scenario in ("bulk", "echo"):
            protocols.add("quic")
        if scenario in ("connect", "rate"):
            protocols.add("mnet-early")
        assert {r["proto"] for r in records} - {"mnet-1452"} == protocols, scenario
        assert all(r["ok"] for r in records), records
        if scenario == "echo":
            # Each side's turn and send call, for MNET and TCP (not QUIC's peer).
            assert b"Echo round trip by side" in stdout
            for record in records:
                timed = {key for key in record if key.endswith(("_turn_us", "_send_us"))}
                if record["proto"] in ("mnet", "tcp"):
                    assert len(timed) == 4, record
                    assert all(0 < record[key] < record["p99_us"] for key in timed), record
                else:
                    assert not timed, record
        for key, figures in report["summary"].items():
            assert figures["mnet"] and figures["tcp"] and figures["ratio"], key
            if QUIC_INSTALLED and scenario in ("bulk", "echo") and "1452" not in key:
                assert figures["quic"], key
