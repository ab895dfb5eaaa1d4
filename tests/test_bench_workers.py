"""
Smoke test for bench/workers_bench.py: two workers under ``mnet-workers`` on
one port, tiny bulk and rate runs and one worker death, for real; the
report's figures and checks are what the scenarios saw.  Two invocations at
once, since most of their time is Python processes starting.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "workers_bench.py"

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="this platform has no SO_REUSEPORT"
)

TINY = ["--rounds=1", "--workers=2"]
LOAD = [
    "--only=bulk,rate",
    "--bulk-clients=2",
    "--bulk-sessions=2",
    "--bulk-mib=1",
    "--rate-clients=1",
    "--rate-parallel=2",
    "--rate-seconds=0.3",
]
DEATH = [
    "--only=death",
    "--death-kill=last",
    "--death-sessions=8",
    "--death-before=0.3",
    "--death-after=0.5",
    "--death-settle=0.3",
]


def test_bulk_rate_and_a_worker_death_report_checked_figures(tmp_path: Path) -> None:
    runs = {}
    for name, extra in (("load", LOAD), ("death", DEATH)):
        report = tmp_path / f"{name}.json"
        command = [sys.executable, str(BENCH), *TINY, *extra, f"--json={report}"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        runs[name] = (process, report)
    reports = {}
    for name, (process, report_path) in runs.items():
        stdout, stderr = process.communicate(timeout=110)
        assert process.returncode == 0, (stdout + stderr).decode()
        reports[name] = json.loads(report_path.read_text())
    assert reports["load"]["machine"]["cpus"] >= 1

    (bulk,) = reports["load"]["runs"]["bulk"]
    assert bulk["ok"] and bulk["hashes_ok"] == bulk["sessions"] == 4, bulk
    assert bulk["bytes"] == 4 * 1024 * 1024 and bulk["mb_per_s"] > 0
    assert sum(bulk["per_worker"].values()) == 4 and set(bulk["per_worker"]) <= {"1", "2"}
    assert len(bulk["cpu"]["workers"]) == 2 and len(bulk["cpu"]["clients"]) == 2

    (rate,) = reports["load"]["runs"]["rate"]
    assert rate["ok"] and rate["per_second"] > 0, rate
    assert sum(rate["per_worker"].values()) == rate["sessions"]

    (death,) = reports["death"]["runs"]["death"]
    assert death["ok"], death
    assert death["sessions_at_kill"] == 8
    victim = death["victim_sessions"]
    # Every session on the killed worker ended, by the survivor's ABORT, and
    # its slot got a new session there that echoed; the survivor's went on.
    assert victim["lost"] == victim["sessions"]
    if victim["sessions"]:
        assert all("ABORT" in reason for reason in victim["reasons"]), victim["reasons"]
        assert victim["replaced"] == victim["sessions"]
        (survivor,) = death["survivors"]
        assert victim["replacement_workers"] == {str(survivor["worker"]): victim["lost"]}
    assert death["survivor_sessions"]["lost"] == 0
    assert death["at_end"]["lost_echoes"] == 0 and death["at_end"]["wrong_echoes"] == 0
    # The worker that bound last was killed: once restarted, it takes back
    # none of the survivor's original sessions (the workers bind 0.2 s apart,
    # so only a stall that long leaves their order in doubt).
    assert death["restart_ms"] is not None
    if death["bind_order_certain"]:
        assert death["after_restart"]["originals"]["lost"] == 0
    assert "death.killed_last" in reports["death"]["summary"]
