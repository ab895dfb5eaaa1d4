"""Endpoint strings, plugin discovery, and the mnet-echo twistd/twist plugin in a subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from conftest import TWISTD, child_env, within
from twisted.internet import defer, error
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint
from mnet_twisted.config import ListenerLimits

pytestmark = pytest.mark.timeout(90)


def _reactor():
    from twisted.internet import reactor

    return reactor


def test_the_dropin_objects_provide_their_plugin_interfaces() -> None:
    """Checked on the objects themselves: a stale dropin.cache cannot hide a lost declaration."""
    from twisted.application.service import IServiceMaker
    from twisted.internet.interfaces import (
        IStreamClientEndpointStringParserWithReactor,
        IStreamServerEndpointStringParser,
    )
    from twisted.plugin import IPlugin

    from twisted.plugins import mnet_twisted_plugin as dropin

    expected = {
        "mnetServerParser": IStreamServerEndpointStringParser,
        "mnetClientParser": IStreamClientEndpointStringParserWithReactor,
        "mnetEcho": IServiceMaker,
        "mnetForward": IServiceMaker,
    }
    for name, interface in expected.items():
        plugin = getattr(dropin, name)
        assert IPlugin.providedBy(plugin) and interface.providedBy(plugin), name


def test_server_strings() -> None:
    """'mnet:' server strings parse to MNETServerEndpoint with port, interface, secret file."""
    reactor = _reactor()
    endpoint = serverFromString(reactor, "mnet:9000:interface=127.0.0.1")
    assert isinstance(endpoint, MNETServerEndpoint)
    assert (endpoint._port, endpoint._interface) == (9000, "127.0.0.1")
    endpoint = serverFromString(reactor, "mnet:port=9001:secretFile=/tmp/s")
    assert (endpoint._port, endpoint._interface, endpoint._cookieSecretFile) == (
        9001,
        "",
        "/tmp/s",
    )
    endpoint = serverFromString(reactor, r"mnet:9002:interface=\:\:1")
    assert endpoint._interface == "::1"
    assert endpoint._stopGrace == 10.0
    assert serverFromString(reactor, "mnet:9003:stopGrace=2.5")._stopGrace == 2.5
    assert endpoint._limits == ListenerLimits()
    limited = serverFromString(
        reactor, "mnet:9004:maxSessions=100:maxSessionsPerSource=4:outOfOrderBudget=none"
    )
    assert limited._limits == ListenerLimits(100, 4, None)
    rates = serverFromString(
        reactor,
        "mnet:9005:cookieRate=5e4:cookieRatePerSource=none:abortRate=none:abortRatePerSource=1000",
    )._limits
    assert (rates.cookie_rate, rates.cookie_rate_per_source) == (50_000.0, None)
    assert (rates.abort_rate, rates.abort_rate_per_source) == (None, 1000.0)
    assert serverFromString(reactor, "mnet:9006:reusePort=yes")._reusePort
    assert not serverFromString(reactor, "mnet:9006")._reusePort
    assert serverFromString(reactor, "mnet:9006:logSessions=yes")._logSessions
    assert not serverFromString(reactor, "mnet:9006")._logSessions
    with pytest.raises(TypeError):
        serverFromString(reactor, "mnet:9006:reusePort=maybe")
    with pytest.raises(TypeError):
        serverFromString(reactor, "mnet:9000:bogus=1")


def test_client_strings() -> None:
    """'mnet:' client strings parse to MNETClientEndpoint (keyword and positional forms)."""
    reactor = _reactor()
    endpoint = clientFromString(reactor, "mnet:host=127.0.0.1:port=9000:timeout=5")
    assert isinstance(endpoint, MNETClientEndpoint)
    assert (endpoint._host, endpoint._port, endpoint._timeout) == ("127.0.0.1", 9000, 5.0)
    assert endpoint._config.connect_timeout == 5.0
    endpoint = clientFromString(reactor, "mnet:example.org:9001:bindAddress=10.0.0.1")
    assert (endpoint._host, endpoint._port) == ("example.org", 9001)
    assert endpoint._bindAddress == ("10.0.0.1", 0)
    endpoint = clientFromString(reactor, r"mnet:host=\:\:1:port=9002")
    assert endpoint._host == "::1" and not endpoint._shareSocket
    endpoint = clientFromString(reactor, "mnet:127.0.0.1:9003:shareSocket=yes")
    assert endpoint._shareSocket and not endpoint._logSessions
    assert clientFromString(reactor, "mnet:127.0.0.1:9003:logSessions=yes")._logSessions
    with pytest.raises(TypeError):
        clientFromString(reactor, "mnet:127.0.0.1:9003:shareSocket=maybe")
    with pytest.raises(TypeError):
        clientFromString(reactor, "mnet:host=127.0.0.1")


def test_plugin_discovery() -> None:
    """Twisted's plugin system finds the mnet-echo service maker and the mnet parsers."""
    from twisted.application.service import IServiceMaker
    from twisted.internet.interfaces import (
        IStreamClientEndpointStringParserWithReactor,
        IStreamServerEndpointStringParser,
    )
    from twisted.plugin import getPlugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "mnet-echo" in makers
    assert makers["mnet-echo"].options().opts["listen"] == "mnet:9000"
    prefixes = {p.prefix for p in getPlugins(IStreamServerEndpointStringParser)}
    assert "mnet" in prefixes
    prefixes = {p.prefix for p in getPlugins(IStreamClientEndpointStringParserWithReactor)}
    assert "mnet" in prefixes


