"""Smoke test for bench/scale_sessions.py: a few hundred sessions, every figure reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "scale_sessions.py"
sys.path.insert(0, str(BENCH.parent.parent / "tools"))

from arena_survivors import available  # noqa: E402


def test_sessions_benchmark_reports_memory_cpu_and_checked_echoes(tmp_path: Path) -> None:
    report_path = tmp_path / "scale.json"
    sessions, rounds = 200, 3
    command = [
        *(sys.executable, str(BENCH), "--sessions", str(sessions), "--clients", "2"),
        *("--duration", "1.5", "--interval", "0.5", "--idle-seconds", "0.5"),
        *("--json", str(report_path), "--survivors"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "memory per session" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["sessions"] == sessions and report["open"]["listener_open"] == sessions
    echo = report["echo"]
    assert echo["sent"] == sessions * rounds
    assert echo["echoed"] == echo["sent"] and echo["mismatches"] == 0
    assert 0 < echo["p50_ms"] <= echo["p99_ms"] <= echo["max_ms"]
    server = report["server"]
    assert server["rss_idle_kib"] > 0 and server["bytes_per_idle_session"] != 0
    assert server["loaded_cpu_per_second"] > 0
    # Idle sessions, seconds before their first keep-alive: no timer, no datagram.
    assert server["idle"] == {
        "timer_wakeups": 0,
        "session_timer_calls": 0,
        "datagrams_received": 0,
        "datagrams_sent": 0,
    }
    # One timer for all sessions (a pending flush may add a zero-delay call).
    assert server["delayed_calls_idle"] <= 2 and server["delayed_calls_loaded"] <= 2
    # Everything closed, and the sessions' objects are gone again.
    assert server["sessions_open_end"] == 0
    # A close takes SHUTDOWN and SHUTDOWN-COMPLETE in, SHUTDOWN-ACK out;
    # retransmissions add a little, never a storm.
    closing = server["closing"]
    assert 2 * sessions <= closing["datagrams_received"] < 4 * sessions
    assert sessions <= closing["datagrams_sent"] < 2 * sessions
    assert 0 <= closing["to_sessions_gone"] < sessions
    assert server["python_blocks_end"] < server["python_blocks_idle"]
    # What the wave left in the listener's memory pools, where they can be walked.
    survivors = server["survivors_end"]
    if available()[0]:
        assert survivors["blocks"] == sum(survivors["by_type"].values())
        assert survivors["arenas"] == len(survivors["by_arena"])
        assert "pools made since the start hold" in done.stdout
    else:
        assert survivors is None
    clients = report["clients_report"]
    assert clients["bytes_per_session"] > 0
    # A segment arrives twice only if it was sent twice: loopback duplicates nothing.
    assert 0 <= clients["duplicates_received_loaded"] <= server["retransmissions_loaded"]
    assert 0 <= server["duplicates_received_loaded"] <= clients["retransmissions_loaded"]
    for side in (server, clients):
        assert side["spurious_loaded"] >= 0 and side["deferred_loaded"] >= 0
        # Every episode undone had resent something; a session defers only
        # to another's copy, which a timeout sent.
        assert side["spurious_loaded"] <= side["retransmissions_loaded"]
        assert side["deferred_loaded"] == 0 or side["timeouts_loaded"] > 0
