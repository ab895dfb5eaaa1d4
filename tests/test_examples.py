"""Every script in examples/ runs as its docstring says, in real processes."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import child_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )


def test_echo_example() -> None:
    done = _run(str(EXAMPLES / "echo.py"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["echoed: hello", "echoed: over", "echoed: MNET"]


def test_web_example() -> None:
    done = _run(str(EXAMPLES / "web_over_mnet.py"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200 Hello from twisted.web over MNET\n"


@pytest.mark.skipif(
    not Path("/usr/bin/ssh").exists(), reason="the OpenSSH client /usr/bin/ssh is not installed"
)
def test_ssh_example() -> None:
    """The real ssh, through mnet-cat and twistd mnet-forward, runs commands on a Conch server."""
    done = _run(str(EXAMPLES / "ssh_over_mnet.py"))
    assert done.returncode == 0, done.stderr
    greeting, transfer = done.stdout.splitlines()
    assert greeting == "hello over ssh over MNET"
    assert re.fullmatch(
        r"4194304 bytes through ssh over MNET: sha256 [0-9a-f]{16}\.\.\. matches", transfer
    )


def test_chat_example() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    chat = str(EXAMPLES / "chat.py")
    server = subprocess.Popen(
        [sys.executable, chat, "server", port], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    clients: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        assert "chat room" in server.stdout.readline()
        for name in ("alice", "bob"):
            clients.append(
                subprocess.Popen(
                    [sys.executable, chat, "client", "127.0.0.1", port, name],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=child_env(),
                )
            )
        alice, bob = clients
        joined = {server.stdout.readline().strip() for _ in clients}
        assert joined == {"alice joined", "bob joined"}
        alice_out, _ = alice.communicate("hi bob\n", timeout=30)
        time.sleep(0.3)
        bob_out, _ = bob.communicate("", timeout=30)
        assert bob_out == "alice: hi bob\n"
        assert alice_out == ""
    finally:
        for process in [*clients, server]:
            if process.poll() is None:
                process.kill()
                process.wait()
