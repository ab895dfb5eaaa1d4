"""Flow control, producers, bad input and misbehaving applications, over real sockets."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct

import pytest
import pytest_twisted
from conftest import sleep, within
from twisted.internet import defer, error
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.protocols.wire import Echo
from zope.interface import implementer

pytestmark = pytest.mark.timeout(120)


class Sink(Protocol):
    """Collects the stream; optionally starts paused."""

    startPaused = False

    def __init__(self) -> None:
        self.received = 0
        self.digest = hashlib.sha256()
        self.made = defer.Deferred()
        self.lost = defer.Deferred()

    def connectionMade(self) -> None:
        if self.startPaused:
            self.transport.pauseProducing()
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.digest.update(data)

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)


class PausedSink(Sink):
    startPaused = True


class OneFactory(Factory):
    """Builds protocols of a class and hands out the first one."""

    def __init__(self, protocolClass) -> None:
        self.protocolClass = protocolClass
        self.built: defer.Deferred = defer.Deferred()
        self.protocols: list = []

    def buildProtocol(self, addr):
        protocol = self.protocolClass()
        protocol.factory = self
        self.protocols.append(protocol)
        if not self.built.called:
            self.built.callback(protocol)
        return protocol


@implementer(IPushProducer)
class StreamProducer:
    """Writes a deterministic stream in chunks, one chunk per reactor turn while not paused."""

    def __init__(self, reactor, transport, total: int, chunk: int = 64 * 1024) -> None:
        self.reactor = reactor
        self.transport = transport
        self.total = total
        self.chunk = chunk
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self.stopped = False
        self.digest = hashlib.sha256()
        self.done = defer.Deferred()
        self._call = None

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused and not self.stopped:
            self._call = self.reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        self._call = None
        while not self.paused and not self.stopped and self.sent < self.total:
            size = min(self.chunk, self.total - self.sent)
            block = (self.sent // self.chunk).to_bytes(8, "big") * (size // 8 + 1)
            block = block[:size]
            self.digest.update(block)
            self.sent += size
            self.transport.write(block)
            # Yield to the reactor now and then, like a real producer.
            break
        if self.sent >= self.total:
            if not self.done.called:
                self.transport.unregisterProducer()
                self.done.callback(None)
            return
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True


@pytest_twisted.ensureDeferred
async def test_backpressure_paused_reader(mnet, loggedErrors) -> None:
    """A paused reader's buffer stays bounded, the writer pauses, and 8 MiB arrive in order."""
    config = mnet.withConfig(
        receive_buffer_limit=512 * 1024,
        send_buffer_high_water=512 * 1024,
        send_buffer_low_water=128 * 1024,
    )
    server_factory = OneFactory(PausedSink)
    port = await mnet.listen(server_factory, config=config)
    client = await mnet.connect(port, Factory.forProtocol(Protocol), config=config)
    receiver = await within(server_factory.built)
    total = 8 * 1024 * 1024
    producer = StreamProducer(mnet.reactor, client.transport, total)
    producer.start()

    await mnet.waitFor(lambda: producer.pauses > 0, 10)
    # Let the transfer run into the paused reader for a while.
    limit = config.receive_buffer_limit + config.max_segment_size
    session = receiver.transport.session
    highest = 0
    for _ in range(50):
        await mnet.sleep(0.02)
        highest = max(highest, session.receive_buffer_size)
        assert receiver.received == 0, "dataReceived was called while paused"
    assert 0 < highest <= limit
    assert producer.sent < total
    assert producer.paused

    receiver.transport.resumeProducing()
    await within(producer.done, 60)
    await mnet.waitFor(lambda: receiver.received == total, 60)
    assert receiver.digest.digest() == producer.digest.digest()
    client.transport.loseConnection()
    await within(receiver.lost)
    assert receiver.reason.check(error.ConnectionDone)
    assert not loggedErrors


