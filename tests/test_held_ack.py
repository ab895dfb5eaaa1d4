"""
The ack that comes with data waits until the answer to that data is sent.

While nothing is being repaired such an ack can only release data and grow
the window, so the answer does not need it; taken after the send, its
bookkeeping leaves the round trip.  These tests pin down when an ack is
held, that the answer goes first, and that nothing reads stale state: the
next datagram, timers, the next deadline and a close all take it first.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from simnet import connected_pair
from test_hot_path import _Asker, _Echo
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted import wire
from mnet_twisted.config import SessionConfig
from mnet_twisted.demux import Demultiplexer
from mnet_twisted.events import DataReceived
from mnet_twisted.session import Session

CLIENT, SERVER = ("127.0.0.1", 1000), ("127.0.0.1", 2000)


def _answered_question(now: float = 1.0) -> tuple[Session, Session, bytes]:
    """The client asked ``b"question"``; returns the server's answer, not yet delivered."""
    _, _, _, conn, served = connected_pair()
    client, server = conn.session, served.session
    client.send(b"question")
    (asked,) = client.datagrams_to_send(now)
    server.receive_datagram(asked, now + 0.001)
    event = server.next_event()
    assert isinstance(event, DataReceived)
    server.send(b"answer")
    (answer,) = server.datagrams_to_send(now + 0.001)
    return client, server, answer


def _with_payload(datagrams: list[bytes]) -> list[bytes]:
    return [d for d in datagrams if wire.parse_data(d)[2]]  # type: ignore[index]


def test_the_next_question_leaves_before_the_answers_ack_is_taken() -> None:
    client, _, answer = _answered_question()
    acked = client._sender.acked
    client.receive_datagram(answer, 1.002)
    assert client.held_ack is not None
    assert isinstance(client.next_event(), DataReceived)
    client.send(b"next")
    (sent,) = client.datagrams_to_send(1.002)
    assert wire.parse_data(sent)[2] == b"next"  # type: ignore[index]
    assert client._sender.acked == acked  # the ack still waits
    assert client.take_held_ack() is False  # it releases "question"; nothing new to send
    assert client._sender.acked == acked + len(b"question")
    assert client._sender.rtt.latest == pytest.approx(0.002)  # timed by its arrival
    assert client.held_ack is None


def test_a_held_ack_that_frees_the_window_says_there_is_more_to_send() -> None:
    config = SessionConfig(initial_window_segments=2, pacing=False)
    _, _, _, conn, served = connected_pair(config=config, server_config=config)
    client, server = conn.session, served.session
    segment = client._sender.segment_size
    client.send(b"q" * 4 * segment)
    first = client.datagrams_to_send(1.0)
    assert len(first) == 2  # the window is full
    for datagram in first:
        server.receive_datagram(datagram, 1.001)
    server.next_event()
    server.send(b"answer")
    # Its pure ack is lost; the answer acknowledges the same.
    (answer,) = _with_payload(server.datagrams_to_send(1.001))
    client.receive_datagram(answer, 1.002)
    assert client.held_ack is not None
    assert _with_payload(client.datagrams_to_send(1.002)) == []  # the window is still full
    assert client.take_held_ack() is True
    assert len(_with_payload(client.datagrams_to_send(1.002))) >= 2


def test_the_next_datagram_takes_a_held_ack_first() -> None:
    client, _, answer = _answered_question()
    client.receive_datagram(answer, 1.002)
    assert client.held_ack is not None
    client.receive_datagram(answer, 1.003)  # a copy: a duplicate segment
    assert client.held_ack is None
    assert client._sender.acked == client._sender.snd_max


@pytest.mark.parametrize("how", ["next_deadline", "handle_timer", "close"])
def test_deadlines_timers_and_a_close_take_a_held_ack_first(how: str) -> None:
    client, _, answer = _answered_question()
    client.receive_datagram(answer, 1.002)
    client.next_event()
    assert client.held_ack is not None
    if how == "next_deadline":
        # Everything sent is acknowledged: no probe timeout is left to wait for.
        client.next_deadline()
        assert client._sender.pto_deadline is None
    elif how == "handle_timer":
        client.handle_timer(1.002)
    else:
        client.close(1.002)
    assert client.held_ack is None
    assert client._sender.acked == client._sender.snd_max


