"""
Many sessions on one listener: tags that collide, idle sessions that cost
nothing between keep-alives, one reactor timer however many sessions there
are, and what a session holds while idle.
"""

from __future__ import annotations

import gc
import itertools
import sys
import weakref
from collections.abc import Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted.config import ListenerLimits, SessionConfig
from mnet_twisted.cookie import CookieMinter
from mnet_twisted.demux import Demultiplexer
from mnet_twisted.events import DataReceived
from mnet_twisted.heap import can_release_free_memory
from mnet_twisted.session import Session, SessionState

CLIENT, SERVER = ("10.0.0.1", 4000), ("10.0.0.2", 5000)
EPOCH = 1_700_000_000.0
UNLIMITED = ListenerLimits(
    max_sessions=None, cookie_rate=None, cookie_rate_per_source=None, out_of_order_budget=None
)


class Pair:
    """A client and a listener demultiplexer wired back to back, with a clock."""

    def __init__(self, client_tags: Callable[[int], bytes] | None = None) -> None:
        self.now = EPOCH
        self.server = Demultiplexer(
            local_port=SERVER[1],
            cookies=CookieMinter(b"listener secret!"),
            accepting=True,
            limits=UNLIMITED,
        )
        self.client = Demultiplexer(
            local_port=CLIENT[1],
            cookies=CookieMinter(b"client secret!!!"),
            **({"random_bytes": client_tags} if client_tags is not None else {}),
        )
        #: Datagrams each way, and calls of ``handle_timers``, so far.
        self.to_server = self.to_client = self.wakeups = 0
        #: What each listener session received, by its peer's tag.
        self.received: dict[bytes | None, bytes] = {}

    def exchange(self) -> None:
        """Deliver what both sides want to send until neither has more."""
        while True:
            while (item := self.server.next_event()) is not None:
                session, event = item
                if isinstance(event, DataReceived):
                    tag = session.peer_tag
                    self.received[tag] = self.received.get(tag, b"") + event.data
            while self.client.next_event() is not None:
                pass
            to_client = self.server.datagrams_to_send(self.now)
            for data, _ in to_client:
                self.client.receive_datagram(data, SERVER, self.now)
            to_server = self.client.datagrams_to_send(self.now)
            for data, _ in to_server:
                self.server.receive_datagram(data, CLIENT, self.now)
            self.to_client += len(to_client)
            self.to_server += len(to_server)
            if not to_client and not to_server:
                return

    def timers_run(self) -> int:
        """Session deadlines both sides have acted on so far."""
        return self.server.timers_run + self.client.timers_run

    def run_until(self, until: float) -> None:
        """Advance the clock deadline by deadline, as the adapter's one timer does."""
        self.exchange()
        while True:
            due, demux = min(
                ((d.next_deadline(), d) for d in (self.server, self.client)),
                key=lambda pair: float("inf") if pair[0] is None else pair[0],
            )
            if due is None or due > until:
                self.now = until
                return
            self.now = max(self.now, due)
            self.wakeups += 1
            demux.handle_timers(self.now)
            self.exchange()


def _colliding_tags(minter: CookieMinter, connector: tuple[str, int]) -> tuple[bytes, bytes]:
    """Two connector tags to which the listener answers with one listener tag."""
    seen: dict[bytes, bytes] = {}
    for number in itertools.count():
        tag = number.to_bytes(3, "big")
        listener_tag = minter.listener_tag(connector, tag)
        if listener_tag in seen:
            return seen[listener_tag], tag
        seen[listener_tag] = tag
    raise AssertionError("unreachable")


def test_a_listener_tag_collision_makes_the_connector_retry_under_a_fresh_tag() -> None:
    minter = CookieMinter(b"listener secret!")
    first, second = _colliding_tags(minter, CLIENT)
    fresh = b"\xff\xff\xfe"
    assert minter.listener_tag(CLIENT, fresh) != minter.listener_tag(CLIENT, first)
    tags: Iterator[bytes] = iter([first, second, fresh])
    pair = Pair(client_tags=lambda size: next(tags))
    sessions = [pair.client.connect(SERVER, pair.now) for _ in range(2)]
    pair.run_until(EPOCH + 3)
    assert [s.state for s in sessions] == [SessionState.ESTABLISHED] * 2
    assert sessions[1].local_tag == fresh
    assert sessions[0].peer_tag != sessions[1].peer_tag
    assert pair.server.open_sessions == 2
    # Each session's data reaches its own peer on the listener.
    for index, session in enumerate(sessions):
        session.send(bytes([index]) * 10)
    pair.exchange()
    assert pair.received == {first: b"\x00" * 10, fresh: b"\x01" * 10}