@pytest_twisted.ensureDeferred
async def test_echo_server_holds_bounded_memory_for_a_peer_that_never_reads(mnet) -> None:
    """mnet-echo stops reading from a peer that sends and sends but never reads.

    (Echoing everything held all of it, unacknowledged, in the server.)
    """
    from mnet_twisted.tap import Echo as MNETEcho

    config = mnet.withConfig(
        receive_buffer_limit=256 * 1024,
        send_buffer_high_water=512 * 1024,
        send_buffer_low_water=128 * 1024,
    )
    server_factory = OneFactory(MNETEcho)
    port = await mnet.listen(server_factory, config=config)
    client = await mnet.connect(port, Factory.forProtocol(PausedSink), config=config)
    echo = await within(server_factory.built)
    total = 16 * 1024 * 1024
    client.transport.write(os.urandom(total))
    session = echo.transport.session
    await mnet.waitFor(lambda: session.send_buffer_size > config.send_buffer_low_water, 10)
    # What the client acknowledged before its own buffer filled, the
    # high-water mark, the last chunk echoed, and what waits unread here:
    # a bound that does not grow with what the client sends.
    bound = config.send_buffer_high_water + 3 * config.receive_buffer_limit
    for _ in range(40):
        await mnet.sleep(0.025)
        assert session.send_buffer_size + session.receive_buffer_size <= bound
    taken = session.bytes_received
    assert taken <= bound, "the echo server kept reading from a peer that does not read"
    client.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_pull_producer_file_sender(mnet) -> None:
    """A pull producer (FileSender) sends 2 MiB; loseConnection afterwards delivers it all."""
    data = os.urandom(2 * 1024 * 1024)
    server_factory = OneFactory(Sink)
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Protocol))
    receiver = await within(server_factory.built)
    await within(FileSender().beginFileTransfer(io.BytesIO(data), client.transport), 60)
    client.transport.loseConnection()
    await within(receiver.lost, 60)
    assert receiver.received == len(data)
    assert receiver.digest.digest() == hashlib.sha256(data).digest()
    assert receiver.reason.check(error.ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_producer_stopped_on_connection_lost(mnet) -> None:
    """A producer still registered when the connection is lost gets stopProducing()."""
    server_factory = OneFactory(Sink)
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Protocol))
    receiver = await within(server_factory.built)
    producer = StreamProducer(mnet.reactor, client.transport, 1 << 40)
    producer.start()
    with pytest.raises(RuntimeError):
        # As on TCP: the first producer was never unregistered.
        client.transport.registerProducer(StreamProducer(mnet.reactor, None, 0), True)
    await mnet.waitFor(lambda: receiver.received > 0)
    receiver.transport.abortConnection()
    await mnet.waitFor(lambda: producer.stopped)
    assert client.transport.producer is None
    # A producer registered on a closed transport is stopped at once.
    late = StreamProducer(mnet.reactor, None, 0)
    client.transport.registerProducer(late, True)
    assert late.stopped


class Boom(Exception):
    pass


class Fragile(Protocol):
    """Echoes, but raises on b'boom'."""

    def dataReceived(self, data: bytes) -> None:
        if b"boom" in data:
            raise Boom("the application failed")
        self.transport.write(data)

    def connectionLost(self, reason) -> None:
        self.reason = reason


