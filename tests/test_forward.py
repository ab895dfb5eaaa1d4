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
from typing import Any

import pytest
import pytest_twisted
from conftest import TWISTD, child_env, within
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted.forward import ForwardingFactory


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


# -- backpressure, in one process so that the forwarder can be looked into --


class _Firehose(Protocol):
    """Writes ``data`` as fast as its transport takes it: a streaming producer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = 0
        self.paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        # A full transport buffer pauses this producer from inside write().
        while not self.paused and self.sent < len(self.data):
            chunk = self.data[self.sent : self.sent + 65536]
            self.sent += len(chunk)
            self.transport.write(chunk)

    def stopProducing(self) -> None:
        self.paused = True


class _PausedSink(Protocol):
    """Reads nothing until the test resumes its transport; keeps what it reads."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = bytearray()
        self.made: defer.Deferred[None] = defer.Deferred()
        self.complete: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.complete.called:
            self.complete.callback(None)


class _Recording(ForwardingFactory):
    """The forwarder itself, keeping each accepted side for the test to inspect."""

    def __init__(self, target: Any, description: str) -> None:
        super().__init__(target, description)
        self.accepted: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.accepted.append(protocol)
        return protocol


def _sinkFactory(sinks: list[_PausedSink], expected: int) -> Factory:
    def build() -> _PausedSink:
        sink = _PausedSink(expected)
        sinks.append(sink)
        return sink

    return Factory.forProtocol(build)


async def _settled(mnet: Any, observe: Any, quiet: float = 0.5) -> None:
    """Wait until ``observe()`` has not changed for ``quiet`` seconds."""
    last, still = observe(), 0.0
    deadline = mnet.reactor.seconds() + 30
    while still < quiet:
        assert mnet.reactor.seconds() < deadline, "the transfer never came to rest"
        await mnet.sleep(0.05)
        now = observe()
        still = still + 0.05 if now == last else 0.0
        last = now


CONFIG_CHANGES = {
    "receive_buffer_limit": 256 * 1024,
    "send_buffer_high_water": 512 * 1024,
    "send_buffer_low_water": 128 * 1024,
}
TOTAL = 16 * 1024 * 1024
#: Twisted's TCP transports read at most this much at a time.
TCP_READ = 65536


async def _forwarded(mnet: Any, forwarder: Any, sinks: list[_PausedSink]) -> tuple[Any, Any]:
    """Once the far end has its connection: the forwarder's two sides (its transport)."""
    await mnet.waitFor(lambda: sinks)
    await within(sinks[0].made)
    inbound = forwarder.accepted[0]
    await mnet.waitFor(lambda: inbound.other is not None)
    return inbound, inbound.other.transport


async def _resumeAndCheck(sink: _PausedSink, data: bytes) -> None:
    """Let the far reader go on: everything arrives, intact."""
    sink.transport.resumeProducing()
    await within(sink.complete, 60)
    assert hashlib.sha256(sink.received).digest() == hashlib.sha256(data).digest()


@pytest_twisted.ensureDeferred
async def test_a_paused_mnet_reader_stops_the_forwarder_reading_tcp(mnet: Any) -> None:
    """TCP -> MNET: the forwarder holds its high-water mark plus one read at most; all arrives."""
    config = mnet.withConfig(**CONFIG_CHANGES)
    data = os.urandom(TOTAL)
    sinks: list[_PausedSink] = []
    far = await mnet.listen(_sinkFactory(sinks, TOTAL), config=config)
    forwarder = _Recording(mnet.client(far, config=config), "mnet")
    front = await TCP4ServerEndpoint(mnet.reactor, 0, interface="127.0.0.1").listen(forwarder)
    client = None
    try:
        client = await within(
            TCP4ClientEndpoint(mnet.reactor, "127.0.0.1", front.getHost().port).connect(
                Factory.forProtocol(lambda: _Firehose(data))
            )
        )
        inbound, outbound = await _forwarded(mnet, forwarder, sinks)
        await _settled(mnet, lambda: (client.sent, outbound.getStats().send_buffer))

        assert outbound.producerPaused, "the MNET side never paused the TCP side"
        assert inbound.transport not in mnet.reactor.getReaders(), "the forwarder still reads TCP"
        # Each read is written on before the high-water check can pause the reading.
        assert outbound.getStats().send_buffer <= config.send_buffer_high_water + TCP_READ
        assert not sinks[0].received

        await _resumeAndCheck(sinks[0], data)
    finally:
        if client is not None:
            client.transport.loseConnection()
        await front.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_paused_tcp_reader_stops_the_forwarder_reading_mnet(mnet: Any) -> None:
    """MNET -> TCP: the forwarder stops reading MNET, so the MNET client is held back."""
    config = mnet.withConfig(**CONFIG_CHANGES)
    data = os.urandom(TOTAL)
    sinks: list[_PausedSink] = []
    far = await TCP4ServerEndpoint(mnet.reactor, 0, interface="127.0.0.1").listen(
        _sinkFactory(sinks, TOTAL)
    )
    target = TCP4ClientEndpoint(mnet.reactor, "127.0.0.1", far.getHost().port)
    forwarder = _Recording(target, "tcp")
    front = await mnet.listen(forwarder, config=config)
    client = None
    try:
        client = await mnet.connect(
            front, Factory.forProtocol(lambda: _Firehose(data)), config=config
        )
        inbound, outbound = await _forwarded(mnet, forwarder, sinks)
        await _settled(mnet, lambda: (client.sent, inbound.transport.getStats().bytes_received))

        assert outbound.producerPaused, "the TCP side never paused the MNET side"
        assert client.paused and client.sent < TOTAL, "the MNET client was never held back"
        # What the forwarder took from MNET sits in its TCP buffers and the
        # kernel's: far less than what the client had to send.
        assert inbound.transport.getStats().bytes_received < TOTAL // 2
        assert not sinks[0].received

        await _resumeAndCheck(sinks[0], data)
    finally:
        if client is not None:
            client.transport.loseConnection()
        await far.stopListening()
