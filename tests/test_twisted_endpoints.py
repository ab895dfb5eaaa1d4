"""MNET endpoints over real loopback sockets: connecting, failing to, closing."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import pytest
import pytest_twisted
from conftest import within
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    ILoggingContext,
    IPushProducer,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols.wire import Echo
from twisted.python import log

from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint
from mnet_twisted.protocol import MNETDatagramProtocol
from mnet_twisted.wire import MAX_DATAGRAM

pytestmark = pytest.mark.timeout(60)


class Recorder(Protocol):
    """Remembers what it received and how it ended."""

    def __init__(self) -> None:
        self.received = b""
        self.made = defer.Deferred()
        self.lost = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)


class RecorderFactory(Factory):
    protocol = None  # Recorder, unless a test picks a subclass

    def __init__(self) -> None:
        self.protocols: list[Recorder] = []
        self.built = defer.Deferred()

    def buildProtocol(self, addr):
        protocol = (self.protocol or Recorder)()
        protocol.factory = self
        self.protocols.append(protocol)
        if not self.built.called:
            self.built.callback(protocol)
        return protocol


async def lostReason(protocol: Recorder):
    """Wait (bounded) for connectionLost and return its reason."""
    await within(protocol.lost)
    return protocol.reason


def _ipv6Available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_interfaces() -> None:
    """The endpoints provide the Twisted stream endpoint interfaces."""
    from twisted.internet import reactor

    assert IStreamServerEndpoint.providedBy(MNETServerEndpoint(reactor, 0))
    assert IStreamClientEndpoint.providedBy(MNETClientEndpoint(reactor, "127.0.0.1", 1))


@pytest_twisted.ensureDeferred
async def test_connect_and_transport_properties(mnet) -> None:
    """A connected transport provides ITransport & co and reports UDP addresses of both ends."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)
    assert IListeningPort.providedBy(port)
    host = port.getHost()
    assert isinstance(host, IPv4Address) and host.type == "UDP" and host.host == "127.0.0.1"
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    server = await within(server_factory.built)
    for transport in (client.transport, server.transport):
        for interface in (ITransport, IConsumer, IPushProducer, ILoggingContext):
            assert interface.providedBy(transport)
        assert transport.connected and not transport.disconnecting
    assert client.transport.getPeer() == IPv4Address("UDP", "127.0.0.1", host.port)
    assert server.transport.getHost() == host
    assert server.transport.getPeer() == IPv4Address(
        "UDP", "127.0.0.1", client.transport.getHost().port
    )
    assert client.transport.logPrefix() == "Recorder,client"
    prefix = server.transport.logPrefix().split(",")
    assert prefix[0] == "Recorder" and prefix[1].isdigit() and prefix[2] == "127.0.0.1"
    assert port.protocol.transport.maxPacketSize == MAX_DATAGRAM
    with pytest.raises(TypeError):
        client.transport.write("text is not bytes")
    client.transport.writeSequence([b"hello, ", b"world"])
    await mnet.waitFor(lambda: server.received == b"hello, world")
    client.transport.loseConnection()
    await lostReason(client)


class LoggingRecorder(Recorder):
    def dataReceived(self, data: bytes) -> None:
        log.msg("got data")
        super().dataReceived(data)


@pytest_twisted.ensureDeferred
async def test_application_logs_carry_the_session_prefix(mnet) -> None:
    """As over TCP, legacy log calls from a protocol name its connection as "system"."""
    server_factory = RecorderFactory()
    server_factory.protocol = LoggingRecorder
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    server = await within(server_factory.built)
    seen: list[dict] = []
    log.addObserver(seen.append)
    try:
        client.transport.write(b"one")
        await mnet.waitFor(lambda: server.received == b"one")
        client.transport.write(b"two")
        await mnet.waitFor(lambda: server.received == b"onetwo")
    finally:
        log.removeObserver(seen.append)
    systems = [event["system"] for event in seen if event.get("message") == ("got data",)]
    assert systems == [server.transport.logPrefix()] * 2
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_refused(mnet) -> None:
    """A listener not accepting answers ABORT: connect() fails with ConnectionRefusedError."""
    from twisted.internet import reactor

    protocol = MNETDatagramProtocol(reactor, factory=Factory.forProtocol(Echo), accepting=False)
    udp = reactor.listenUDP(0, protocol, interface="127.0.0.1", maxPacketSize=MAX_DATAGRAM)
    try:
        endpoint = MNETClientEndpoint(reactor, "127.0.0.1", udp.getHost().port, timeout=5)
        with pytest.raises(error.ConnectionRefusedError):
            await within(endpoint.connect(Factory.forProtocol(Recorder)))
    finally:
        await within(udp.stopListening())


