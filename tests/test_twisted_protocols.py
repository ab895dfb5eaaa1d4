"""Unchanged Twisted protocols (LineReceiver, AMP, HTTP, port forwarding) over MNET."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from conftest import within
from twisted.internet import defer, error
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.protocols import amp, basic, portforward
from twisted.protocols.wire import Echo

pytestmark = pytest.mark.timeout(90)


class LineCollector(basic.LineReceiver):
    """Answers every line with 'echo: LINE' (server) and collects the lines it gets."""

    delimiter = b"\n"
    answer = False

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lost = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if self.answer:
            self.sendLine(b"echo: " + line)

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)


class LineServer(LineCollector):
    answer = True

    def connectionMade(self) -> None:
        self.sendLine(b"hello from the server")


@pytest_twisted.ensureDeferred
async def test_line_receiver_both_ways(mnet, loggedErrors) -> None:
    """LineReceiver exchanges lines in both directions over MNET and closes cleanly."""
    port = await mnet.listen(Factory.forProtocol(LineServer))
    client = await mnet.connect(port, Factory.forProtocol(LineCollector))
    lines = [b"line %d " % i + b"x" * i for i in range(200)]
    for line in lines:
        client.sendLine(line)
    await mnet.waitFor(lambda: len(client.lines) == 1 + len(lines))
    assert client.lines == [b"hello from the server"] + [b"echo: " + line for line in lines]
    client.transport.loseConnection()
    await within(client.lost)
    assert client.reason.check(error.ConnectionDone)
    assert not loggedErrors


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    arguments = [(b"numerator", amp.Integer()), (b"denominator", amp.Integer())]
    response = [(b"result", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION"}


class Calculator(amp.AMP):
    @Sum.responder
    def sum(self, a: int, b: int) -> dict[str, int]:
        return {"total": a + b}

    @Divide.responder
    def divide(self, numerator: int, denominator: int) -> dict[str, float]:
        return {"result": numerator / denominator}


@pytest_twisted.ensureDeferred
async def test_amp(mnet, loggedErrors) -> None:
    """An AMP command gets its response (and a declared error) over MNET."""
    port = await mnet.listen(Factory.forProtocol(Calculator))
    client = await mnet.connect(port, Factory.forProtocol(amp.AMP))
    answer = await within(client.callRemote(Sum, a=13, b=81))
    assert answer == {"total": 94}
    results = await within(
        defer.gatherResults([client.callRemote(Sum, a=i, b=i) for i in range(100)])
    )
    assert [r["total"] for r in results] == [2 * i for i in range(100)]
    with pytest.raises(ZeroDivisionError):
        await within(client.callRemote(Divide, numerator=1, denominator=0))
    client.transport.loseConnection()
    assert not loggedErrors


# Agent's TransportProxyProducer hides abortConnection from readBody, over TCP too.
@pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_web_agent_one_mebibyte(mnet) -> None:
    """A twisted.web Site serves 1 MiB to an Agent whose endpoint is an MNETClientEndpoint."""
    from twisted.web.client import Agent, readBody
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from mnet_twisted import MNETClientEndpoint

    body = os.urandom(1024 * 1024)

    class Blob(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", b"application/octet-stream")
            return body

    port = await mnet.listen(Site(Blob()))

    class EndpointFactory:
        def endpointForURI(self, uri):
            return MNETClientEndpoint(
                mnet.reactor, uri.host.decode("ascii"), uri.port, timeout=5, config=mnet.config
            )

    agent = Agent.usingEndpointFactory(mnet.reactor, EndpointFactory())
    url = b"http://127.0.0.1:%d/blob" % port.getHost().port
    response = await within(agent.request(b"GET", url), 30)
    assert response.code == 200
    received = await within(readBody(response), 30)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(body).hexdigest()


class StreamCheck(Protocol):
    """Sends a payload and collects everything that comes back."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.lost = defer.Deferred()

    def connectionMade(self) -> None:
        # Written in pieces, as an application would.
        for i in range(0, len(self.payload), 10_000):
            self.transport.write(self.payload[i : i + 10_000])

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_portforward_to_tcp_echo(mnet, loggedErrors) -> None:
    """portforward moves 512 KiB from an MNET client via ProxyFactory to TCP echo and back."""
    tcp = mnet.reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    try:
        proxy = await mnet.listen(portforward.ProxyFactory("127.0.0.1", tcp.getHost().port))
        payload = os.urandom(512 * 1024)
        client = StreamCheck(payload)

        class OneShot(ClientFactory):
            def buildProtocol(self, addr):
                return client

        await mnet.connect(proxy, OneShot())
        await within(client.lost, 60)
        assert len(client.received) == len(payload)
        assert hashlib.sha256(client.received).digest() == hashlib.sha256(payload).digest()
        assert client.reason.check(error.ConnectionDone)
    finally:
        await within(tcp.stopListening())
    assert not loggedErrors
