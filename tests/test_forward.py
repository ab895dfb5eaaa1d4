"""
``twistd mnet-forward``: an unmodified curl fetches a file from twisted.web
through a pair of forwarders, TCP -> MNET -> TCP, all in real processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import TWISTD, child_env


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_log(path: Path, text: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while text not in path.read_text(errors="replace"):
        assert child.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path.name}"
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_fetches_a_file_through_tcp_mnet_tcp_forwarders(tmp_path: Path) -> None:
    content = os.urandom(16 * 1024 * 1024 + 12345)
    (tmp_path / "big.bin").write_bytes(content)
    web, middle, front = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM), 0
    front = _free_port(socket.SOCK_STREAM)
    commands = {
        "web": ["web", "--listen", f"tcp:{web}:interface=127.0.0.1", "--path", str(tmp_path)],
        "back": [
            *("mnet-forward", "--listen", f"mnet:{middle}:interface=127.0.0.1"),
            *("--connect", f"tcp:host=127.0.0.1:port={web}"),
            *("--stats-interval", "0.1"),
        ],
        "front": [
            *("mnet-forward", "--listen", f"tcp:{front}:interface=127.0.0.1"),
            *("--connect", f"mnet:host=127.0.0.1:port={middle}"),
        ],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    try:
        for name, args in commands.items():
            with open(logs[name], "wb") as log:
                children[name] = subprocess.Popen(
                    [*TWISTD, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    env=child_env(),
                )
            _wait_for_log(logs[name], "Starting factory", children[name])
        out = tmp_path / "fetched.bin"
        url = f"http://127.0.0.1:{front}/big.bin"
        fetched = subprocess.run(
            ["curl", "-sS", "--fail", "--max-time", "120", "-o", str(out), url],
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert fetched.returncode == 0, fetched.stderr + logs["front"].read_text()
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(content).digest()
        assert "Forwarding" in logs["front"].read_text()
        assert "Forwarding" in logs["back"].read_text()
        # The periodic totals (the session may have ended before the first of them).
        _wait_for_log(logs["back"], "session(s) open, 1 accepted, 0 refused", children["back"])
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


def test_a_tcp_half_close_is_passed_on(tmp_path: Path) -> None:
    """TCP to TCP through mnet-forward: the client FIN reaches the server; the reply comes back."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(30)

    def answer_after_eof() -> None:
        connection, _ = server.accept()
        with connection:
            received = b""
            while chunk := connection.recv(65536):  # until the client's FIN
                received += chunk
            connection.sendall(received.upper())

    thread = threading.Thread(target=answer_after_eof, daemon=True)
    thread.start()
    front = _free_port(socket.SOCK_STREAM)
    log_path = tmp_path / "forward.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [
                *TWISTD,
                *("mnet-forward", "--listen", f"tcp:{front}:interface=127.0.0.1"),
                *("--connect", f"tcp:host=127.0.0.1:port={server.getsockname()[1]}"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=child_env(),
        )
    try:
        _wait_for_log(log_path, "Starting factory", child)
        with socket.create_connection(("127.0.0.1", front), timeout=30) as client:
            client.sendall(b"half-closed")
            client.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
        assert reply == b"HALF-CLOSED", log_path.read_text()
    finally:
        child.terminate()
        child.wait(20)
        server.close()