@pytest_twisted.ensureDeferred
async def test_closed_port_is_refused_at_once() -> None:
    """Connecting to a UDP port nobody listens on fails fast, like TCP, not after the timeout."""
    from twisted.internet import reactor

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    endpoint = MNETClientEndpoint(reactor, "127.0.0.1", closed_port, timeout=30)
    started = reactor.seconds()
    with pytest.raises(error.ConnectionRefusedError):
        await within(endpoint.connect(Factory.forProtocol(Recorder)), 10)
    # The kernel's ICMP report arrives within a retry or two, far below 30 s.
    assert reactor.seconds() - started < 5


@pytest_twisted.ensureDeferred
async def test_timeout() -> None:
    """A peer that never answers fails connect() with TimeoutError after the given timeout."""
    from twisted.internet import reactor

    silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    try:
        endpoint = MNETClientEndpoint(reactor, "127.0.0.1", silent.getHost().port, timeout=0.5)
        started = reactor.seconds()
        with pytest.raises(error.TimeoutError):
            await within(endpoint.connect(Factory.forProtocol(Recorder)))
        assert 0.4 <= reactor.seconds() - started < 5
    finally:
        await within(silent.stopListening())


@pytest_twisted.ensureDeferred
async def test_cancel(mnet) -> None:
    """Cancelling a pending connect() fails it with ConnectingCancelledError."""
    from twisted.internet import reactor

    silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    try:
        endpoint = MNETClientEndpoint(reactor, "127.0.0.1", silent.getHost().port, timeout=5)
        d = endpoint.connect(Factory.forProtocol(Recorder))
        await mnet.sleep(0.05)
        d.cancel()
        with pytest.raises(error.ConnectingCancelledError):
            await within(d)
    finally:
        await within(silent.stopListening())


@pytest_twisted.ensureDeferred
async def test_cancel_while_resolving() -> None:
    """Cancelling during the host-name lookup fails with ConnectingCancelledError too."""
    from twisted.internet import reactor

    endpoint = MNETClientEndpoint(reactor, "localhost", 9, timeout=5)
    d = endpoint.connect(Factory.forProtocol(Recorder))
    d.cancel()
    with pytest.raises(error.ConnectingCancelledError):
        await within(d)


@pytest_twisted.ensureDeferred
async def test_host_name_resolution(mnet) -> None:
    """A client endpoint given 'localhost' resolves it and connects to the IPv4 listener."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Recorder), host="localhost")
    assert client.transport.getPeer().host == "127.0.0.1"
    client.transport.write(b"resolved")
    server = await within(server_factory.built)
    await mnet.waitFor(lambda: server.received == b"resolved")
    client.transport.loseConnection()
    await lostReason(client)


@pytest_twisted.ensureDeferred
async def test_dns_failure() -> None:
    """A host name that does not resolve fails connect() with DNSLookupError."""
    from twisted.internet import reactor

    endpoint = MNETClientEndpoint(reactor, "no-such-host.invalid", 9000, timeout=1)
    with pytest.raises(error.DNSLookupError):
        await within(endpoint.connect(Factory.forProtocol(Recorder)), 30)


@pytest.mark.skipif(not _ipv6Available(), reason="::1 is not available")
@pytest_twisted.ensureDeferred
async def test_ipv6(mnet) -> None:
    """A listener on ::1 gets an AF_INET6 port, and a client reaches it over IPv6."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory, interface="::1")
    assert port.protocol.transport.addressFamily == socket.AF_INET6
    host = port.getHost()
    assert isinstance(host, IPv6Address) and host.type == "UDP"
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    assert client.transport.getPeer() == IPv6Address("UDP", "::1", host.port)
    client.transport.write(b"over six")
    server = await within(server_factory.built)
    assert isinstance(server.transport.getPeer(), IPv6Address)
    await mnet.waitFor(lambda: server.received == b"over six")
    server.transport.write(b"and back")
    await mnet.waitFor(lambda: client.received == b"and back")
    client.transport.loseConnection()
    await lostReason(client)


@pytest_twisted.ensureDeferred
async def test_bind_address(mnet) -> None:
    """bindAddress binds the client's UDP port where asked."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Recorder), bindAddress=("127.0.0.1", 0))
    assert client.transport.getHost().host == "127.0.0.1"
    server = await within(server_factory.built)
    assert server.transport.getPeer().port == client.transport.getHost().port
    client.transport.loseConnection()
    await lostReason(client)


@pytest.mark.parametrize("closer", ["client", "server"])
@pytest_twisted.ensureDeferred
async def test_clean_close(mnet, closer) -> None:
    """loseConnection() on either side delivers pending data, then ConnectionDone on both."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    server = await within(server_factory.built)
    active, passive = (client, server) if closer == "client" else (server, client)
    payload = bytes(range(256)) * 1024
    active.transport.write(payload)
    active.transport.loseConnection()
    assert active.transport.disconnecting
    active.transport.write(b"ignored after loseConnection")
    for reason in (await lostReason(client), await lostReason(server)):
        assert reason.check(error.ConnectionDone), reason
    assert passive.received == payload
    assert not client.transport.connected and not server.transport.connected


