"""
Serving one port from several processes: SO_REUSEPORT listeners and a
cookie secret shared through a file, rotated without failing handshakes.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest
import pytest_twisted
from conftest import Collector, EchoProtocol, child_env
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import globalLogPublisher

from mnet_twisted import endpoints, wire
from mnet_twisted.secretfile import SecretFileWatcher, load_or_create, rotate

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="this platform has no SO_REUSEPORT"
)


async def _receive(mnet, sock: socket.socket) -> wire.Packet:
    """The next datagram on a non-blocking raw socket, parsed."""
    got: list[bytes] = []

    def ready() -> bool:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return False
        return True

    await mnet.waitFor(ready, 5)
    return wire.parse(got[0])


def test_rotation_replaces_the_file_atomically(tmp_path) -> None:
    """A rotation leaves a new 32-byte secret, mode 0600, and the watcher sees it once."""
    path = tmp_path / "secret"
    first = load_or_create(path)
    assert load_or_create(path) == first  # a second process reads, not recreates
    watcher = SecretFileWatcher(path, first)
    assert watcher.poll() is None
    result = subprocess.run(
        [sys.executable, "-m", "mnet_twisted.secretfile", "rotate", str(path)],
        env=child_env(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    second = path.read_bytes()
    assert len(second) == 32 and second != first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert watcher.poll() == second
    assert watcher.poll() is None
    assert not [p for p in tmp_path.iterdir() if p.name != "secret"]  # no temporary left


def test_rotating_a_missing_directory_fails_clearly(tmp_path) -> None:
    """The command says what is wrong and exits 1, without a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "mnet_twisted.secretfile", "rotate", str(tmp_path / "no/secret")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "No such file or directory" in result.stderr and "Traceback" not in result.stderr


@pytest_twisted.ensureDeferred
async def test_reuse_port_listeners_share_the_sessions(mnet, tmp_path) -> None:
    """Two reusePort listeners on one port both take sessions; every session echoes."""
    secret = str(tmp_path / "secret")
    echo = Factory.forProtocol(EchoProtocol)
    first = await mnet.listen(echo, reusePort=True, cookieSecretFile=secret)
    number = first.getHost().port
    second = await mnet.within(
        endpoints.MNETServerEndpoint(
            mnet.reactor,
            number,
            interface="127.0.0.1",
            config=mnet.config,
            cookieSecretFile=secret,
            reusePort=True,
        ).listen(echo)
    )
    mnet.ports.append(second)
    with pytest.raises(CannotListenError):
        # A listener that did not ask to share the port cannot join the group.
        await endpoints.MNETServerEndpoint(mnet.reactor, number, interface="127.0.0.1").listen(
            echo
        )
    clients = [await mnet.connect(first, Factory.forProtocol(Collector)) for _ in range(24)]
    for index, client in enumerate(clients):
        client.transport.write(b"hello %d" % index)
    await mnet.waitFor(
        lambda: all(c.received == b"hello %d" % i for i, c in enumerate(clients)), 10
    )
    accepted = [port.getStats().sessions_accepted for port in (first, second)]
    # 24 source ports all hashed to one socket would happen once in 2**23 runs.
    assert sum(accepted) == 24 and min(accepted) > 0, accepted
    for client in clients:
        client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_rotation_keeps_a_handshake_in_flight(mnet, tmp_path, monkeypatch) -> None:
    """A COOKIE minted before a rotation is still accepted after the listener took it up."""
    monkeypatch.setattr(endpoints, "SECRET_POLL_INTERVAL", 0.02)
    path = tmp_path / "secret"
    port = await mnet.listen(Factory.forProtocol(EchoProtocol), cookieSecretFile=str(path))
    early = await mnet.connect(port, Factory.forProtocol(Collector))
    address = ("127.0.0.1", port.getHost().port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.sendto(wire.Init(b"rot").to_bytes(), address)
        cookie = await _receive(mnet, sock)
        assert isinstance(cookie, wire.Cookie)
        mine = sock.getsockname()
        old_tag = port.protocol.demux.cookies.listener_tag(mine, b"rot")
        rotate(path)
        await mnet.waitFor(
            lambda: port.protocol.demux.cookies.listener_tag(mine, b"rot") != old_tag, 5
        )
        sock.sendto(wire.CookieEcho.of(cookie).to_bytes(), address)
        answer = await _receive(mnet, sock)
        assert answer == wire.CookieAck(cookie.listener_tag)
        sock.sendto(wire.Abort(b"rot").to_bytes(), address)
    # Sessions are not tied to the secret; new ones use the new one.
    early.transport.write(b"still here")
    late = await mnet.connect(port, Factory.forProtocol(Collector))
    late.transport.write(b"new")
    await mnet.waitFor(lambda: early.received == b"still here" and late.received == b"new")
    early.transport.loseConnection()
    late.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_an_unusable_secret_file_keeps_the_current_secret(
    mnet, tmp_path, monkeypatch
) -> None:
    """A secret file cut short is reported; the listener keeps its secret and keeps serving."""
    monkeypatch.setattr(endpoints, "SECRET_POLL_INTERVAL", 0.02)
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        path = tmp_path / "secret"
        port = await mnet.listen(Factory.forProtocol(EchoProtocol), cookieSecretFile=str(path))
        probe = (("127.0.0.1", 1), b"abc")
        before = port.protocol.demux.cookies.listener_tag(*probe)
        path.write_bytes(b"short")
        await mnet.waitFor(lambda: any("unusable" in e.get("log_format", "") for e in seen))
        assert port.protocol.demux.cookies.listener_tag(*probe) == before
        client = await mnet.connect(port, Factory.forProtocol(Collector))
        client.transport.write(b"ok")
        await mnet.waitFor(lambda: client.received == b"ok")
        client.transport.loseConnection()
    finally:
        globalLogPublisher.removeObserver(seen.append)
