"""
The lean per-datagram path: the same engine, without the per-packet overheads.

Fast DATA parse/serialize agree with the packet classes; the send buffer
finds any segment however much is buffered; a read batch is answered in the
reactor turn that read it, with no ``callLater(0)`` turn per message.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from test_path_size import _Sink as CollectingSink
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from mnet_twisted import udpport, wire
from mnet_twisted.sendbuf import SendBuffer
from mnet_twisted.udpport import MNETPort

# -- wire ---------------------------------------------------------------------------

tags = st.binary(min_size=3, max_size=3)
u32 = st.integers(0, 2**32 - 1)


@given(tags, u32, u32, st.binary(max_size=2000))
def test_fast_data_codec_matches_the_packet_class(tag: bytes, seq: int, ack: int, payload: bytes):
    encoded = wire.encode_data(tag, seq, ack, payload)
    assert encoded == wire.Data(tag, seq, ack, payload).to_bytes()
    assert wire.parse_data(encoded) == (seq, ack, payload)


@given(st.binary(max_size=40))
def test_fast_parse_takes_only_well_formed_data(datagram: bytes) -> None:
    fields = wire.parse_data(datagram)
    try:
        packet = wire.parse(datagram)
    except wire.MalformedPacket:
        assert fields is None
        return
    if isinstance(packet, wire.Data):
        assert fields == (packet.seq, packet.ack, packet.payload)
    else:
        assert fields is None


# -- the send buffer ------------------------------------------------------------------


@given(
    st.lists(st.integers(1, 70_000), min_size=1, max_size=40),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3000)), max_size=30),
    st.floats(0, 1),
)
def test_send_buffer_returns_the_written_bytes(sizes, reads, released) -> None:
    origin = 2**32 - 5000
    buffer = SendBuffer(origin)
    stream = bytearray()
    for index, size in enumerate(sizes):
        data = bytes([index % 251]) * size
        buffer.append(data)
        stream += data
    cut = origin + int(released * len(stream))
    buffer.release_until(cut)
    assert len(buffer) == origin + len(stream) - cut
    for where, length in reads:
        start = cut + int(where * len(buffer))
        length = min(length, buffer.end - start)
        assert buffer.get(start, length) == stream[start - origin : start - origin + length]


def test_send_buffer_lookup_does_not_walk_the_whole_buffer() -> None:
    """64 MiB in 1 KiB writes: reading the newest segment touches a few chunks only."""
    buffer = SendBuffer(0)
    block = b"x" * 1024
    for _ in range(64 * 1024):
        buffer.append(block)
    assert len(buffer._chunks) == 1024  # writes were gathered into 64 KiB chunks
    buffer.release_until(10 * 1024 * 1024)
    assert buffer.get(buffer.end - 1452, 1452) == b"x" * 1452
    for _ in range(400):  # released chunks are dropped in batches
        buffer.release_until(buffer.start + 64 * 1024)
    assert len(buffer._chunks) < 1024


def test_a_write_after_a_wholly_sent_tail_is_carried_uncopied() -> None:
    """An echo's answer goes while the one before is unacknowledged: gathered into that
    chunk it would be copied twice (into the chunk, out of it)."""
    question, answer = b"q" * 64, b"a" * 64
    buffer = SendBuffer(100)
    buffer.append(question)
    buffer.append(answer, sent_until=164)
    assert buffer.get(164, 64) is answer
    assert buffer.get(100, 64) is question
    unsent = SendBuffer(100)
    unsent.append(question)
    unsent.append(answer, sent_until=130)  # the tail is not all sent: gather
    assert len(unsent._chunks) == 1 and unsent.get(100, 128) == question + answer


# -- the Twisted side -------------------------------------------------------------------


class _CountingReactor:
    """The real reactor, counting zero-delay calls (each one a reactor turn)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.zeroDelayCalls = 0

    def callLater(self, delay: float, *args: Any, **kwargs: Any) -> Any:
        if delay == 0:
            self.zeroDelayCalls += 1
        return self._reactor.callLater(delay, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Asker(Protocol):
    def connectionMade(self) -> None:
        self.reply: defer.Deferred[bytes] | None = None

    def dataReceived(self, data: bytes) -> None:
        reply, self.reply = self.reply, None
        if reply is not None:
            reply.callback(data)

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        self.reply = defer.Deferred()
        self.transport.write(message)
        return self.reply


@pytest_twisted.ensureDeferred
async def test_a_read_batch_is_answered_in_the_same_reactor_turn(mnet) -> None:
    port = await mnet.listen(Factory.forProtocol(_Echo))
    client = await mnet.connect(port, Factory.forProtocol(_Asker))
    assert isinstance(port._udpPort, MNETPort)
    assert isinstance(client.transport._mnet._port, MNETPort)
    counters = []
    for protocol in (port.protocol, client.transport._mnet):
        protocol._reactor = _CountingReactor(protocol._reactor)
        counters.append(protocol._reactor)
    # The first write comes from outside any read: it takes a flush turn.
    await mnet.within(client.ask(b"0" * 64))
    before = [counter.zeroDelayCalls for counter in counters]
    for index in range(50):
        message = index.to_bytes(2, "big") * 32
        # Each next question is asked from dataReceived's callback, inside
        # the read batch that brought the answer: no extra turn on either side.
        assert await mnet.within(client.ask(message)) == message
    after = [counter.zeroDelayCalls for counter in counters]
    assert after == before
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_write_datagram_reports_errors_as_write_does(mnet) -> None:
    """The unchecked write still raises Twisted's errors: an oversized datagram."""
    from twisted.internet.error import MessageLengthError

    port = await mnet.listen(Factory.forProtocol(_Echo))
    listening = port._udpPort
    try:
        listening.writeDatagram(b"x" * 70_000, ("127.0.0.1", 9))
    except MessageLengthError:
        pass
    else:
        raise AssertionError("a 70,000-byte datagram was accepted")


# -- GSO and GRO ------------------------------------------------------------------------


class _FailingGSOSocket:
    """A port's socket whose sendmsg fails as a device without segmentation does."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.refusals = 0

    def sendmsg(self, *args: Any) -> int:
        import errno

        self.refusals += 1
        raise OSError(errno.EIO, "no segmentation offload here")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def _pinnedTransfer(mnet, size: int, setup: Any) -> tuple[Any, Any, bytes]:
    from simnet import payload

    factory = Factory.forProtocol(CollectingSink)
    factory.sinks = []
    config = mnet.withConfig(path_mtu_discovery=False)  # 1452-byte datagrams
    port = await mnet.listen(factory, config=config)
    client = await mnet.connect(port, Factory.forProtocol(Protocol), config=config)
    sending = client.transport._mnet._port
    setup(sending, port._udpPort)
    data = payload(size, seed=size)
    client.transport.write(data)
    await mnet.waitFor(lambda: factory.sinks and len(factory.sinks[0].received) >= size, 30)
    assert bytes(factory.sinks[0].received) == data
    client.transport.loseConnection()
    return sending, port._udpPort, data


@pytest_twisted.ensureDeferred
async def test_gso_batches_and_gro_splits_on_linux(mnet) -> None:
    sender, receiver, _ = await _pinnedTransfer(mnet, 4 * 1024 * 1024, lambda s, r: None)
    assert sender.gso and receiver.gro
    assert sender.batchedWrites > 0  # several datagrams per sendmsg
    assert receiver.coalescedReads > 0  # several datagrams per read


@pytest_twisted.ensureDeferred
async def test_without_offloads_one_datagram_per_call(mnet) -> None:
    def plain(sender: Any, receiver: Any) -> None:
        sender.gso = False
        receiver.setGRO(False)

    sender, receiver, _ = await _pinnedTransfer(mnet, 2 * 1024 * 1024, plain)
    assert sender.batchedWrites == 0 and receiver.coalescedReads == 0


@pytest_twisted.ensureDeferred
async def test_a_refused_gso_send_falls_back_and_loses_nothing(mnet) -> None:
    failing: list[_FailingGSOSocket] = []

    def refuseGSO(sender: Any, receiver: Any) -> None:
        failing.append(_FailingGSOSocket(sender.socket))
        sender.socket = failing[0]

    sender, _, _ = await _pinnedTransfer(mnet, 2 * 1024 * 1024, refuseGSO)
    assert failing[0].refusals == 1  # tried once, then off for this port
    assert not sender.gso and sender.batchedWrites == 0
    sender.socket = failing[0]._sock


class _BatchRecorder(DatagramProtocol):
    """Records each read batch's datagrams."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def readBatchStarted(self) -> None:
        self.batches.append([])

    def readBatchEnded(self) -> None:
        pass

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.batches[-1].append(data)


@contextlib.contextmanager
def _recorded_gro_port(why: str) -> Iterator[tuple[Any, _BatchRecorder, socket.socket]]:
    """An ``MNETPort`` on loopback that records its read batches, and a socket to feed it."""
    from twisted.internet import reactor

    from mnet_twisted import udpport

    recorder = _BatchRecorder()
    port = udpport.listenMNETUDP(reactor, 0, recorder, "127.0.0.1", 65535)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if not port.gro:
            pytest.skip(why)
        yield port, recorder, sender
    finally:
        sender.close()
        port.stopListening()


@contextlib.contextmanager
def _clocked_gro_port(
    monkeypatch: Any,
) -> Iterator[tuple[Any, _BatchRecorder, socket.socket, list[float], tuple[str, int]]]:
    """``_recorded_gro_port`` with the port's clock in a list the test moves, and its address."""
    from mnet_twisted import udpport

    with _recorded_gro_port("quiet reads are part of the GRO read path (Linux)") as (
        port,
        recorder,
        sender,
    ):
        clock = [100.0]
        monkeypatch.setattr(udpport, "perf_counter", lambda: clock[0])
        yield port, recorder, sender, clock, (port.getHost().host, port.getHost().port)


def test_a_read_after_a_quiet_spell_takes_one_datagram_then_reads_drain(monkeypatch) -> None:
    """One datagram when the socket was quiet; what waits behind it comes at the next read."""
    with _clocked_gro_port(monkeypatch) as (port, recorder, sender, clock, address):
        sent = [bytes([index]) * (10 + index) for index in range(50)]
        for datagram in sent:  # on loopback each is queued before sendto returns
            sender.sendto(datagram, address)
        port.doRead()  # the first read since the port opened: quiet
        clock[0] += udpport._QUIET_GAP / 4
        port.doRead()  # straight after: a busy socket, read to the end
        assert [len(batch) for batch in recorder.batches] == [1, 49]
        assert [d for batch in recorder.batches for d in batch] == sent
        assert port.quietReads == 1
        clock[0] += 1.0
        sender.sendto(b"again", address)
        sender.sendto(b"and again", address)
        port.doRead()
        assert recorder.batches[-1] == [b"again"]


def test_a_quiet_read_hands_on_a_coalesced_batch_cuts_long_datagrams_and_finds_nothing_calmly(
    monkeypatch,
) -> None:
    """The quiet read's shortcut is for one plain datagram; the rest takes the general way."""
    with _clocked_gro_port(monkeypatch) as (port, recorder, sender, clock, address):
        port.doRead()  # nothing there: no error, an empty batch
        assert recorder.batches == [[]] and port.quietReads == 1
        # Four datagrams in one sendmsg (GSO): the receiver's GRO keeps them one buffer.
        segment = 1000
        payload = b"".join(bytes([index]) * segment for index in range(4))
        try:
            sender.sendmsg(
                [payload],
                [(udpport._SOL_UDP, udpport._UDP_SEGMENT, struct.pack("=H", segment))],
                0,
                address,
            )
        except OSError as error:
            pytest.skip(f"no UDP_SEGMENT here: {error}")
        clock[0] += 1.0
        port.doRead()
        assert recorder.batches[-1] == [bytes([index]) * segment for index in range(4)]
        assert port.coalescedReads == 1
        port.maxPacketSize = 100  # what recvfrom(100) would give: the first 100 bytes
        sender.sendto(b"x" * 300, address)
        clock[0] += 1.0
        port.doRead()
        assert recorder.batches[-1] == [b"x" * 100]
        assert port.quietReads == 3


def test_a_busy_read_is_answered_every_64_datagrams(monkeypatch) -> None:
    """Acks wait for the end of their read batch: a batch must not hold 180 datagrams.

    Twisted reads up to 256 KiB before returning; every RTT sample then
    included that much processing, which looked like a queue.
    """
    from mnet_twisted import udpport

    with _recorded_gro_port("the count bounds the GRO read path (Linux)") as (
        port,
        recorder,
        sender,
    ):
        monkeypatch.setattr(udpport, "perf_counter", lambda: 100.0)  # one quiet read, then busy
        address = port.getHost().host, port.getHost().port
        # Sizes that differ one to the next, so that GRO joins none of them
        # (80 of them: what the default receive buffer surely holds).
        sent = [bytes([index]) * (1000 + index % 2) for index in range(80)]
        for datagram in sent:
            sender.sendto(datagram, address)
        for _ in range(3):
            port.doRead()
        assert [d for batch in recorder.batches for d in batch] == sent
        assert max(map(len, recorder.batches)) == port.maxDatagramsPerRead == 64


class _RunRecorder(_BatchRecorder):
    """Also takes runs of datagrams from one sender, as ``MNETDatagramProtocol`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[list[bytes], Any]] = []

    def datagramsReceived(self, datagrams: list[bytes], addr: Any) -> None:
        self.batches[-1].extend(datagrams)
        self.runs.append((list(datagrams), addr))

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        super().datagramReceived(data, addr)
        self.runs.append(([data], addr))


def test_datagrams_read_in_a_row_from_one_sender_are_handed_over_together(monkeypatch) -> None:
    """Without GRO coalescing (no GSO at the sender), a read batch still reaches the
    protocol in runs, one per sender in turn, in order: the demux takes a run of
    acks as a whole."""
    from twisted.internet import reactor

    from mnet_twisted import udpport

    recorder = _RunRecorder()
    port = udpport.listenMNETUDP(reactor, 0, recorder, "127.0.0.1", 65535)
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if not port.gro:
            pytest.skip("runs are formed by the GRO read path (Linux)")
        monkeypatch.setattr(udpport, "perf_counter", lambda: 100.0)  # one quiet read, then busy
        address = port.getHost().host, port.getHost().port
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        plan = [(first, 0), (first, 1), (first, 2), (second, 3), (second, 4), (first, 5)]
        for sock, index in [(first, 99), *plan]:
            sock.sendto(bytes([index]) * (20 + index % 2), address)
        port.doRead()  # quiet: the first datagram alone
        port.doRead()  # busy: the rest, in three runs
        runs = [([d[0] for d in run], addr) for run, addr in recorder.runs]
        assert runs == [
            ([99], first.getsockname()),
            ([0, 1, 2], first.getsockname()),
            ([3, 4], second.getsockname()),
            ([5], first.getsockname()),
        ]
        assert recorder.batches == [
            [bytes([99]) * 21],
            [bytes([i]) * (20 + i % 2) for i in range(6)],
        ]
    finally:
        first.close()
        second.close()
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_sender_passes_over_acks_that_came_one_per_read(mnet) -> None:
    """The receiver's acks leave one per datagram (no GSO) and arrive one per
    ``recvmsg``; the sender still takes each read's run of them as a whole."""

    def acksUncoalesced(sender: Any, receiver: Any) -> None:
        receiver.gso = False

    sender, _, _ = await _pinnedTransfer(mnet, 4 * 1024 * 1024, acksUncoalesced)
    assert sender.coalescedReads == 0  # nothing for GRO to join
    assert sender.protocol.demux.acks_passed_over > 0


# -- a shared client socket ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_shared_socket_connections_use_one_port_and_it_closes_when_idle(mnet) -> None:
    from mnet_twisted.endpoints import SHARED_IDLE_GRACE

    port = await mnet.listen(Factory.forProtocol(_Echo))
    endpoint = mnet.client(port, shareSocket=True)
    protocols = [
        await mnet.within(endpoint.connect(Factory.forProtocol(_Asker))) for _ in range(2)
    ]
    shared = protocols[0].transport._mnet
    assert protocols[1].transport._mnet is shared
    assert protocols[0].transport.getHost() == protocols[1].transport.getHost()
    for index, protocol in enumerate(protocols):
        message = bytes([index]) * 64
        assert await mnet.within(protocol.ask(message)) == message
    for protocol in protocols:
        protocol.transport.loseConnection()
    await mnet.waitFor(lambda: shared.demux.open_sessions == 0)
    assert shared.usable  # kept for a while, for the next connection
    await mnet.waitFor(lambda: not shared.usable, SHARED_IDLE_GRACE + 3)


@pytest_twisted.ensureDeferred
async def test_connect_sends_its_init_before_returning(mnet) -> None:
    port = await mnet.listen(Factory.forProtocol(_Echo))
    endpoint = mnet.client(port, shareSocket=True)
    warm = await mnet.within(endpoint.connect(Factory.forProtocol(_Asker)))
    shared = warm.transport._mnet
    await mnet.sleep(0)  # a fresh reactor turn, as an application's own call would be
    sent = shared.stats["datagramsSent"]
    connecting = endpoint.connect(Factory.forProtocol(_Asker))
    assert shared.stats["datagramsSent"] == sent + 1  # the INIT, no reactor turn needed
    second = await mnet.within(connecting)
    for protocol in (warm, second):
        protocol.transport.loseConnection()


# -- acks handled once per batch ------------------------------------------------------------


@pytest.mark.internals
def test_a_batch_skips_pure_acks_that_a_later_one_supersedes() -> None:
    from mnet_twisted.config import SessionConfig
    from mnet_twisted.cookie import CookieMinter
    from mnet_twisted.demux import Demultiplexer

    demux = Demultiplexer(
        local_port=1, cookies=CookieMinter(b"k" * 16), config=SessionConfig(), accepting=False
    )
    seen: list[bytes] = []
    demux.receive_datagram = lambda data, address, now: seen.append(data)  # type: ignore[method-assign]
    tag, other = b"abc", b"xyz"

    def ack(value: int, who: bytes = tag, seq: int = 7) -> bytes:
        return wire.encode_data(who, seq, value, b"")

    batch = [
        ack(10), ack(20), ack(30), ack(40),  # 20 and 30 are superseded
        ack(40), ack(40), ack(50),  # duplicates all count
        ack(60, other), ack(70),  # another session's ack between: kept
        ack(80, seq=8), ack(90),  # the sender's own sequence moved: kept
        wire.encode_data(tag, 7, 95, b"data"), ack(100),
        ack(2**32 - 2), ack(2**32 - 1), ack(5),  # wrap-around
    ]  # fmt: skip
    repeated: list[tuple[bytes, int]] = []

    class Session:
        def receive_repeated_ack(self, data: bytes, copies: int, now: float) -> None:
            repeated.append((data, copies))
            seen.extend([data] * copies)

    demux._by_peer_tag[(("127.0.0.1", 9), tag)] = Session()  # type: ignore[assignment]
    demux.receive_batch(batch, ("127.0.0.1", 9), now=0.0)
    kept = [wire.parse_data(d)[1] for d in seen]  # type: ignore[index]
    assert kept == [10, 40, 40, 40, 50, 60, 70, 80, 90, 95, 100, 2**32 - 2, 5]
    assert repeated == [(ack(40), 2)]  # after the first, the copies go together


def test_copies_of_a_strangers_pure_ack_are_answered_as_one_at_a_time() -> None:
    """Copies in a batch with no session behind them each get what one alone gets."""
    from mnet_twisted.cookie import CookieMinter
    from mnet_twisted.demux import Demultiplexer

    def aborts(together: bool) -> int:
        demux = Demultiplexer(local_port=1, cookies=CookieMinter(b"k" * 16))
        stray = wire.encode_data(b"abc", 7, 40, b"")
        if together:
            demux.receive_batch([stray] * 5, ("127.0.0.1", 9), now=0.0)
        else:
            for _ in range(5):
                demux.receive_datagram(stray, ("127.0.0.1", 9), now=0.0)
        return len(demux.datagrams_to_send(0.0))

    assert aborts(together=False) == 5
    assert aborts(together=True) == 5


@pytest.mark.parametrize("copies", [1, 2, 3, 20, 60])
def test_a_run_of_one_duplicate_ack_taken_at_once_acts_as_one_at_a_time(copies: int) -> None:
    """``receive_repeated_ack`` is a shortcut, not another rule: same repairs, same state,
    below, at and far past the duplicate threshold."""
    from simnet import connected_pair

    from mnet_twisted.config import SessionConfig
    from mnet_twisted.seqnum import wrap

    def after_duplicates(together: bool) -> tuple[object, ...]:
        config = SessionConfig(initial_window_segments=32, pacing=False)
        _, _, _, conn, served = connected_pair(config=config)
        session = conn.session
        session.send(b"x" * 100_000)
        sent = session.datagrams_to_send(1.0)
        peer_seq = wrap(served.session._sender.snd_max)
        duplicate = wire.encode_data(session.peer_tag, peer_seq, wrap(session._sender.acked), b"")
        session.receive_datagram(duplicate, 1.01)
        if together:
            session.receive_repeated_ack(duplicate, copies, 1.01)
        else:
            for _ in range(copies):
                session.receive_datagram(duplicate, 1.01)
        out = session.datagrams_to_send(1.01)
        stats = session.recovery_stats()
        sender = session._sender
        state = (sender.snd_nxt, sender.in_recovery, sender.deadline, sender._pipe())
        return (
            len(sent),
            out,
            stats,
            session.datagrams_received,
            session.congestion_window,
            state,
        )

    one_by_one = after_duplicates(together=False)
    # Three duplicates in all start the repair (the run's first came on its own);
    # far more than a window's worth take the repair for lost and send more.
    assert (one_by_one[2]["retransmissions"] > 0) == (copies >= 2)
    assert after_duplicates(together=True) == one_by_one


def test_an_ack_sent_at_once_leaves_no_pending_one_to_repeat_it() -> None:
    """In-order data, then a duplicate segment in the same batch: one ack, not two.

    The second, identical ack reached the sender as a duplicate, a report
    of a segment past a hole that never was (at a transfer's tail it set
    off an early retransmission).
    """
    from simnet import connected_pair

    _, _, _, conn, served = connected_pair()
    conn.session.send(b"x" * 100)
    (datagram,) = conn.session.datagrams_to_send(1.0)
    receiver = served.session
    receiver.receive_datagram(datagram, 1.001)  # in order: acked at the drain
    receiver.receive_datagram(datagram, 1.001)  # a copy: acked at once
    acks = receiver.datagrams_to_send(1.001)
    assert len(acks) == 1 and wire.parse_data(acks[0])[2] == b""  # type: ignore[index]


# -- the ack of a filled hole leaves before the rest of the batch -----------------------------


def _segments_out_of_order(session: Any, now: float) -> list[bytes]:
    """Four full DATA segments from ``session``, the first moved to third place."""
    session.send(b"m" * 4 * session._sender.segment_size)
    data = [d for d in session.datagrams_to_send(now) if (wire.parse_data(d) or (0, 0, b""))[2]]
    assert len(data) == 4, [len(d) for d in data]
    return [data[1], data[2], data[0], data[3]]


def test_a_batch_sends_the_ack_of_a_filled_hole_before_reading_on() -> None:
    """``receive_batch`` calls its hook right after the segment that fills a hole, with
    that ack ready to send, and only then takes the rest of the batch."""
    from mnet_twisted.config import SessionConfig
    from mnet_twisted.demux import Demultiplexer

    config = SessionConfig(path_mtu_discovery=False)
    client_address, server_address = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
    client = Demultiplexer(local_port=1000, config=config)
    server = Demultiplexer(local_port=2000, config=config, accepting=True)
    session = client.connect(server_address, 0.0)
    for _ in range(4):  # the handshake
        for data, _ in client.datagrams_to_send(0.0):
            server.receive_datagram(data, client_address, 0.0)
        for data, _ in server.datagrams_to_send(0.0):
            client.receive_datagram(data, server_address, 0.0)
    while server.next_event() is not None:
        pass
    batch = _segments_out_of_order(session, 0.1)
    mss = session._sender.segment_size

    sent: list[tuple[list[int], int]] = []  # (acks sent at once, stream taken by then)

    def send_urgent() -> None:
        acks = [wire.parse_data(d)[1] for d, _ in server.datagrams_to_send(0.1)]  # type: ignore[index]
        sent.append((acks, served._receiver.rcv_nxt))

    served = next(iter(server._sessions))
    server.receive_batch(batch, client_address, 0.1, send_urgent)
    # Two duplicates, then the jump past the filled hole, before the fourth
    # segment was taken; that one is acked as in-order data is, later.
    assert sent == [([0, 0, 3 * mss], 3 * mss)]
    assert served._receiver.rcv_nxt == 4 * mss
    assert not served.ack_urgent  # reported once, then cleared

    # Without the hook the batch is taken whole, and the ack waits for the drain.
    server.datagrams_to_send(0.1)
    server.receive_batch(_segments_out_of_order(session, 0.2), client_address, 0.2)
    assert served._receiver.rcv_nxt == 8 * mss
    answers = server.datagrams_to_send(0.2)
    acks = [wire.parse_data(d)[1] for d, _ in answers]  # type: ignore[index]
    assert acks[:3] == [4 * mss, 4 * mss, 7 * mss]

    # One at a time, ``receive_datagram`` says which one to answer at once.
    for data, _ in answers:  # the acks open the client's window again
        client.receive_datagram(data, server_address, 0.2)
    single = _segments_out_of_order(session, 0.3)
    urgent = [server.receive_datagram(data, client_address, 0.3) for data in single]
    assert urgent == [False, False, True, False]


@pytest_twisted.ensureDeferred
async def test_the_ack_of_a_filled_hole_leaves_before_the_rest_is_read(mnet) -> None:
    """Real sockets: the listener reads a batch with a hole and its repair in it, and
    sends the repair's ack before it takes the segment that came after the repair."""
    received = bytearray()

    class Keep(Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.extend(data)

    port = await mnet.listen(
        Factory.forProtocol(Keep), config=mnet.withConfig(path_mtu_discovery=False)
    )
    client = await mnet.connect(
        port, Factory.forProtocol(_Asker), config=mnet.withConfig(path_mtu_discovery=False)
    )
    server = port.protocol
    await mnet.waitFor(lambda: server.demux.open_sessions == 1)
    served = next(iter(server._transports.values())).session
    sent: list[tuple[list[int], int]] = []  # (acks in one send, stream taken by then)
    send_all = server._sendAll

    def recording(datagrams: list[tuple[bytes, Any]]) -> None:
        acks = [fields[1] for d, _ in datagrams if (fields := wire.parse_data(d)) is not None]
        sent.append((acks, served._receiver.rcv_nxt))
        send_all(datagrams)

    server._sendAll = recording
    session = client.transport.session
    mss = session._sender.segment_size
    # The segments leave the client's own socket in the order chosen here, in
    # this reactor turn, so the listener finds them all queued when it reads.
    udp = client.transport._mnet._port.socket
    for datagram in _segments_out_of_order(session, mnet.reactor.seconds()):
        udp.sendto(datagram, ("127.0.0.1", port.getHost().port))
    await mnet.waitFor(lambda: len(received) == 4 * mss)
    assert bytes(received) == b"m" * 4 * mss
    # The send that carried the jump past the filled hole happened before the
    # fourth segment was taken, not with the acks of the batch's end.
    assert any(acks and acks[-1] == 3 * mss and taken == 3 * mss for acks, taken in sent), sent
    client.transport.loseConnection()