@pytest_twisted.ensureDeferred
async def test_abort(mnet) -> None:
    """abortConnection() gives ConnectionAborted locally and ConnectionLost at the peer."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    server = await within(server_factory.built)
    client.transport.abortConnection()
    local = await lostReason(client)
    remote = await lostReason(server)
    assert local.check(error.ConnectionAborted), local
    assert remote.check(error.ConnectionLost) and not remote.check(error.ConnectionDone), remote


@pytest_twisted.ensureDeferred
async def test_stop_listening_closes_sessions_gracefully(mnet) -> None:
    """stopListening() refuses new sessions, delivers what was written, then closes cleanly."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    server = await within(server_factory.built)
    payload = os.urandom(300_000)
    server.transport.write(payload)
    stopped = port.stopListening()
    with pytest.raises(error.ConnectionRefusedError):
        await mnet.connect(port, Factory.forProtocol(Recorder))
    await within(stopped)  # the idle client does not hold it up
    assert client.received == payload
    assert (await lostReason(server)).check(error.ConnectionDone)
    assert (await lostReason(client)).check(error.ConnectionDone)


class _Greeter(Recorder):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(b"x" * 100_000)


@pytest_twisted.ensureDeferred
async def test_stop_listening_ends_in_bounded_time_whatever_the_peer_does(mnet) -> None:
    """A peer that acknowledges nothing yet keeps talking is aborted after the grace period."""
    from mnet_twisted import wire

    server_factory = RecorderFactory()
    server_factory.protocol = _Greeter
    port = await mnet.listen(server_factory, stopGrace=0.5)
    address = (port.getHost().host, port.getHost().port)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setblocking(False)
    tag = b"\x01\x02\x03"
    received: list[bytes] = []

    async def exchange(datagram: bytes, wanted: type) -> Any:
        peer.sendto(datagram, address)
        for _ in range(200):
            await mnet.sleep(0.01)
            try:
                while True:
                    received.append(peer.recv(65536))
            except BlockingIOError:
                pass
            for data in received:
                try:
                    packet = wire.parse(data)
                except wire.MalformedPacket:
                    continue
                if isinstance(packet, wanted):
                    return packet
        raise AssertionError(f"no {wanted.__name__} came")

    try:
        cookie = await exchange(wire.Init(tag).to_bytes(), wire.Cookie)
        await exchange(wire.CookieEcho.of(cookie).to_bytes(), wire.CookieAck)
        await within(server_factory.built)
        stopped = port.stopListening()
        stale_ack = wire.encode_data(tag, 0, 0, b"")  # acknowledges nothing, ever
        started = mnet.reactor.seconds()
        while not stopped.called and mnet.reactor.seconds() - started < 5:
            peer.sendto(stale_ack, address)
            await mnet.sleep(0.1)
        assert stopped.called, "stopListening waited on a peer that never acknowledges"
        await mnet.sleep(0.05)
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(peer.recv(65536))
        assert any(
            isinstance(wire.parse(d), wire.Abort)
            for d in received
            if d[0] == wire.PacketType.ABORT
        )
    finally:
        peer.close()


@pytest_twisted.ensureDeferred
async def test_sessions_beyond_the_listener_cap_are_refused_and_logged(mnet) -> None:
    """maxSessions: the next connect fails as refused, and the listener says why, once."""
    from twisted.logger import globalLogPublisher

    from mnet_twisted.config import ListenerLimits

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        port = await mnet.listen(RecorderFactory(), limits=ListenerLimits(max_sessions=2))
        first = await mnet.connect(port, Factory.forProtocol(Recorder))
        await mnet.connect(port, Factory.forProtocol(Recorder))
        with pytest.raises(error.ConnectionRefusedError):
            await mnet.connect(port, Factory.forProtocol(Recorder))
        await mnet.waitFor(lambda: any("hit its limits" in e.get("log_format", "") for e in seen))
        first.transport.loseConnection()
        await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 1)
        await mnet.connect(port, Factory.forProtocol(Recorder))  # the freed place
        said = [e for e in seen if "hit its limits" in e.get("log_format", "")]
        assert len(said) == 1 and said[0]["count"] == 1
    finally:
        globalLogPublisher.removeObserver(seen.append)