def test_no_ack_is_held_while_a_loss_is_being_repaired() -> None:
    """A partial ack that comes with data goes to the repair logic at once."""
    config = SessionConfig(initial_window_segments=8, pacing=False)
    _, _, _, conn, served = connected_pair(config=config, server_config=config)
    client, server = conn.session, served.session
    client.send(b"d" * 6 * client._sender.segment_size)
    data = client.datagrams_to_send(1.0)
    for index in (1, 2, 4, 5):  # the first and the fourth are lost
        server.receive_datagram(data[index], 1.001)
    for ack in server.datagrams_to_send(1.001):
        client.receive_datagram(ack, 1.002)
    assert client._sender.in_recovery
    (repair,) = _with_payload(client.datagrams_to_send(1.002))
    assert repair == data[0]
    server.receive_datagram(repair, 1.003)
    while server.next_event() is not None:
        pass
    server.send(b"reply")
    (reply,) = _with_payload(server.datagrams_to_send(1.003))
    client.receive_datagram(reply, 1.004)  # acknowledges up to the second hole
    assert client.held_ack is None
    # Taken at once: the repair logic saw it (the next hole is the fourth segment's).
    assert client._sender.acked == wire.parse_data(data[3])[0] - client._sender.segment_size  # type: ignore[index]


def _demultiplexers() -> tuple[Demultiplexer, Demultiplexer, Session]:
    client = Demultiplexer(local_port=CLIENT[1], config=SessionConfig())
    server = Demultiplexer(local_port=SERVER[1], accepting=True, config=SessionConfig())
    session = client.connect(SERVER, 1.0)
    for _ in range(4):  # the handshake
        for data, _ in client.datagrams_to_send(1.0):
            server.receive_datagram(data, CLIENT, 1.0)
        while server.next_event() is not None:
            pass
        for data, _ in server.datagrams_to_send(1.0):
            client.receive_datagram(data, SERVER, 1.0)
        while client.next_event() is not None:
            pass
    return client, server, session


def _payloads(datagrams: list[tuple[bytes, object]]) -> list[bytes]:
    return [wire.parse_data(d)[2] for d, _ in datagrams]  # type: ignore[index]


def test_the_demultiplexer_takes_held_acks_once_the_answers_are_sent() -> None:
    client, server, session = _demultiplexers()
    (served,) = server._sessions
    session.send(b"ping")
    for turn in range(3):
        now = 1.01 + turn * 0.01
        questions = client.datagrams_to_send(now)
        assert _payloads(questions) == [b"ping"]
        assert client.take_held_acks() is False
        assert session.held_ack is None
        assert session._sender.acked == session._sender.snd_max - 4  # all but this ping
        for data, _ in questions:
            server.receive_datagram(data, CLIENT, now)
        # From the second ping on, each acknowledges the answer before it.
        assert (served.held_ack is not None) == (turn > 0)
        acked = served._sender.acked
        while (item := server.next_event()) is not None:
            peer, event = item
            assert isinstance(event, DataReceived)
            peer.send(event.data)
        answers = server.datagrams_to_send(now)
        assert _payloads(answers) == [b"ping"]
        assert served._sender.acked == acked  # the answer went first
        timeout_before = served._sender.pto_deadline
        assert server.take_held_acks() is False
        assert served.held_ack is None
        assert served._sender.acked == served._sender.snd_max - 4  # all but this answer
        if turn > 0:
            # Armed for the answer before until its ack was taken (with an RTT
            # sample); then again, and the next deadline is that new one.
            assert served._sender.pto_deadline not in (None, timeout_before)
            assert server.next_deadline() == served._sender.pto_deadline
        for data, _ in answers:
            client.receive_datagram(data, SERVER, now + 0.001)
        assert session.held_ack is not None
        while client.next_event() is not None:
            pass
        session.send(b"ping")  # the next question, with the drain as an echo client's