def test_idle_sessions_do_nothing_between_keepalives() -> None:
    count = 300
    interval = SessionConfig().keepalive_interval
    assert interval is not None
    pair = Pair()
    sessions = [pair.client.connect(SERVER, pair.now) for _ in range(count)]
    pair.run_until(EPOCH + 1)
    assert all(s.state is SessionState.ESTABLISHED for s in sessions)
    for session in sessions:
        session.send(b"x" * 64)  # one message each, echoed by nobody: only acked
    pair.run_until(EPOCH + 2)

    timers_run = pair.timers_run()
    datagrams, wakeups = pair.to_client + pair.to_server, pair.wakeups
    pair.run_until(EPOCH + interval)  # idle since EPOCH + 2 at the latest
    assert pair.timers_run() == timers_run
    assert pair.to_client + pair.to_server == datagrams
    assert pair.wakeups - wakeups <= 2, "a few early wake-ups at most, not one per session"

    # At the keep-alive each session probes once, and hears one answer.
    pair.run_until(EPOCH + interval + 3)
    assert pair.timers_run() - timers_run == count
    assert pair.to_client + pair.to_server - datagrams == 2 * count
    assert all(s.state is SessionState.ESTABLISHED for s in sessions)
    timers_run = pair.timers_run()
    datagrams = pair.to_client + pair.to_server
    pair.run_until(EPOCH + 2 * interval)
    assert pair.timers_run() == timers_run and pair.to_client + pair.to_server == datagrams


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


@pytest_twisted.ensureDeferred
async def test_one_reactor_timer_however_many_sessions(mnet) -> None:  # type: ignore[no-untyped-def]
    """The listener's sessions share one IDelayedCall: the reactor's count does not grow."""
    port = await mnet.listen(Factory.forProtocol(_Echo))
    endpoint = mnet.client(port, shareSocket=True)
    first = await mnet.within(endpoint.connect(Factory.forProtocol(Protocol)))
    ports = (port.protocol, first.transport._mnet)

    def timers() -> int:
        # A port's one timer is its fine timer (finetimer.py) where it has
        # one, else its DelayedCall.
        fine = sum(p._fineTimer is not None and p._fineTimer.armed for p in ports)
        return len(mnet.reactor.getDelayedCalls()) + fine

    await mnet.sleep(0.05)
    delayed = timers()
    more = [await mnet.within(endpoint.connect(Factory.forProtocol(Protocol))) for _ in range(60)]
    await mnet.sleep(0.05)
    assert port.protocol.demux.open_sessions == 61
    assert timers() == delayed
    listener = port.protocol
    assert (listener._timerCall is not None and listener._timerCall.active()) or (
        listener._fineTimer is not None and listener._fineTimer.armed
    )
    for protocol in [first, *more]:
        protocol.transport.loseConnection()
    await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 0)