@pytest_twisted.ensureDeferred
async def test_port_closing_loses_sessions() -> None:
    """Closing the UDP port under live sessions delivers ConnectionLost to their protocols."""
    from twisted.internet import reactor

    server_factory = RecorderFactory()
    port = await within(
        MNETServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
    )
    client = await within(
        MNETClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5).connect(
            Factory.forProtocol(Recorder)
        )
    )
    server = await within(server_factory.built)
    await within(port.protocol.transport.stopListening())
    reason = await lostReason(server)
    assert reason.check(error.ConnectionLost)
    # The ABORT sent while the port closed reaches the client.
    assert (await lostReason(client)).check(error.ConnectionLost)


@pytest_twisted.ensureDeferred
async def test_client_port_closes_after_session(mnet) -> None:
    """The client's own UDP port is closed once its session is over."""
    port = await mnet.listen(Factory.forProtocol(Echo))
    client = await mnet.connect(port, Factory.forProtocol(Recorder))
    udp = client.transport._mnet._port
    client.transport.loseConnection()
    await lostReason(client)
    await mnet.waitFor(lambda: not udp.connected)


@pytest_twisted.ensureDeferred
async def test_listener_reads_the_largest_datagrams_whole(mnet) -> None:
    """DATA datagrams of 60 KB from a peer are read whole by a default listener, not truncated."""
    server_factory = RecorderFactory()
    port = await mnet.listen(server_factory)  # default config: sends 1452-byte datagrams
    big = mnet.withConfig(max_datagram_size=14 + 60_000)
    client = await mnet.connect(port, Factory.forProtocol(Recorder), config=big)
    server = await within(server_factory.built)
    payload = os.urandom(1_000_000)
    client.transport.write(payload)
    # A truncated read would fail to parse, so no byte could ever be acknowledged.
    await mnet.waitFor(lambda: len(server.received) == len(payload), 20)
    assert server.received == payload
    assert port.protocol.stats["datagramsReceived"] >= len(payload) // 60_000
    client.transport.loseConnection()
    assert (await lostReason(server)).check(error.ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_early_data_connect_echo_close_over_a_shared_socket(mnet) -> None:
    """With ``early_data`` connect() fires at the COOKIE and the first write
    rides right behind the COOKIE-ECHO; over real sockets every echo comes back."""
    from conftest import Collector

    from mnet_twisted.session import SessionState

    port = await mnet.listen(Factory.forProtocol(Echo))
    early = mnet.withConfig(early_data=True)
    for round_ in range(20):
        client = await mnet.connect(
            port, Factory.forProtocol(Collector), config=early, shareSocket=True
        )
        # Fired at the COOKIE: the COOKIE-ACK has not been taken yet.
        assert client.transport._session.state is SessionState.COOKIE_ECHOED
        message = b"%02d" % round_ * 32
        client.transport.write(message)
        await mnet.waitFor(lambda c=client, m=message: c.received == m)
        client.transport.loseConnection()
    await mnet.waitFor(lambda: port.getStats().sessions_open == 0)
    stats = port.getStats()
    assert stats.sessions_accepted == 20 and stats.aborts_sent == 0


@pytest_twisted.ensureDeferred
async def test_the_cookie_ack_leaves_before_the_accepted_protocol_is_built(mnet) -> None:
    """The connector waits on the COOKIE-ACK: it goes before buildProtocol and connectionMade.

    The peer is a plain socket in this process: loopback delivers at
    ``sendto``, so what it can read while the listener builds the protocol
    is what the listener had sent by then.
    """
    from mnet_twisted import wire

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setblocking(False)
    peer.bind(("127.0.0.1", 0))
    seen_at_build: list[bytes] = []

    class Watching(Factory):
        protocol = Protocol

        def buildProtocol(self, addr: Any) -> Protocol:
            with contextlib.suppress(BlockingIOError):
                seen_at_build.append(peer.recv(65536, socket.MSG_PEEK))
            return super().buildProtocol(addr)

    port = await mnet.listen(Watching(), stopGrace=0.2)
    address = (port.getHost().host, port.getHost().port)
    try:
        peer.sendto(wire.Init(b"\x01\x02\x03").to_bytes(), address)
        await mnet.waitFor(lambda: _readable(peer))
        cookie = wire.parse(peer.recv(65536))
        assert isinstance(cookie, wire.Cookie)
        peer.sendto(wire.CookieEcho.of(cookie).to_bytes(), address)
        await mnet.waitFor(lambda: port.protocol.demux.sessions_accepted == 1)
        await mnet.waitFor(lambda: len(port.protocol._transports) == 1)
        assert len(seen_at_build) == 1, "nothing had arrived when the protocol was built"
        assert isinstance(wire.parse(seen_at_build[0]), wire.CookieAck)
    finally:
        peer.close()
        await port.stopListening()


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True