# -- over real sockets ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_echo_listener_answers_before_it_takes_the_ack_that_came_along(mnet) -> None:
    port = await mnet.listen(Factory.forProtocol(_Echo))
    client = await mnet.connect(port, Factory.forProtocol(_Asker))
    listener = port.protocol
    held_at_send: list[bool] = []
    write = listener._write

    def recording_write(datagram: bytes, addr: tuple[str, int]) -> None:
        (session,) = listener.demux._sessions
        held_at_send.append(session.held_ack is not None)
        write(datagram, addr)

    listener._write = recording_write
    for index in range(20):
        message = index.to_bytes(2, "big") * 32
        assert await mnet.within(client.ask(message)) == message
    # Every question after the first acknowledged the answer before it.
    assert held_at_send[1:] == [True] * 19
    (session,) = listener.demux._sessions
    assert session.held_ack is None and not listener.demux._holding
    client.transport.loseConnection()


class _Collector(Protocol):
    def connectionMade(self) -> None:
        self.received = bytearray()
        self.done: defer.Deferred[None] = defer.Deferred()
        self.expected = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_stream_echoed_both_ways_with_held_acks_needs_no_timeout(mnet) -> None:
    """A 1 MiB stream echoed back, every answer carrying an ack that may be held:
    it all comes back byte for byte, with no probe timeout and nothing resent."""
    port = await mnet.listen(Factory.forProtocol(_Echo))
    client = await mnet.connect(port, Factory.forProtocol(_Collector))
    message = bytes(range(256)) * 4096  # 1 MiB
    client.expected = len(message)
    client.transport.write(message)
    await mnet.within(client.done, 30)
    assert bytes(client.received) == message
    (served,) = port.protocol.demux._sessions
    for session in (client.transport._session, served):
        stats = session.recovery_stats()
        assert stats["timeouts"] == 0 and stats["retransmissions"] == 0, stats
    client.transport.loseConnection()


class _Receipts(Protocol):
    """Answers every read with a short receipt: each carries the ack of what it read."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"k")


@pytest_twisted.ensureDeferred
async def test_a_window_a_held_ack_frees_goes_at_once(mnet) -> None:
    """A one-segment window, each segment answered by a receipt and nothing else: the
    held ack on the receipt frees the window, and the next segment must go then,
    not when a timer fires."""
    config = mnet.withConfig(initial_window_segments=1, pacing=False)
    port = await mnet.listen(Factory.forProtocol(_Receipts), config=config)
    client = await mnet.connect(port, Factory.forProtocol(_Collector), config=config)
    session = client.transport._session
    sender = session._sender
    client.transport.write(b"s" * 8 * sender.segment_size)
    await mnet.waitFor(lambda: sender.acked == sender.snd_max == 8 * sender.segment_size, 5)
    stats = session.recovery_stats()
    assert stats["timeouts"] == 0 and stats["retransmissions"] == 0, stats
    client.transport.loseConnection()


def test_a_session_holding_ack_after_ack_in_one_batch_is_listed_once() -> None:
    """Data both ways, each of the client's datagrams acking one more of the server's:
    every one in the server's batch holds its ack, taking the one before."""
    client, server, session = _demultiplexers()
    (served,) = server._sessions
    served.send(b"a" * 3 * served._sender.segment_size)
    batch: list[tuple[bytes, object]] = []
    for data, _ in server.datagrams_to_send(1.01):
        client.receive_datagram(data, SERVER, 1.01)
        while client.next_event() is not None:
            pass
        session.send(b"b" * 100)
        batch += client.datagrams_to_send(1.01)
    acks = [wire.parse_data(d)[1] for d, _ in batch]  # type: ignore[index]
    assert len(batch) == 3 and all(_payloads(batch)) and len(set(acks)) == 3
    for data, _ in batch:
        server.receive_datagram(data, CLIENT, 1.02)
    assert server._holding == [served] and served.held_ack == acks[-1]
    server.take_held_acks()
    assert served.held_ack is None and served._sender.acked == served._sender.snd_max
