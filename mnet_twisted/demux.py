"""
All MNET sessions of one UDP socket, sans-IO.

The demultiplexer routes each datagram to its session by (peer address, peer
tag), answers strangers statelessly (COOKIE, COOKIE-ACK, ABORT or silence, as
the routing table in ``docs/design.md`` says), and keeps one deadline heap for
all its sessions so the event loop needs a single timer however many
sessions there are.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from . import wire
from .config import ListenerLimits, SessionConfig
from .cookie import CookieMinter, CookieVerdict
from .counts import Counts
from .events import Event
from .peerprogress import PeerProgress
from .ratelimit import ReplyLimiter
from .recvbuf import SharedBudget
from .seqnum import unwrap
from .session import Session, SessionState
from .trace import SessionTracer
from .wire import ABORT_TYPE, COOKIE_ECHO_TYPE, COOKIE_TYPE, DATA_TYPE, INIT_TYPE

#: INITs and COOKIE-ECHOs taken per drain (one read batch, in the adapter).
HANDSHAKES_PER_DRAIN = 1024
#: Per-session tables that never held this many sessions are not rebuilt.
SHRINK_TABLES_FROM = 1024
#: Superseded entries the deadline heap may hold beyond as many as are live.
STALE_DEADLINES_KEPT = 64


def table_oversized(held: int, peak: int) -> bool:
    """Whether a per-session table that held ``peak`` and holds ``held`` should be rebuilt.

    A dict never gives back the room it grew to: after ten thousand
    sessions closed, the empty tables would still hold their memory (and
    keep the C heap from shrinking).  Rebuilt once the sessions fall to an
    eighth of the peak, the copying costs O(1) per session.
    """
    return peak >= SHRINK_TABLES_FROM and held * 8 <= peak


def shrink_in_place(table: dict[Any, Any]) -> None:
    """Give ``table`` storage for the entries it holds now, keeping the dict itself.

    A new dict made while sessions live would sit in a memory arena of
    theirs and keep it from going back once they close (docs/scaling.md).
    """
    entries = dict(table)
    table.clear()
    table.update(entries)


__all__ = ["Demultiplexer"]

#: (An Enum member read off its class costs a call's worth: see session.py.)
_CLOSED = SessionState.CLOSED

Address = tuple[str, int]
_Key = tuple[Address, bytes]


class Demultiplexer:
    """Routes datagrams to sessions and collects what they want to send."""

    def __init__(
        self,
        *,
        local_port: int,
        cookies: CookieMinter | None = None,
        config: SessionConfig | None = None,
        accepting: bool = False,
        random_bytes: Callable[[int], bytes] = os.urandom,
        limits: ListenerLimits | None = None,
        tracer_factory: Callable[[Session, float], SessionTracer | None] | None = None,
    ) -> None:
        self.local_port = local_port
        self.config = config if config is not None else SessionConfig()
        self.limits = limits if limits is not None else ListenerLimits()
        #: Called with each new session and the time: its packet tracer, or None.
        self.tracer_factory = tracer_factory
        #: Out-of-order bytes held by all sessions together.
        self.out_of_order = SharedBudget(self.limits.out_of_order_budget)
        #: Accepted sessions open now, in all and by peer IP address.
        self._accepted_open = 0
        self._accepted_by_source: dict[str, int] = {}
        #: INIT and COOKIE-ECHO datagrams waiting for the drain (see receive_datagram).
        self._handshakes: list[tuple[bytes, Address, float]] = []
        #: Each container that a drain takes whole and starts afresh has a
        #: spare, emptied after use, that takes its place: they are made
        #: once, with the listener.  One made during a wave of sessions would
        #: keep a memory arena of that wave from going back to the system
        #: after it (docs/scaling.md), and it costs an allocation per drain.
        self._handshakes_spare: list[tuple[bytes, Address, float]] = []
        #: The counters read as the properties below (see ``after_wave``).
        self.counts = Counts(
            "handshakes_dropped",
            "sessions_refused",
            "sessions_accepted",
            "cookies_rejected",
            "aborts_sent",
            "acks_passed_over",
            "timers_run",
        )
        self._counts = self.counts.live
        #: Whether a limit turned something away since the adapter last
        #: looked: a flag it can read on every drain, where asking for the
        #: counts costs several calls.
        self.limits_newly_hit = False
        #: Stateless replies (COOKIE, and ABORT to strangers) within their rates.
        limits = self.limits
        self._cookie_replies = ReplyLimiter(limits.cookie_rate, limits.cookie_rate_per_source)
        self._abort_replies = ReplyLimiter(limits.abort_rate, limits.abort_rate_per_source)
        self.cookies = cookies if cookies is not None else CookieMinter.random(random_bytes)
        #: Whether a valid handshake from a stranger creates a session.
        self.accepting = accepting
        self._random_bytes = random_bytes
        #: Sessions by the tag their peer writes in every packet.
        self._by_peer_tag: dict[_Key, Session] = {}
        #: Sessions by the tag we write: how a connector finds its COOKIE, and
        #: how anyone finds an ABORT that echoes our own tag back.
        self._by_local_tag: dict[_Key, Session] = {}
        #: Sessions not closed yet (an ordered set).
        self._open: dict[Session, None] = {}
        #: What the open sessions with each peer address know together.
        self._peers: dict[Address, PeerProgress] = {}
        self._sessions: dict[Session, None] = {}
        self._with_output: dict[Session, None] = {}
        self._with_output_spare: dict[Session, None] = {}
        #: Sessions that may hold an ack until their answers are sent.
        self._holding: list[Session] = []
        #: Taken from the end: the first key of a dict whose front was
        #: deleted is found by walking the holes (quadratic over a large
        #: batch), while popping the last leaves none.
        self._with_events: dict[Session, None] = {}
        self._stateless: list[tuple[bytes, Address]] = []
        self._heap: list[tuple[float, int, Session]] = []
        self._scheduled: dict[Session, float] = {}
        #: Sessions drained since their deadline was last taken: it is taken
        #: when a deadline is next asked for, after the datagrams have left.
        self._unscheduled: dict[Session, float | None] = {}
        self._unscheduled_spare: dict[Session, float | None] = {}
        self._tiebreak = itertools.count()
        #: The most sessions the tables have held since they were last rebuilt.
        self._tables_peak = 0

    # Plain properties, not counts.count_property: the compiled build
    # (setup.py) takes only attributes its class body declares.
    @property
    def handshakes_dropped(self) -> int:
        """Handshakes dropped unread, over a drain's share."""
        return self.counts["handshakes_dropped"]

    @property
    def sessions_refused(self) -> int:
        """Handshakes refused: a limit was reached."""
        return self.counts["sessions_refused"]

    @property
    def sessions_accepted(self) -> int:
        """Sessions accepted."""
        return self.counts["sessions_accepted"]

    @property
    def cookies_rejected(self) -> int:
        """COOKIE-ECHOs rejected (forged or expired)."""
        return self.counts["cookies_rejected"]

    @property
    def aborts_sent(self) -> int:
        """ABORTs sent to strangers."""
        return self.counts["aborts_sent"]

    @property
    def acks_passed_over(self) -> int:
        """Pure acks of a batch passed over: a later one in it acks more (receive_batch)."""
        return self.counts["acks_passed_over"]

    @property
    def timers_run(self) -> int:
        """Deadlines acted on: each is one session's ``handle_timer`` call."""
        return self.counts["timers_run"]

    @property
    def replies_limited(self) -> int:
        """Stateless replies left unsent because their rate was exceeded."""
        return self._cookie_replies.limited + self._abort_replies.limited

    def after_wave(self, now: float) -> None:
        """A wave of sessions is over: let go of the numbers and state made during it.

        The counts fold into their arrays, and the rate limits forget the
        sources whose buckets refilled (``mnet_twisted.counts``).
        """
        self.counts.fold()
        self._cookie_replies.forget_full(now)
        self._abort_replies.forget_full(now)

    def __len__(self) -> int:
        """Sessions still known, including closed ones lingering after a clean close."""
        return len(self._sessions)

    @property
    def open_sessions(self) -> int:
        """Sessions not closed yet (lingering ones excluded)."""
        return len(self._open)

    # ------------------------------------------------------------------
    # Inputs

    def rotate_cookie_secret(self, secret: bytes, now: float) -> None:
        """Mint cookies under ``secret``; accept the old secret's for a cookie lifetime.

        Raises ``ValueError`` (and changes nothing) if ``secret`` is too short.
        """
        self.cookies.rotate(secret, now=now, grace=self.config.cookie_lifetime)

    def connect(
        self, address: Address, now: float, config: SessionConfig | None = None
    ) -> Session:
        """Start a connection to the listener at ``address``; INIT leaves at the next drain."""
        tag = self._fresh_tag(address)
        session = Session(
            peer_address=address,
            local_tag=tag,
            peer_tag=None,
            is_connector=True,
            config=config if config is not None else self.config,
            now=now,
            notify=self._touch,
            peer_progress=self._peer_progress(address),
        )
        if self.tracer_factory is not None:
            session.tracer = self.tracer_factory(session, now)
        self._sessions[session] = None
        self._open[session] = None
        self._by_local_tag[(address, tag)] = session
        session.start(now)
        self._touch(session)
        return session

    def receive_datagram(self, data: bytes, address: Address, now: float) -> bool:
        """Handle one datagram from ``address``.  Never raises.

        Returns whether what it left to send should go before anything else
        is read: the ack of a segment that filled a hole, which the peer's
        sender waits for to learn where the next hole is.
        """
        if len(data) < 4:
            return False
        kind = data[0]
        tag = bytes(data[1:4])
        if kind == DATA_TYPE:
            # The hot path: most datagrams are DATA of a known session.
            session = self._by_peer_tag.get((address, tag))
            if session is None:
                session = self._after_handshakes(address, tag)
                if session is None:
                    self._reply_abort(tag, address, now)
                    return False
            session.receive_datagram(data, now)
            if session.held_ack is not None:
                holding = self._holding
                # (A batch's datagrams of one session come in a row: each
                # takes the last one's held ack, and the session is listed once.)
                if not holding or holding[-1] is not session:
                    holding.append(session)
            if session.ack_urgent:
                session.ack_urgent = False
                return True
            return False
        if kind in (INIT_TYPE, COOKIE_ECHO_TYPE):
            # Sessions first: strangers' handshakes wait until the drain, after
            # the batch's session traffic, and beyond a batch's share they are
            # dropped unread (a real connector retries).
            if len(self._handshakes) < HANDSHAKES_PER_DRAIN:
                self._handshakes.append((data, address, now))
            else:
                self._limit_hit("handshakes_dropped")
        elif kind == COOKIE_TYPE:
            self._on_cookie(data, address, now)
        else:
            session = self._by_peer_tag.get((address, tag)) or self._after_handshakes(address, tag)
            if kind == ABORT_TYPE:
                if session is None:
                    session = self._by_local_tag.get((address, tag))
                if session is not None:
                    session.receive_datagram(data, now)
            elif session is not None:
                session.receive_datagram(data, now)
            else:
                self._reply_abort(tag, address, now)
        return False

    def receive_batch(
        self,
        datagrams: list[bytes],
        address: Address,
        now: float,
        send_urgent: Callable[[], object] | None = None,
    ) -> None:
        """Several datagrams from ``address`` that arrived together (a GRO read).

        ``send_urgent``, if given, is called as soon as one of them leaves
        output that should go before the rest are read (the ack of a filled
        hole, see ``receive_datagram``); it should send ``datagrams_to_send``
        then.  Without it, that output waits for the drain as any other.

        In a run of pure acks of one session that only ever grow, the ones
        between the first and the last are skipped: each carries nothing
        the next does not, and an ack burst is mostly such acks.  The first
        is kept (it may be a duplicate for the sender) and so is every
        repeated value: each duplicate says one more segment arrived.  Copies
        of one pure ack in a row (a peer reporting segments past a hole) go
        to their session together after the first.
        """
        # A run of duplicate acks is one datagram many times over: compare
        # the bytes, and parse only where they change.
        acks: list[_AckKey | None] = []
        previous: bytes | None = None
        key: _AckKey | None = None
        for data in datagrams:
            if data != previous:
                previous, key = data, wire.parse_pure_ack(data)
            acks.append(key)
        last = len(datagrams) - 1
        index = 0
        while index <= last:
            data, key = datagrams[index], acks[index]
            if 0 < index < last and _grows(acks[index - 1], key) and _grows(key, acks[index + 1]):
                self._counts["acks_passed_over"] += 1
                index += 1
                continue
            if self.receive_datagram(data, address, now) and send_urgent is not None:
                send_urgent()
            copies = 0
            while (
                key is not None and index + copies < last and datagrams[index + copies + 1] == data
            ):
                copies += 1
            session = self._by_peer_tag.get((address, data[1:4])) if copies else None
            if session is not None:
                session.receive_repeated_ack(data, copies, now)
            else:  # none, or a stranger's copies: each answered as one alone
                for _ in range(copies):
                    self.receive_datagram(data, address, now)
            index += copies + 1

    def destination_unreachable(self, address: Address, now: float) -> None:
        """The network says nothing listens at ``address``: refuse our attempts there."""
        for session in list(self._sessions):
            if session.is_connector and session.peer_address == address:
                session.destination_unreachable(now)

    def datagram_refused(self, datagram: bytes, address: Address, now: float) -> None:
        """The local stack would not send ``datagram`` to ``address`` (too big for it)."""
        session = self._by_local_tag.get((address, bytes(datagram[1:4])))
        if session is not None:
            session.datagram_refused(datagram)

    def take_held_acks(self) -> bool:
        """Act on the acks sessions held back while their answers went out.

        Call it right after sending what ``datagrams_to_send`` returned: a
        DATA packet's ack waits for that when it can (``Session.take_held_ack``),
        so that an echo's answer leaves without its bookkeeping.  True means
        it left more to drain (events or datagrams), in the usual order.
        Timers and the next deadline take held acks first by themselves, and
        a session takes its own before its next datagram.
        """
        holding = self._holding
        if not holding:
            return False
        self._holding = []
        more = False
        for session in holding:
            if session.take_held_ack():
                more = True
                self._touch(session)
            if session in self._sessions:
                self._unscheduled[session] = None  # its deadline moved
        return more

    def handle_timers(self, now: float) -> None:
        """Let every session whose deadline has passed act on it."""
        self.take_held_acks()
        drained = self._schedule_drained()
        if drained is not None:
            drained.clear()
        # self._heap each time: rescheduling may rebuild it.
        while self._heap and self._heap[0][0] <= now:
            deadline, _, session = heapq.heappop(self._heap)
            if self._scheduled.get(session) != deadline:
                continue  # superseded by an earlier entry, or forgotten
            del self._scheduled[session]
            actual = session.next_deadline()
            if actual is None:
                continue
            if actual > now:
                self._schedule(session, actual)
            else:
                session.handle_timer(now)
                self._counts["timers_run"] += 1
                self._touch(session)

    def abort_all(self, now: float) -> None:
        """Abort every session, e.g. because the socket is going away."""
        for session in list(self._sessions):
            session.abort(now)

    # ------------------------------------------------------------------
    # Drains

    def _after_handshakes(self, address: Address, tag: bytes) -> Session | None:
        """The session of (address, tag) once this batch's handshakes are taken.

        Handshakes wait for the end of a read batch, but early data's DATA (or
        an early session's ABORT or SHUTDOWN) may come right behind the
        COOKIE-ECHO that makes its session.
        """
        if not self._handshakes:
            return None
        self._take_handshakes()
        return self._by_peer_tag.get((address, tag))

    def _take_handshakes(self) -> None:
        handshakes = self._handshakes
        self._handshakes, self._handshakes_spare = self._handshakes_spare, handshakes
        for data, address, now in handshakes:
            if data[0] == INIT_TYPE:
                self._on_init(data, address, now)
            else:
                self._on_cookie_echo(data, address, now)
        handshakes.clear()

    def next_event(self) -> tuple[Session, Event] | None:
        if self._handshakes:
            self._take_handshakes()
        with_events = self._with_events
        while with_events:
            session = next(reversed(with_events))
            event = session.next_event()
            if event is not None:
                return session, event
            with_events.popitem()
        return None

    @property
    def replies_waiting(self) -> bool:
        """Whether handshakes or stateless replies wait (see ``handshake_replies``)."""
        return bool(self._handshakes or self._stateless)

    def handshake_replies(self) -> list[tuple[bytes, Address]]:
        """Take the batch's handshakes now; returns the stateless replies waiting.

        An adapter sends these before it hands events to the application:
        a connector's COOKIE-ACK need not wait while the accepting side's
        protocol is built and told of the connection, as a TCP handshake
        completes in the kernel before ``accept()``.  ``datagrams_to_send``
        returns these too, then what the sessions have.
        """
        if self._handshakes:
            self._take_handshakes()
        out = self._stateless[:]  # the caller's to keep
        self._stateless.clear()
        return out

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.handshake_replies()  # first, and the caller's to keep
        sessions = self._with_output
        self._with_output, self._with_output_spare = self._with_output_spare, sessions
        for session in sessions:
            address = session.peer_address
            for datagram in session.datagrams_to_send(now):
                out.append((datagram, address))
            if session.forgettable:
                self._forget(session)
            else:
                self._unscheduled[session] = None
        sessions.clear()
        return out

    def _schedule_drained(self) -> dict[Session, float | None] | None:
        """Register the deadlines of the sessions touched since; returns them, if any."""
        drained = self._unscheduled
        if not drained:
            return None
        # The caller empties it once it has used the answers.
        self._unscheduled, self._unscheduled_spare = self._unscheduled_spare, drained
        for session in drained:  # it carries the answers back
            deadline = drained[session] = session.next_deadline()
            if deadline is not None:
                self._schedule(session, deadline)
        return drained

    def next_deadline(self) -> float | None:
        self.take_held_acks()
        fresh = self._schedule_drained()
        try:
            heap, scheduled = self._heap, self._scheduled
            while heap:
                deadline, _, session = heap[0]
                if scheduled.get(session) != deadline:
                    heapq.heappop(heap)  # superseded, or forgotten
                    continue
                if fresh is not None and session in fresh:
                    actual = fresh[session]
                else:
                    actual = session.next_deadline()
                if actual == deadline:
                    return deadline
                # The first deadline moved later (each ack pushes a probe
                # timeout back): answered with the registered one, the adapter
                # would wake for nothing, which costs it more than this.
                if actual is None:
                    heapq.heappop(heap)
                    del scheduled[session]
                    continue
                # Moved, not gone: re-filed in one heap operation (_schedule's
                # work, for an entry known to be the first and current).
                scheduled[session] = actual
                heapq.heapreplace(heap, (actual, next(self._tiebreak), session))
                if heap[0][2] is session:
                    return actual
            return None
        finally:
            if fresh is not None:
                fresh.clear()

    # ------------------------------------------------------------------
    # The handshake, answered without state until the cookie comes back

    def _on_init(self, data: bytes, address: Address, now: float) -> None:
        init = _parse_as(wire.Init, data)
        if init is None:
            return
        if init.version != wire.VERSION or not self.accepting:
            self._reply_abort(init.tag, address, now)
            return
        if self._over_limits(address):
            # Full now: refuse at once rather than a round trip later, at
            # the echo (which checks again: the cookie may come back when a
            # session has left, or after others took the room).
            self._limit_hit("sessions_refused")
            self._reply_abort(init.tag, address, now)
            return
        if not self._cookie_replies.allow(address[0], now):
            self._limit_hit(None)
            return  # before the MACs: a flood costs little beyond this check
        listener_tag = self.cookies.listener_tag(address, init.tag)
        expiration = (int(now) + self.config.cookie_lifetime) & 0xFFFFFFFF
        mac = self.cookies.mint(
            listener_tag=listener_tag,
            connector_tag=init.tag,
            version=init.version,
            expiration=expiration,
            connector=address,
            local_port=self.local_port,
        )
        self._reply(wire.Cookie(listener_tag, init.tag, init.version, expiration, mac), address)

    def _on_cookie_echo(self, data: bytes, address: Address, now: float) -> None:
        echo = _parse_as(wire.CookieEcho, data)
        if echo is None:
            return
        verdict = self.cookies.check(echo, connector=address, local_port=self.local_port, now=now)
        if verdict is CookieVerdict.FORGED:
            self._counts["cookies_rejected"] += 1
            return
        existing = self._by_peer_tag.get((address, echo.connector_tag))
        if existing is not None and not existing.closed:
            if existing.local_tag == echo.listener_tag and not existing.is_connector:
                # Our COOKIE-ACK was lost; the session already exists.
                self._reply(wire.CookieAck(echo.listener_tag), address)
            return
        if verdict is CookieVerdict.EXPIRED:
            self._counts["cookies_rejected"] += 1
        if verdict is CookieVerdict.EXPIRED or not self.accepting:
            self._reply_abort(echo.connector_tag, address, now)
            return
        if self._over_limits(address):
            self._limit_hit("sessions_refused")
            self._reply_abort(echo.connector_tag, address, now)
            return
        if existing is not None:
            self._forget(existing)  # a lingering predecessor; the tag is reused
        session = Session(
            peer_address=address,
            local_tag=echo.listener_tag,
            peer_tag=echo.connector_tag,
            is_connector=False,
            config=self.config,
            now=now,
            notify=self._touch,
            out_of_order_budget=self.out_of_order,
            peer_progress=self._peer_progress(address),
        )
        if self.tracer_factory is not None:
            session.tracer = self.tracer_factory(session, now)
        self._sessions[session] = None
        self._open[session] = None
        self._accepted_open += 1
        self._counts["sessions_accepted"] += 1
        source = address[0]
        self._accepted_by_source[source] = self._accepted_by_source.get(source, 0) + 1
        self._by_peer_tag[(address, echo.connector_tag)] = session
        self._by_local_tag.setdefault((address, echo.listener_tag), session)
        self._touch(session)
        self._reply(wire.CookieAck(echo.listener_tag), address)

    def _on_cookie(self, data: bytes, address: Address, now: float) -> None:
        cookie = _parse_as(wire.Cookie, data)
        if cookie is None:
            return
        session = self._by_local_tag.get((address, cookie.connector_tag))
        if session is None or session.state is not SessionState.COOKIE_WAIT:
            return  # unsolicited, or a duplicate: answering could reflect traffic
        key = (address, cookie.listener_tag)
        if self._by_peer_tag.get(key, session) is not session:
            # That listener tag already names another of our sessions: it is
            # derived from our tag, and 3 bytes collide among thousands of
            # sessions to one listener.  The handshake timer's next INIT
            # goes out under a fresh tag of ours.
            del self._by_local_tag[(address, session.local_tag)]
            session.local_tag = self._fresh_tag(address)
            self._by_local_tag[(address, session.local_tag)] = session
            return
        previous = session.peer_tag
        session.receive_datagram(data, now)
        if previous is not None and previous != session.peer_tag:
            # The listener restarted with another secret between our INITs.
            self._by_peer_tag.pop((address, previous), None)
        self._by_peer_tag[key] = session

    # ------------------------------------------------------------------
    # Bookkeeping

    def _fresh_tag(self, address: Address) -> bytes:
        """A tag none of our sessions with ``address`` writes."""
        tag = self._random_bytes(3)
        while (address, tag) in self._by_local_tag:
            tag = self._random_bytes(3)
        return tag

    def _reply_abort(self, tag: bytes, address: Address, now: float) -> None:
        """ABORT to a stranger, within the rate the limits allow (else: silence)."""
        if self._abort_replies.allow(address[0], now):
            self._counts["aborts_sent"] += 1
            self._reply(wire.Abort(tag), address)
        else:
            self._limit_hit(None)

    def _limit_hit(self, counter: str | None) -> None:
        """A limit turned something away: count it (``counter``, if its own), flag it."""
        if counter is not None:
            self._counts[counter] += 1
        self.limits_newly_hit = True

    def _reply(self, packet: wire.Packet, address: Address) -> None:
        self._stateless.append((packet.to_bytes(), address))

    def _touch(self, session: Session) -> None:
        self._with_output[session] = None
        self._with_events[session] = None
        if session.state is _CLOSED:  # session.closed, without the call
            # Closing always notifies, so this keeps the count of open
            # sessions exact without walking every lingering one.
            self._closed(session)

    def _schedule(self, session: Session, deadline: float) -> None:
        registered = self._scheduled.get(session)
        if registered is None or deadline < registered:
            self._scheduled[session] = deadline
            heapq.heappush(self._heap, (deadline, next(self._tiebreak), session))

    def _drop_stale_deadlines(self) -> None:
        """Rebuild the deadline heap once most of its entries are superseded.

        Entries are left in place when a deadline moves earlier or a session
        is forgotten, and each holds its session: a closed session's memory
        would stay until its old deadline (a keep-alive, seconds away) came
        up.  Checked when a session is forgotten and rebuilt when they are
        over half, the heap costs O(1) per entry.  (Entries superseded while
        sessions live are popped as their time comes, a little at a time.)
        """
        heap = self._heap
        if len(heap) <= 2 * len(self._scheduled) + STALE_DEADLINES_KEPT:
            return
        scheduled = self._scheduled
        heap[:] = [entry for entry in heap if scheduled.get(entry[2]) == entry[0]]
        heapq.heapify(heap)

    def _closed(self, session: Session) -> None:
        """``session`` is no longer open (closed, or forgotten)."""
        if session not in self._open:
            return
        del self._open[session]
        progress = self._peers[session.peer_address]
        progress.sessions -= 1
        if not progress.sessions:
            del self._peers[session.peer_address]
        if not session.is_connector:
            self._accepted_open -= 1
            source = session.peer_address[0]
            left = self._accepted_by_source[source] - 1
            if left:
                self._accepted_by_source[source] = left
            else:
                del self._accepted_by_source[source]

    def _peer_progress(self, address: Address) -> PeerProgress:
        """The record shared by the open sessions with ``address`` (one more uses it)."""
        progress = self._peers.get(address)
        if progress is None:
            progress = self._peers[address] = PeerProgress()
        progress.sessions += 1
        return progress

    def _over_limits(self, address: Address) -> bool:
        """Whether accepting one more session from ``address`` would break a limit."""
        limits = self.limits
        if limits.max_sessions is not None and self._accepted_open >= limits.max_sessions:
            return True
        per_source = limits.max_sessions_per_source
        return per_source is not None and self._accepted_by_source.get(address[0], 0) >= per_source

    def _forget(self, session: Session) -> None:
        held = len(self._sessions)
        if held > self._tables_peak:
            self._tables_peak = held
        self._unscheduled.pop(session, None)
        self._sessions.pop(session, None)
        self._closed(session)
        self._scheduled.pop(session, None)
        address = session.peer_address
        for table, tag in (
            (self._by_peer_tag, session.peer_tag),
            (self._by_local_tag, session.local_tag),
        ):
            if tag is not None and table.get((address, tag)) is session:
                del table[(address, tag)]
        if not self._sessions:
            self._empty_tables()
        elif table_oversized(held, self._tables_peak):
            self._shrink_tables()
        self._drop_stale_deadlines()

    def _per_session_tables(self) -> tuple[dict[Any, Any], ...]:
        return (
            self._by_peer_tag,
            self._by_local_tag,
            self._open,
            self._sessions,
            self._with_events,
            self._scheduled,
            self._unscheduled,
        )

    def _shrink_tables(self) -> None:
        """Rebuild the per-session tables at their present size (see ``table_oversized``).

        In place: each table stays the object made with the listener (see
        ``_handshakes_spare``), and only its storage is made anew.
        """
        for table in self._per_session_tables():
            shrink_in_place(table)
        self._tables_peak = len(self._sessions)

    def _empty_tables(self) -> None:
        """The last session is gone: give back the storage of every table it used.

        A dict or list keeps its storage when its entries are removed one
        by one; storage made during a wave of sessions would keep that
        wave's memory from going back to the system.
        """
        for table in (*self._per_session_tables(), self._peers, self._accepted_by_source):
            if not table:  # (an event of the last one may still wait its turn)
                table.clear()
        if not self._scheduled:
            self._heap.clear()  # only superseded entries were left
        self._tables_peak = 0


#: What identifies a pure ack for batching: (sender's tag, its sequence
#: field, the acknowledgement).
_AckKey = tuple[bytes, int, int]


def _grows(earlier: _AckKey | None, later: _AckKey | None) -> bool:
    """Whether both are pure acks of one sender in one state, ``later`` acking more."""
    if earlier is None or later is None or earlier[:2] != later[:2]:
        return False
    return unwrap(later[2], earlier[2]) > earlier[2]  # serial-number "later than"


_P = TypeVar("_P", wire.Init, wire.Cookie, wire.CookieEcho)


def _parse_as(kind: type[_P], data: bytes) -> _P | None:
    """``data`` as a packet of ``kind`` (its type byte was checked), or None if malformed."""
    try:
        packet = wire.parse(data)
    except wire.MalformedPacket:
        return None
    return packet if isinstance(packet, kind) else None
