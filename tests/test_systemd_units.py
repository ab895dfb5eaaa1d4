"""
contrib/systemd: the units are valid for systemd, and their commands, run as
systemd would run two instances, serve one port together and rotate the secret.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from conftest import Collector, child_env
from twisted.internet.protocol import Factory

from mnet_twisted import MNETClientEndpoint

UNITS = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
STATE = "/var/lib/mnet-echo"


def _exec_start(unit: str) -> list[str]:
    [line] = [
        line for line in (UNITS / unit).read_text().splitlines() if line.startswith("ExecStart=")
    ]
    return shlex.split(line.removeprefix("ExecStart="))


def _local(argv: list[str], tmp_path: Path, port: int) -> list[str]:
    """The unit's command for this checkout: its Python, a private state dir, a free port."""
    if argv[0].endswith("twistd"):
        head = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    else:
        head = [sys.executable]
    rest = [
        part.replace(STATE, str(tmp_path)).replace("mnet:9000", f"mnet:{port}")
        for part in argv[1:]
    ]
    return head + rest


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is absent")
def test_units_verify(tmp_path) -> None:
    """systemd-analyze finds nothing wrong (the executables pointed at this Python)."""
    for unit in UNITS.iterdir():
        text = unit.read_text()
        text = text.replace("/usr/local/bin/twistd", shutil.which("twistd") or sys.executable)
        text = text.replace("/usr/bin/python3", sys.executable)
        (tmp_path / unit.name).write_text(text)
    names = ["mnet-echo@1.service", "mnet-echo.target", "mnet-secret-rotate.timer",
             "mnet-secret-rotate.service"]  # fmt: skip
    shutil.copy(tmp_path / "mnet-echo@.service", tmp_path / "mnet-echo@1.service")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest_twisted.ensureDeferred
async def test_two_instances_serve_one_port_and_rotate(mnet, tmp_path) -> None:
    """Two copies of the worker unit's command bind one port; the rotation unit's command
    changes the secret; sessions keep working through it."""
    from twisted.internet import reactor

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = _local(_exec_start("mnet-echo@.service"), tmp_path, port)
    worker[worker.index("--nodaemon") + 1 : worker.index("--nodaemon") + 1] = [
        f"--logfile={tmp_path}/twistd-%d.log"
    ]
    processes = [
        subprocess.Popen(
            [part.replace("%d", str(n)) for part in worker],
            env=child_env(),
            stderr=subprocess.DEVNULL,
        )
        for n in (1, 2)
    ]
    try:
        logs = [tmp_path / f"twistd-{n}.log" for n in (1, 2)]
        await mnet.waitFor(
            lambda: all(
                p.exists() and "MNETDatagramProtocol starting" in p.read_text() for p in logs
            ),
            20,
        )
        endpoint = MNETClientEndpoint(reactor, "127.0.0.1", port, config=mnet.config, timeout=5)
        first = await mnet.within(endpoint.connect(Factory.forProtocol(Collector)))
        secret = (tmp_path / "cookie.secret").read_bytes()
        rotation = _local(_exec_start("mnet-secret-rotate.service"), tmp_path, port)
        assert subprocess.run(rotation, env=child_env(), timeout=30).returncode == 0
        assert (tmp_path / "cookie.secret").read_bytes() != secret
        await mnet.waitFor(lambda: all("rotated" in p.read_text() for p in logs), 5)
        second = await mnet.within(endpoint.connect(Factory.forProtocol(Collector)))
        for client in (first, second):
            client.transport.write(b"through the rotation")
        await mnet.waitFor(lambda: first.received == second.received == b"through the rotation")
        for client in (first, second):
            client.transport.loseConnection()
    finally:
        for process in processes:
            process.terminate()
        # Waiting without blocking the reactor lets the clients finish their
        # SHUTDOWN exchange, rather than making the servers wait out stopGrace.
        await mnet.waitFor(lambda: all(p.poll() is not None for p in processes), 30)
        codes = [process.returncode for process in processes]
    assert all(code in (0, -15) for code in codes), codes
