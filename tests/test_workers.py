"""
``mnet-workers``: N ``twistd mnet-echo`` processes on one port
(``reusePort=yes`` and a shared ``secretFile``), what happens to sessions
when a worker dies, restarts, and stopping the group.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from conftest import TWISTD, Collector, child_env
from twisted.internet.protocol import Factory

from mnet_twisted import MNETClientEndpoint

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="this platform has no SO_REUSEPORT"
)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepted(log: Path) -> int:
    """The latest 'N accepted' of a worker's periodic totals (0 before the first)."""
    counts = re.findall(r"(\d+) accepted", log.read_text()) if log.exists() else []
    return int(counts[-1]) if counts else 0


def _pids(said: Path) -> dict[int, int]:
    """Worker number -> pid of its latest start, from the launcher's messages."""
    return {
        int(number): int(pid)
        for number, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", said.read_text())
    }


def test_help_and_a_missing_command() -> None:
    """--help says what it does; a command that cannot run gives status 127, no traceback."""
    run = [sys.executable, "-m", "mnet_twisted.workers"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "reusePort=yes" in shown.stdout
    missing = subprocess.run(
        [*run, "-n", "2", "--", "/nonexistent/server"], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 127
    assert "cannot start" in missing.stderr and "Traceback" not in missing.stderr


@pytest_twisted.ensureDeferred
async def test_workers_share_a_port_and_survive_one_dying(mnet, tmp_path) -> None:
    """Sessions spread over two workers; killing one ends its sessions only, by ABORT,
    and the launcher starts it again; SIGTERM stops the group with status 0."""
    from twisted.internet import reactor

    port = _free_udp_port()
    said = tmp_path / "launcher.txt"
    listen = f"mnet:{port}:interface=127.0.0.1:reusePort=yes:secretFile={tmp_path / 'secret'}"
    command = [
        sys.executable,
        "-m",
        "mnet_twisted.workers",
        "-n",
        "2",
        "--restart",
        "--",
        *TWISTD,
        f"--logfile={tmp_path}/worker-{{worker}}.log",
        "mnet-echo",
        "--listen",
        listen,
        "--stats-interval",
        "0.2",
    ]
    with open(said, "wb") as out:
        launcher = subprocess.Popen(command, env=child_env(), stderr=out)
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    try:
        await mnet.waitFor(
            lambda: all("totals" in _text(log) or "accepted" in _text(log) for log in logs), 20
        )
        endpoint = MNETClientEndpoint(reactor, "127.0.0.1", port, config=mnet.config, timeout=5)
        clients = [
            await mnet.within(endpoint.connect(Factory.forProtocol(Collector))) for _ in range(24)
        ]
        for index, client in enumerate(clients):
            client.transport.write(b"<%d>" % index)
        await mnet.waitFor(
            lambda: all(c.received == b"<%d>" % i for i, c in enumerate(clients)), 10
        )
        await mnet.waitFor(lambda: sum(_accepted(log) for log in logs) == 24, 5)
        before = [_accepted(log) for log in logs]
        assert min(before) > 0, before  # all 24 on one worker: once in 2**23 runs

        lost: set[int] = set()
        for index, client in enumerate(clients):
            client.connectionLost = lambda reason, i=index: lost.add(i)  # type: ignore[method-assign]
        old_pid = _pids(said)[2]
        subprocess.run(["kill", "-KILL", str(old_pid)], check=True)
        await mnet.waitFor(lambda: "ended by SIGKILL" in said.read_text(), 5)
        for index, client in enumerate(clients):
            client.transport.write(b"[%d]" % index)
        # The dead worker's peers now reach a worker that does not know their
        # tag: it answers ABORT, well before any dead-peer timeout.
        await mnet.waitFor(lambda: len(lost) == before[1], 5)
        survivors = [c for i, c in enumerate(clients) if i not in lost]
        assert len(survivors) == before[0]
        await mnet.waitFor(lambda: all(c.received.endswith(b"]") for c in survivors), 5)
        await mnet.waitFor(lambda: _pids(said)[2] != old_pid, 10)  # restarted
        fresh = await mnet.within(endpoint.connect(Factory.forProtocol(Collector)))
        fresh.transport.write(b"again")
        await mnet.waitFor(lambda: fresh.received == b"again")
        for client in [*survivors, fresh]:
            client.transport.loseConnection()
    finally:
        launcher.send_signal(signal.SIGTERM)
        # Without blocking the reactor, so the clients can answer the workers' SHUTDOWN.
        await mnet.waitFor(lambda: launcher.poll() is not None, 30)
        status = launcher.returncode
    assert status == 0, said.read_text()
    assert said.read_text().count("ended by SIGTERM") == 2


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