class _PingPong(Protocol):
    """Sends a message, and the next as soon as its echo is back, ``rounds`` times."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.done: defer.Deferred[None] = defer.Deferred()
        self.pending = b""

    def connectionMade(self) -> None:
        self.transport.write(b"p" * 64)

    def dataReceived(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) < 64:
            return
        self.pending = b""
        self.rounds -= 1
        if self.rounds:
            self.transport.write(b"p" * 64)
        else:
            self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_timer_pushed_back_by_every_ack_does_not_wake_the_port(mnet) -> None:  # type: ignore[no-untyped-def]
    """Each echo moves the probe timeout later; the port wakes only when one is due.

    Woken at every deadline a later ack had already moved, the listener ran
    its whole timer path (a read, the demux, a flush) for nothing: 67 times
    in these 400 echoes, and 5,854 times in 16 s under 10,000 sessions
    (bench/scale_sessions.py).
    """
    port = await mnet.listen(Factory.forProtocol(_Echo))
    listener = port.protocol
    client = await mnet.connect(port, Factory.forProtocol(lambda: _PingPong(400)))
    await mnet.within(client.done)
    # Old code: about 100.  A loaded machine may let a real probe timeout fire.
    wakeups = listener.stats["timerWakeups"]
    assert wakeups <= 40, wakeups
    client.transport.loseConnection()


class _Asker(Protocol):
    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@pytest_twisted.ensureDeferred
async def test_a_timer_reads_the_socket_before_acting(mnet) -> None:  # type: ignore[no-untyped-def]
    """An ack already waiting in the socket when the timeout fires is not a loss.

    A busy reactor comes to its timer late; resending what the waiting ack
    answers would add load exactly when there is too much (under 4,000
    echo sessions every echo timed out so, and the resends overflowed the
    socket).  Here the client's socket is simply not watched for a while.
    """
    port = await mnet.listen(Factory.forProtocol(_Echo))
    client = await mnet.connect(port, Factory.forProtocol(_Asker))
    await mnet.sleep(0.05)
    udp = client.transport._mnet._port
    udp.stopReading()
    try:
        client.transport.write(b"m" * 64)
        await mnet.sleep(0.2)  # many probe timeouts on loopback
    finally:
        udp.startReading()
    await mnet.waitFor(lambda: client.received == b"m" * 64)
    assert client.transport.getStats().retransmissions == 0
    client.transport.loseConnection()


def test_tables_give_back_their_room_once_most_sessions_are_gone() -> None:
    """Two thousand sessions closed: the listener's per-session tables shrink again.

    A dict keeps the room of its peak, so empty tables would still hold it
    (and keep the C heap from shrinking); they are rebuilt once the sessions
    fall to an eighth of the peak, and the listener goes on serving.
    """
    pair = Pair()
    empty = sys.getsizeof({})
    sessions = [pair.client.connect(SERVER, pair.now) for _ in range(2000)]
    pair.run_until(pair.now + 5)  # beyond a drain's handshakes, the connectors retry
    assert pair.server.open_sessions == 2000
    tables = ("_by_peer_tag", "_by_local_tag", "_open", "_sessions", "_scheduled")
    peak = {name: sys.getsizeof(getattr(pair.server, name)) for name in tables}
    assert all(size > 50 * empty for size in peak.values())
    for session in sessions:
        session.close(pair.now)
    pair.run_until(pair.now + 60)
    assert pair.server.open_sessions == 0
    after = {name: sys.getsizeof(getattr(pair.server, name)) for name in tables}
    assert all(after[name] * 4 <= peak[name] for name in tables), (peak, after)
    again = pair.client.connect(SERVER, pair.now)
    pair.exchange()
    again.send(b"still here")
    pair.exchange()
    assert pair.received[again.local_tag] == b"still here"


def test_a_wave_leaves_the_listeners_containers_as_they_were_made_and_empty() -> None:
    """After a thousand sessions came and went, no container of the listener is new or holds room.

    Made during the wave, one would sit in that wave's memory and keep it
    from going back to the system once the sessions are gone (see
    docs/scaling.md), and a dict keeps the room of its peak unless cleared.
    """
    pair = Pair()
    containers = (
        "_handshakes",
        "_handshakes_spare",
        "_stateless",
        "_with_output",
        "_with_output_spare",
        "_unscheduled",
        "_unscheduled_spare",
        "_heap",
        "_by_peer_tag",
        "_by_local_tag",
        "_open",
        "_sessions",
        "_with_events",
        "_scheduled",
    )
    made = {id(getattr(pair.server, name)) for name in containers}
    sessions = [pair.client.connect(SERVER, pair.now) for _ in range(1000)]
    pair.run_until(pair.now + 5)
    assert pair.server.open_sessions == 1000
    for session in sessions:
        session.close(pair.now)
    pair.run_until(pair.now + 60)
    assert pair.server.open_sessions == 0 and not pair.server._sessions
    assert {id(getattr(pair.server, name)) for name in containers} == made
    empty = {dict: sys.getsizeof({}), list: sys.getsizeof([])}
    sizes = {name: sys.getsizeof(getattr(pair.server, name)) for name in containers}
    assert sizes == {name: empty[type(getattr(pair.server, name))] for name in containers}


def _numbers_held(owners: dict[str, object]) -> dict[str, object]:
    """Every int and float held by an attribute of ``owners``, by a dotted name."""
    held: dict[str, object] = {}
    for owner_name, owner in owners.items():
        if isinstance(owner, dict):
            values = dict(owner)
        else:
            names = list(getattr(owner, "__dict__", {})) + list(getattr(owner, "__slots__", ()))
            values = {name: getattr(owner, name, None) for name in names}
        for name, value in values.items():
            if type(value) in (int, float):
                held[f"{owner_name}.{name}"] = value
    return held


def test_no_number_made_during_a_wave_stays_in_the_listener() -> None:
    """Each int above 256 or float an attribute holds after the wave was there before it.

    A number set while the sessions lived is an object in their memory,
    and would keep its arena from going back to the system after them
    (``mnet_twisted.counts``): counters fold into arrays after the wave.
    """
    limited = ListenerLimits(max_sessions=None, cookie_rate=None, cookie_rate_per_source=1000.0)
    pair = Pair()
    server = pair.server = Demultiplexer(
        local_port=SERVER[1],
        cookies=CookieMinter(b"listener secret!"),
        accepting=True,
        limits=limited,
    )
    owners = {
        "demux": server,
        "counts": server.counts.live,
        "cookie_replies": server._cookie_replies,
        "abort_replies": server._abort_replies,
        "out_of_order": server.out_of_order,
    }
    before = {name: id(value) for name, value in _numbers_held(owners).items()}
    sessions = [pair.client.connect(SERVER, pair.now) for _ in range(1000)]
    pair.run_until(pair.now + 30)  # the cookie rate lets most in, over retries
    accepted = server.sessions_accepted
    assert accepted > 256 and server.replies_limited > 256
    for session in sessions:
        session.close(pair.now)
    pair.run_until(pair.now + 60)
    server.after_wave(pair.now)
    assert server.open_sessions == 0 and server.sessions_accepted == accepted
    made_in_wave = {
        name: value
        for name, value in _numbers_held(owners).items()
        if before.get(name) != id(value) and not (type(value) is int and -5 <= value <= 256)
    }
    assert made_in_wave == {}


def test_a_forgotten_session_is_let_go_before_its_old_deadlines_come() -> None:
    """Closed sessions are freed at once, not when their old keep-alive time comes.

    The deadline heap leaves superseded entries in place, and each holds
    its session; it is rebuilt once they are most of it.
    """
    pair = Pair()
    sessions = [pair.client.connect(SERVER, pair.now) for _ in range(500)]
    pair.run_until(pair.now + 1)
    assert pair.server.open_sessions == 500
    gc.collect()
    gc.disable()  # freed by their counts alone, with no cycle to collect
    try:
        for session in sessions[100:]:
            session.close(pair.now)
        pair.exchange()
        assert pair.server.open_sessions == 100
        # Well before any keep-alive (15 s) or idle deadline of theirs.
        pair.run_until(pair.now + 0.5)
        assert len(pair.server._heap) <= 2 * 100 + 64
        accepted = [o for o in gc.get_objects() if type(o) is Session and not o.is_connector]
        # The heap keeps at most as many superseded entries as live ones, plus 64.
        assert len(accepted) <= 2 * 100 + 64
    finally:
        gc.enable()


class _Kept(Protocol):
    """A protocol that records itself, so a test can watch it go away."""

    built: list[weakref.ref[_Kept]] = []

    def connectionMade(self) -> None:
        _Kept.built.append(weakref.ref(self))


@pytest_twisted.ensureDeferred
async def test_a_closed_session_goes_away_without_the_collector(mnet) -> None:  # type: ignore[no-untyped-def]
    """Once a session closes, nothing keeps its transport and protocol in a cycle.

    As with Twisted's TCP connections: the collector would free them only
    at its next full pass, which with thousands of closed sessions is a
    long pause (and their memory is held until then).
    """
    _Kept.built = []
    port = await mnet.listen(Factory.forProtocol(_Kept))
    client = await mnet.connect(port, Factory.forProtocol(_Kept))
    await mnet.waitFor(lambda: len(_Kept.built) == 2)
    transports = [weakref.ref(client.transport)]
    gc.collect()
    gc.disable()
    try:
        client.transport.loseConnection()
        del client
        await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 0)
        await mnet.sleep(0.05)  # the client's half of the close
        assert [kept() for kept in _Kept.built] == [None, None]
        assert transports[0]() is None
    finally:
        gc.enable()


@pytest.mark.skipif(not can_release_free_memory(), reason="the C library has no malloc_trim")
@pytest_twisted.ensureDeferred
async def test_a_wave_of_closed_sessions_is_followed_by_one_trim_of_the_heap(mnet) -> None:  # type: ignore[no-untyped-def]
    """The listener gives its free heap back once the wave of closes is over.

    And once more when its last session closes, however few closed since.
    """
    port = await mnet.listen(Factory.forProtocol(_Echo))
    listener = port.protocol
    listener.releaseMemoryAfter = 4
    listener.releaseMemoryDelay = 0.5
    endpoint = mnet.client(port, shareSocket=True)
    factory = Factory.forProtocol(Protocol)
    clients = [await mnet.within(endpoint.connect(factory)) for _ in range(11)]
    await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 11)
    # Fewer closes than the count: no trim, however long the wait.
    for client in clients[:3]:
        client.transport.loseConnection()
    await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 8)
    await mnet.sleep(0.75)
    assert listener.stats["memoryTrims"] == 0
    # The count is reached at the fourth close, but closes go on every 0.1 s
    # for longer than the delay: the trim waits for them to stop.
    for still_open in range(7, 0, -1):
        clients[10 - still_open].transport.loseConnection()
        await mnet.waitFor(lambda n=still_open: listener.demux.open_sessions == n)
        await mnet.sleep(0.1)
    assert listener.stats["memoryTrims"] == 0
    await mnet.waitFor(lambda: listener.stats["memoryTrims"] == 1)
    await mnet.sleep(0.75)
    assert listener.stats["memoryTrims"] == 1
    # One close, under the count, but the last of sessions that were many:
    # the pages it shared with the others can go back only now.
    clients[10].transport.loseConnection()
    await mnet.waitFor(lambda: listener.stats["memoryTrims"] == 2)
    assert 0 < listener.longestMemoryTrim < 1  # timed: the reactor waits for it


@pytest.mark.skipif(not can_release_free_memory(), reason="the C library has no malloc_trim")
def test_a_trim_is_owed_until_the_next_full_collection() -> None:
    """After a wave, the heap is trimmed once more when the collector next runs in full.

    A full collection frees the interpreter's free lists and any cycles
    left, megabytes after ten thousand sessions, which a trim made before
    it could not give back.
    """
    from mnet_twisted import heap

    heap.release_after_next_full_collection()
    assert heap._after_full_collection.owed
    gc.collect(0)
    gc.collect(1)
    assert heap._after_full_collection.owed
    gc.collect()
    assert not heap._after_full_collection.owed
    heap.release_after_next_full_collection()
    heap.release_after_next_full_collection()
    assert gc.callbacks.count(heap._after_full_collection.collected) == 1
    gc.collect()


@pytest_twisted.ensureDeferred
async def test_the_port_timer_is_due_at_the_cores_deadline_after_every_drain(mnet) -> None:  # type: ignore[no-untyped-def]
    """The port's one DelayedCall is re-armed only when the core's deadline moved.

    ``_armTimer`` remembers the deadline it set instead of asking the call;
    between echoes, after the last one, and once the session is gone, the
    call must still be due exactly when the core next needs it (or absent).
    """
    port = await mnet.listen(Factory.forProtocol(_Echo))
    protocol, demux = port.protocol, port.protocol.demux

    def check() -> None:
        deadline = demux.next_deadline()
        assert protocol._timerAt == deadline
        call, fine = protocol._timerCall, protocol._fineTimer
        if deadline is None:
            assert call is None and not (fine is not None and fine.armed)
        elif protocol._fineAvailable:
            # The fine timer alone waits: the reactor holds no call of ours.
            assert call is None and fine is not None and fine.armed
        else:
            assert call is not None and call.active()
            # Set relative to the drain's clock reading: equal within that delay.
            assert abs(call.getTime() - deadline) < 0.05

    client = await mnet.connect(port, Factory.forProtocol(lambda: _PingPong(50)))
    for _ in range(5):
        await mnet.sleep(0.001)
        check()
    await mnet.within(client.done)
    check()
    client.transport.loseConnection()
    await mnet.waitFor(lambda: len(demux) == 0, seconds=30)
    check()
    assert protocol._timerCall is None
