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
from typing import Any

import pytest
from benchrun import load_bench

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
            # One round: its own ratio is the ratio of the medians.
            assert figures["ratios_by_round"] == [pytest.approx(figures["ratio"])], key
            if QUIC_INSTALLED and scenario in ("bulk", "echo") and "1452" not in key:
                assert figures["quic"], key


def test_ratios_by_round_pair_each_mnet_figure_with_tcp_of_the_same_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suite = load_bench("suite.py", monkeypatch)

    def record(round_: int, proto: str, p50: float | None, ok: bool = True) -> dict[str, Any]:
        return {"round": round_, "proto": proto, "p50_us": p50, "ok": ok}

    records = [
        record(0, "mnet", 130.0), record(0, "tcp", 100.0),
        record(1, "mnet", 150.0), record(1, "tcp", 125.0),
        record(2, "mnet", 140.0, ok=False), record(2, "tcp", 100.0),  # a failed run: no pair
        record(3, "mnet", 120.0),  # TCP's run of this round missing
    ]  # fmt: skip
    assert suite.round_ratios(records, "mnet", "p50_us") == [1.3, 1.2]
