"""
``mnet-cat``: standard input and output over an MNET session, in real
processes: a file each way between ``--listen`` and a client, an echo
through ``mnet-echo``, exit statuses, and the progress line on a terminal.
"""

from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from conftest import child_env

CAT = [sys.executable, "-m", "mnet_twisted.cat"]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect_when_listening(port: int, **kwargs) -> subprocess.CompletedProcess[bytes]:  # type: ignore[no-untyped-def]
    """Run a client; while the listener is still starting it is refused (status 1): retry."""
    for _ in range(100):
        done = subprocess.run(
            [*CAT, "127.0.0.1", str(port)], env=child_env(), timeout=60, check=False, **kwargs
        )
        if done.returncode != 1:
            return done
        if hasattr(kwargs.get("stdin"), "seek"):
            kwargs["stdin"].seek(0)
        time.sleep(0.1)
    raise AssertionError("the listener never accepted")


def test_a_file_each_way_between_listen_and_connect(tmp_path: Path) -> None:
    # MNET has no half-close: what the listener sends must be written before
    # the client's input ends, so it sends little (one read of its stdin).
    there, back = os.urandom(2_000_000), os.urandom(20_000)
    (tmp_path / "there").write_bytes(there)
    (tmp_path / "back").write_bytes(back)
    port = _free_udp_port()
    with open(tmp_path / "back", "rb") as stdin, open(tmp_path / "got-there", "wb") as out:
        server = subprocess.Popen(
            [*CAT, "--listen", str(port), "--interface", "127.0.0.1"],
            stdin=stdin,
            stdout=out,
            env=child_env(),
        )
    try:
        with open(tmp_path / "there", "rb") as stdin:
            client = _connect_when_listening(port, stdin=stdin, stdout=subprocess.PIPE)
        assert client.returncode == 0
        assert server.wait(30) == 0
        assert (tmp_path / "got-there").read_bytes() == there
        assert client.stdout == back
    finally:
        if server.poll() is None:
            server.kill()


def test_echo_through_mnet_echo_and_the_exit_statuses(tmp_path: Path) -> None:
    port = _free_udp_port()
    twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    with open(tmp_path / "echo.log", "wb") as log:
        echo = subprocess.Popen(
            [
                *twistd,
                "-n",
                "--pidfile=",
                "mnet-echo",
                "--listen",
                f"mnet:{port}:interface=127.0.0.1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=child_env(),
        )
    try:
        message = os.urandom(300_000)
        done = _connect_when_listening(port, input=message, capture_output=True)
        assert done.returncode == 0 and done.stdout == message
    finally:
        echo.terminate()
        echo.wait(20)
    nobody = subprocess.run(
        [*CAT, "127.0.0.1", str(port)], input=b"", capture_output=True, env=child_env(), timeout=60
    )
    assert nobody.returncode == 1 and b"no session" in nobody.stderr
    usage = subprocess.run([*CAT], capture_output=True, env=child_env(), timeout=60)
    assert usage.returncode == 2
    helped = subprocess.run([*CAT, "--help"], capture_output=True, env=child_env(), timeout=60)
    assert helped.returncode == 0 and b"Exit status" in helped.stdout


def test_progress_line_when_sending_a_file_to_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(os.urandom(3_000_000))
    port = _free_udp_port()
    sink = subprocess.Popen(
        [*CAT, "--listen", str(port), "--interface", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=child_env(),
    )
    master, terminal = pty.openpty()
    try:
        with open(tmp_path / "file", "rb") as stdin:
            client = _connect_when_listening(port, stdin=stdin, stderr=terminal)
        assert client.returncode == 0
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        assert b"MB/s" in shown and b"100.0%" in shown
        assert sink.wait(30) == 0
    finally:
        os.close(master)
        if sink.poll() is None:
            sink.kill()


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
@pytest_twisted.ensureDeferred
async def test_a_signal_closes_the_session_before_exiting(mnet, signum) -> None:
    """OpenSSH ends its ProxyCommand with SIGHUP: the peer sees a clean close at once
    (not a session left to the dead-peer rule), and mnet-cat exits 0."""
    from twisted.internet import error
    from twisted.internet.protocol import Factory, Protocol

    ends: list[object] = []

    class Server(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(b"ready\n")

        def connectionLost(self, reason: object = None) -> None:
            ends.append(reason)

    port = await mnet.listen(Factory.forProtocol(Server))
    client = subprocess.Popen(
        [*CAT, "127.0.0.1", str(port.getHost().port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
    )
    try:
        await mnet.waitFor(lambda: port.getStats().sessions_open == 1, 20)
        client.send_signal(signum)
        await mnet.waitFor(lambda: bool(ends), 3)
        assert ends[0].check(error.ConnectionDone), ends[0]  # type: ignore[attr-defined]
        await mnet.waitFor(lambda: client.poll() is not None, 5)
        assert client.returncode == 0
        assert client.stdout is not None and client.stdout.read() == b"ready\n"
    finally:
        if client.poll() is None:
            client.kill()
        client.wait()