def _freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LineClient(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lost = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)


TWIST = [sys.executable, "-m", "twisted"]


async def _connectOnceListening(reactor, port: int, child: subprocess.Popen) -> LineClient:
    """Connect with clientFromString; a port still being bound refuses, so retry, boundedly."""
    from conftest import sleep

    endpoint = clientFromString(reactor, f"mnet:host=127.0.0.1:port={port}:timeout=20")
    for _ in range(300):
        try:
            return await within(endpoint.connect(Factory.forProtocol(LineClient)), 30)
        except error.ConnectionRefusedError:
            assert child.poll() is None, "the server exited"
            await sleep(0.1)
    raise AssertionError("the server never started listening")


def _spawnEcho(
    runner: list[str], port: int, log_path: Path, options: str = ""
) -> subprocess.Popen:
    """Start mnet-echo on 127.0.0.1:port in a subprocess, logging to log_path."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [*runner, "mnet-echo", "--listen", f"mnet:{port}:interface=127.0.0.1{options}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            env=child_env(),
        )


@pytest.mark.parametrize("runner", [TWISTD, TWIST], ids=["twistd", "twist"])
@pytest_twisted.ensureDeferred
async def test_mnet_echo_plugin_subprocess(runner, tmp_path, mnet) -> None:
    """mnet-echo under twistd/twist in a subprocess echoes lines to a clientFromString client."""
    port = _freeUDPPort()
    log_path = tmp_path / "server.log"
    child = _spawnEcho(runner, port, log_path)
    try:
        try:
            client = await _connectOnceListening(mnet.reactor, port, child)
        except (error.TimeoutError, AssertionError):
            pytest.fail(f"no answer from the plugin; its log:\n{log_path.read_text()}")
        lines = [b"hello", b"over", b"MNET " * 100]
        for line in lines:
            client.sendLine(line)
        await mnet.waitFor(lambda: len(client.lines) == len(lines), 20)
        assert client.lines == lines
        client.transport.loseConnection()
        await within(client.lost)
        assert client.reason.check(error.ConnectionDone)
    finally:
        await _stop(child)


async def _stop(child: subprocess.Popen) -> None:
    """Terminate a server subprocess; kill it if it does not exit in time."""
    child.terminate()
    try:
        await within(_waitProcess(child), 15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


async def _waitProcess(child: subprocess.Popen) -> int:
    from conftest import sleep

    while child.poll() is None:
        await sleep(0.05)
    return child.returncode


def test_demo_runs() -> None:
    """python -m mnet_twisted.demo echoes its lines through a twistd child and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "mnet_twisted.demo"],
        capture_output=True,
        env=child_env(),
        timeout=80,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    assert result.stdout.count("received:") == 3