class Collector(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_application_exception_drops_only_that_session(mnet, loggedErrors) -> None:
    """An exception in dataReceived is logged and aborts that session only."""
    server_factory = OneFactory(Fragile)
    port = await mnet.listen(server_factory)
    good = await mnet.connect(port, Factory.forProtocol(Collector))
    bad = await mnet.connect(port, Factory.forProtocol(Collector))
    # Both in the same reactor turn, so they are handled by the same flush.
    bad.transport.write(b"boom")
    good.transport.write(b"still fine")
    await within(bad.lost)
    assert bad.reason.check(error.ConnectionLost)
    await mnet.waitFor(lambda: good.received == b"still fine")
    assert len(loggedErrors.flush(Boom)) == 1
    assert not loggedErrors
    fragile = [p for p in server_factory.protocols if hasattr(p, "reason")]
    assert len(fragile) == 1 and fragile[0].reason.check(Boom)
    good.transport.loseConnection()
    await within(good.lost)


def _garbage(tag: bytes) -> list[bytes]:
    """Random and truncated datagrams, some carrying the live session's tag."""
    rnd = os.urandom
    out = [rnd(n) for n in (0, 1, 3, 4, 9, 13, 14, 31, 32, 100, 1500)]
    out += [bytes([t]) + rnd(n) for t in range(12) for n in (0, 2, 3, 10, 40)]
    header = struct.pack("<B3sIIH", 0, tag, 123456, 654321, 1000)
    out += [header, header + b"x" * 10, header[:10], header + b"x" * 1001]
    out += [struct.pack("<B3sI", 5, tag, 99)[:6], bytes([6]) + tag + b"extra"]
    out += [bytes([1]) + b"MNEX" + bytes([1]) + rnd(3), bytes([1]) + b"MNET" + bytes([2]) + rnd(3)]
    out += [bytes([3]) + rnd(31), bytes([3]) + rnd(30), bytes([2]) + rnd(31)]
    return out


@pytest_twisted.ensureDeferred
async def test_garbage_datagrams_do_not_disturb_a_session(mnet, loggedErrors) -> None:
    """Random and truncated datagrams leave an active session unaffected and log no error."""
    server_factory = OneFactory(Echo)
    port = await mnet.listen(server_factory)
    client = await mnet.connect(port, Factory.forProtocol(Collector))
    client.transport.write(b"before")
    await mnet.waitFor(lambda: client.received == b"before")
    session_tag = client.transport.session.local_tag
    target = ("127.0.0.1", port.getHost().port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        for round_ in range(5):
            for datagram in _garbage(session_tag):
                attacker.sendto(datagram, target)
            client.transport.write(b"-%d" % round_)
            await mnet.sleep(0.02)
    await mnet.waitFor(lambda: client.received == b"before-0-1-2-3-4")
    assert client.transport.connected
    assert port.protocol.stats["datagramsReceived"] > 0
    client.transport.loseConnection()
    await within(client.lost)
    assert client.reason.check(error.ConnectionDone)
    assert not loggedErrors


@pytest_twisted.ensureDeferred
async def test_write_after_close_is_ignored_and_no_reentrancy(mnet) -> None:
    """write() never calls dataReceived re-entrantly, and is silently ignored once disconnected."""
    port = await mnet.listen(Factory.forProtocol(Echo))
    client = await mnet.connect(port, Factory.forProtocol(Collector))
    depth = []
    original = client.dataReceived

    def tracking(data: bytes) -> None:
        depth.append(data)
        original(data)

    client.dataReceived = tracking
    client.transport.write(b"ping")
    assert depth == [], "dataReceived ran inside write()"
    await mnet.waitFor(lambda: client.received == b"ping")
    client.transport.loseConnection()
    await within(client.lost)
    client.transport.write(b"too late")
    client.transport.loseConnection()
    client.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_send_errors_count_as_lost_packets(mnet, loggedErrors) -> None:
    """OSError and MessageLengthError from the socket count as lost packets, not exceptions."""
    import errno

    from twisted.internet.error import MessageLengthError

    port = await mnet.listen(Factory.forProtocol(Echo))
    # Quick retransmissions, so five lost datagrams cost little time.
    quick = mnet.withConfig(initial_rto=0.2, min_rto=0.1, max_rto=0.4)
    client = await mnet.connect(port, Factory.forProtocol(Collector), config=quick)
    mnet_protocol = client.transport._mnet
    # What the protocol sends with: the port's writeDatagram, or write.
    original = mnet_protocol._write
    failures = [
        OSError(errno.ENOBUFS, "no buffer space"),
        OSError(errno.EAGAIN, "try again"),
        OSError(errno.EPERM, "not permitted"),
        OSError(errno.ECONNREFUSED, "refused"),
        MessageLengthError("message too long"),
    ]

    def flakyWrite(datagram, addr=None):
        if failures:
            raise failures.pop(0)
        return original(datagram, addr)

    mnet_protocol._write = flakyWrite
    try:
        client.transport.write(b"despite the losses")
        await mnet.waitFor(lambda: client.received == b"despite the losses", 20)
    finally:
        mnet_protocol._write = original
    assert mnet_protocol.stats["sendErrors"] == 5
    client.transport.loseConnection()
    await within(client.lost)
    assert not loggedErrors


class Refuser(Factory):
    def buildProtocol(self, addr):
        return None


@pytest_twisted.ensureDeferred
async def test_factory_returning_none_drops_the_session(mnet) -> None:
    """A server factory whose buildProtocol returns None makes the session end at once."""
    port = await mnet.listen(Refuser())
    try:
        client = await mnet.connect(port, Factory.forProtocol(Collector))
    except error.ConnectionRefusedError:
        return  # the ABORT overtook the handshake's end: also a refusal
    await within(client.lost)
    assert client.reason.check(error.ConnectionLost)


class FailsOnConnect(Protocol):
    def connectionMade(self) -> None:
        raise Boom("connectionMade failed")


@pytest_twisted.ensureDeferred
async def test_exception_in_connection_made(mnet, loggedErrors) -> None:
    """An exception in a server protocol's connectionMade is logged and ends that session."""
    port = await mnet.listen(Factory.forProtocol(FailsOnConnect))
    client = await mnet.connect(port, Factory.forProtocol(Collector))
    await within(client.lost)
    assert client.reason.check(error.ConnectionLost)
    assert len(loggedErrors.flush(Boom)) == 1
    assert not loggedErrors


def _lossy(protocol, rng, rate: float) -> list[int]:
    """Make a live MNETDatagramProtocol drop each received datagram with probability rate."""
    dropped = [0]
    receive = protocol.datagramReceived

    def datagramReceived(datagram: bytes, addr) -> None:
        if rng.random() < rate:
            dropped[0] += 1
            return
        receive(datagram, addr)

    receive_batch = protocol.datagramsReceived

    def datagramsReceived(datagrams: list[bytes], addr) -> None:
        kept = [datagram for datagram in datagrams if rng.random() >= rate]
        dropped[0] += len(datagrams) - len(kept)
        if kept:
            receive_batch(kept, addr)

    protocol.datagramReceived = datagramReceived
    # GRO reads hand over several datagrams at once.
    protocol.datagramsReceived = datagramsReceived
    return dropped


@pytest.mark.parametrize("seed", [1, 2])
@pytest_twisted.ensureDeferred
async def test_echo_over_real_sockets_with_packet_loss(mnet, loggedErrors, seed) -> None:
    """With 5% of datagrams lost each way, real reactor timers recover every byte, in order."""
    import random

    rng = random.Random(seed)
    port = await mnet.listen(Factory.forProtocol(Echo))
    client = await mnet.connect(port, OneFactory(Sink))
    server_drops = _lossy(port.protocol, rng, 0.05)
    client_drops = _lossy(client.transport._mnet, rng, 0.05)
    data = rng.randbytes(400_000)
    client.transport.write(data)
    await mnet.waitFor(lambda: client.received >= len(data), 60)
    assert client.digest.digest() == hashlib.sha256(data).digest()
    client.transport.loseConnection()
    await within(client.lost, 60)
    assert client.reason.check(error.ConnectionDone)
    assert server_drops[0] > 0 and client_drops[0] > 0  # loss really happened
    assert client.transport.session.retransmissions > 0
    assert not loggedErrors


class SendAndClose(Protocol):
    """Sends a block as soon as it is connected, then closes."""

    block = os.urandom(100_000)

    def connectionMade(self) -> None:
        self.transport.write(self.block)
        self.transport.loseConnection()


class PausedCollector(Collector):
    """Pauses reading at once, as a protocol whose own output is backed up does."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


@pytest_twisted.ensureDeferred
async def test_a_session_ending_while_reading_is_paused_is_told_after_its_data(mnet) -> None:
    """The session closes (cleanly, at the MNET level) while the application
    has paused reading: its private UDP port must stay open until the
    application has resumed, taken the data and heard connectionLost."""
    port = await mnet.listen(Factory.forProtocol(SendAndClose))
    client = await mnet.connect(port, Factory.forProtocol(PausedCollector))
    session = client.transport._session
    await mnet.waitFor(lambda: session.closed)
    await sleep(0.05)
    assert client.received == b"" and not client.lost.called
    client.transport.resumeProducing()
    await within(client.lost)
    assert client.received == SendAndClose.block
    assert client.reason.check(error.ConnectionDone)


class SendAndStay(Protocol):
    """Sends a block as soon as it is connected, and stays."""

    def connectionMade(self) -> None:
        self.transport.write(SendAndClose.block)


@pytest.mark.parametrize(
    ("server", "reason"),
    [(SendAndStay, error.ConnectionAborted), (SendAndClose, error.ConnectionDone)],
    ids=["open", "closed-cleanly"],
)
@pytest_twisted.ensureDeferred
async def test_aborting_while_reading_is_paused_ends_at_once(mnet, server, reason) -> None:
    """abortConnection does not wait for the application to read what it held
    back, whether the session is still open or already over: as with a TCP
    reset, that data is dropped and connectionLost comes."""
    port = await mnet.listen(Factory.forProtocol(server))
    client = await mnet.connect(port, Factory.forProtocol(PausedCollector))
    session = client.transport._session
    await mnet.waitFor(lambda: session.receive_buffer_size >= len(SendAndClose.block))
    if server is SendAndClose:
        await mnet.waitFor(lambda: session.closed)
    client.transport.abortConnection()
    await within(client.lost)
    assert client.received == b""
    assert client.reason.check(reason)