@pytest_twisted.ensureDeferred
async def test_twistd_shuts_down_promptly_with_an_idle_client(tmp_path, mnet) -> None:
    """SIGTERM to mnet-echo with a client attached exits promptly; the client closes cleanly."""
    port = _freeUDPPort()
    log_path = tmp_path / "server.log"
    child = _spawnEcho(TWISTD, port, log_path)
    try:
        client = await _connectOnceListening(mnet.reactor, port, child)
        client.sendLine(b"before shutdown")
        await mnet.waitFor(lambda: client.lines == [b"before shutdown"], 20)
        child.terminate()
        # Far below the dead-peer bound: the server closes the session itself.
        # (twistd re-raises the terminating signal once it has shut down.)
        code = await within(_waitProcess(child), 10)
        assert code in (0, -signal.SIGTERM), log_path.read_text()
        assert "Server Shut Down" in log_path.read_text()
        await within(client.lost, 5)
        assert client.reason.check(error.ConnectionDone)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


@pytest_twisted.ensureDeferred
async def test_twistd_shuts_down_in_bounded_time_with_a_client_that_does_not_read(
    tmp_path, mnet
) -> None:
    """A client that sends and sends but never reads cannot hold twistd up past stopGrace."""
    port = _freeUDPPort()
    log_path = tmp_path / "server.log"
    child = _spawnEcho(TWISTD, port, log_path, ":stopGrace=1")
    try:
        client = await _connectOnceListening(mnet.reactor, port, child)
        client.transport.pauseProducing()  # reads nothing: the echo piles up at the server
        client.transport.write(b"x" * (8 * 1024 * 1024))
        await mnet.sleep(1.0)
        child.terminate()
        code = await within(_waitProcess(child), 8)  # stopGrace, not the dead-peer rule
        assert code in (0, -signal.SIGTERM), log_path.read_text()
        assert "Aborting 1 MNET session(s) still open" in log_path.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


@pytest_twisted.ensureDeferred
async def test_mnet_echo_logs_its_totals_periodically(tmp_path, mnet) -> None:
    """--stats-interval: a line of the port's totals every interval."""
    port = _freeUDPPort()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [
                *TWISTD,
                "mnet-echo",
                "--listen",
                f"mnet:{port}:interface=127.0.0.1",
                "--stats-interval",
                "0.2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=child_env(),
        )
    try:
        client = await _connectOnceListening(mnet.reactor, port, child)
        client.sendLine(b"counted")
        await mnet.waitFor(lambda: client.lines == [b"counted"], 20)
        await mnet.waitFor(
            lambda: "mnet-echo: 1 session(s) open, 1 accepted, 0 refused" in log_path.read_text(),
            10,
        )
        child.terminate()
        await within(_waitProcess(child), 10)  # the client answers the server's SHUTDOWN
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


@pytest_twisted.ensureDeferred
async def test_twistd_web_listens_on_mnet(tmp_path, mnet) -> None:
    """An unrelated twistd plugin (web) serves over an mnet: string; Agent fetches the file."""
    from twisted.web.client import Agent, readBody

    (tmp_path / "hello.txt").write_bytes(b"served over MNET\n")
    port = _freeUDPPort()
    with open(tmp_path / "web.log", "wb") as log:
        child = subprocess.Popen(
            [*TWISTD, "web", "--listen", f"mnet:{port}:interface=127.0.0.1", "--path", "."],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=child_env(),
        )

    class OverMNET:
        def endpointForURI(self, uri):
            return clientFromString(mnet.reactor, f"mnet:host=127.0.0.1:port={uri.port}")

    try:
        agent = Agent.usingEndpointFactory(mnet.reactor, OverMNET())
        url = f"http://127.0.0.1:{port}/hello.txt".encode()
        for _ in range(300):  # until the child listens (refused before)
            try:
                response = await within(agent.request(b"GET", url), 20)
                break
            except error.ConnectionRefusedError:
                assert child.poll() is None, (tmp_path / "web.log").read_text()
                await mnet.sleep(0.1)
        assert response.code == 200
        assert await within(readBody(response)) == b"served over MNET\n"
    finally:
        await _stop(child)
