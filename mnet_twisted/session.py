"""
One MNET session as a sans-IO state machine.

A :class:`Session` is driven by its demultiplexer (``demux.Demultiplexer``:
datagrams, timers) and by the application (``send``, ``close``, ``abort``,
``pause_reading``).  It hands back datagrams (``datagrams_to_send``), events
(``next_event``) and one deadline (``next_deadline``).  It never reads a clock:
every call that depends on time takes ``now``.  The state table is in
``docs/design.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import wire
from .config import SessionConfig
from .errors import SessionClosedError
from .events import Closed, CloseReason, DataReceived, Established, Event, SendBufferLow
from .peerprogress import PeerProgress
from .receiver import ACK_FILLED, ACK_LATER, StreamReceiver
from .recvbuf import SharedBudget
from .sender import Segment, StreamSender
from .seqnum import WIRE_MASK, wrap
from .sizeprobe import ProbeDatagram
from .trace import SessionTracer

__all__ = ["ProbeDatagram", "Session", "SessionState", "SessionStats"]

Address = tuple[str, int]


class SessionState(Enum):
    COOKIE_WAIT = "cookie-wait"
    COOKIE_ECHOED = "cookie-echoed"
    ESTABLISHED = "established"
    SHUTDOWN_PENDING = "shutdown-pending"
    SHUTDOWN_SENT = "shutdown-sent"
    SHUTDOWN_RECEIVED = "shutdown-received"
    SHUTDOWN_ACK_SENT = "shutdown-ack-sent"
    CLOSED = "closed"


_S = SessionState
# Reading an Enum member off its class costs as much as a function call
# (about 75 ns on CPython 3.11): the states every packet asks for are
# module constants.
_CLOSED = _S.CLOSED
_ESTABLISHED = _S.ESTABLISHED
# Tuples, not sets: membership by identity, without hashing an Enum member
# (a Python-level call) on every packet.
_HANDSHAKING = (_S.COOKIE_WAIT, _S.COOKIE_ECHOED)
_NOT_EARLY, _EARLY_SENDING, _EARLY_HELD = 0, 1, 2
#: States in which our own stream may still carry data to the peer.
_SENDING = (_ESTABLISHED, _S.SHUTDOWN_PENDING, _S.SHUTDOWN_RECEIVED)
#: A peer's SHUTDOWN ends our stream too (MNET has no half-close): what was
#: written before it still goes, nothing after it.
_WRITABLE = (_ESTABLISHED, _S.COOKIE_WAIT, _S.COOKIE_ECHOED)
#: States in which a SHUTDOWN-ACK from the peer breaks the protocol.
_OPEN = (_ESTABLISHED, _S.SHUTDOWN_PENDING, _S.SHUTDOWN_RECEIVED)

#: The least wait, in seconds, before a SHUTDOWN or SHUTDOWN-ACK goes again
#: (doubling with each try, as the timeout does).  Data needs the round
#: trip's own timeout to keep a window moving; a close does not, and a peer
#: closing thousands of sessions at once answers each late: with the
#: round trip's timeout (about a millisecond on loopback) each session's
#: SHUTDOWN went six times and its SHUTDOWN-ACK thirteen, and most copies
#: reached a session already gone (bench/scale_sessions.py); with 100 ms,
#: closing 10,000 still brought 15,000 copies, with 200 ms 0 to 796 in four
#: runs of five.  A lost one costs a close this long, as a lost FIN costs TCP
#: (which waits at least 200 ms to resend it).
CONTROL_RETRY_FLOOR = 0.2
_CONTROL_FLOOR_DOUBLINGS = 4


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of one session's counters and state (``Session.stats()``)."""

    #: ``SessionState`` value, e.g. ``"established"``.
    state: str
    #: Stream bytes sent at least once, and acknowledged by the peer.
    bytes_sent: int
    bytes_acknowledged: int
    #: In-order stream bytes received (delivered or waiting to be read).
    bytes_received: int
    #: Datagrams of this session, every kind, retransmissions included.
    datagrams_sent: int
    datagrams_received: int
    #: DATA segments sent again.
    retransmissions: int
    #: DATA segments received that brought nothing new, or came ahead of a hole.
    duplicate_segments: int
    out_of_order_segments: int
    #: Seconds; None before the first sample.
    smoothed_rtt: float | None
    rtt_variance: float
    #: Bytes.
    congestion_window: int
    #: The largest datagram in use: the proven path size.
    datagram_size: int
    #: Bytes written and not yet acknowledged; bytes held for the application.
    send_buffer: int
    receive_buffer: int


class _PendingData:
    """Received bytes not yet taken by the application, coalesced."""

    __slots__ = ("chunks", "size")

    def __init__(self, chunks: list[bytes], size: int) -> None:
        self.chunks = chunks  # (the caller's list, handed over)
        self.size = size


class Session:
    """The state of one MNET session, as seen from this end."""

    __slots__ = (
        "_ack_pending",
        "_close_requested",
        "_connect_deadline",
        "_control_retry_at",
        "_cookie_echo",
        "_early",
        "_early_aborts",
        "_echo_tries",
        "_events",
        "_handshake_interval",
        "_handshake_retried",
        "_handshake_retry_at",
        "_handshake_sent_at",
        "_held_ack_at",
        "_last_heard",
        "_linger_until",
        "_notify",
        "_outbox",
        "_probe_retry_at",
        "_pure_ack_bytes",
        "_pure_ack_received",
        "_pure_ack_sent",
        "_reading_paused",
        "_receiver",
        "_sender",
        "_unanswered_timeouts",
        "_unread",
        "_want_send_buffer_low",
        "ack_urgent",
        "bytes_received",
        "config",
        "datagrams_received",
        "datagrams_sent",
        "held_ack",
        "is_connector",
        "local_tag",
        "peer_address",
        "peer_tag",
        "state",
        "tracer",
    )

    def __init__(
        self,
        *,
        peer_address: Address,
        local_tag: bytes,
        peer_tag: bytes | None,
        is_connector: bool,
        config: SessionConfig,
        now: float,
        notify: Callable[[Session], None],
        out_of_order_budget: SharedBudget | None = None,
        peer_progress: PeerProgress | None = None,
    ) -> None:
        self.peer_address = peer_address
        self.local_tag = local_tag
        self.peer_tag = peer_tag
        self.is_connector = is_connector
        self.config = config
        self._notify = notify
        self.state = _S.COOKIE_WAIT if is_connector else _ESTABLISHED

        self._sender = StreamSender(config, peer_progress)
        self._receiver = StreamReceiver(
            config.stream_origin, config.receive_buffer_limit, out_of_order_budget
        )
        self._want_send_buffer_low = False
        #: The ack field of a DATA packet not acted on yet, held until the
        #: reply to its data is sent (see ``take_held_ack``).
        self.held_ack: int | None = None
        self._held_ack_at = 0.0
        self._close_requested = False
        #: Received bytes queued as events the application has not taken.
        self._unread = 0
        self._reading_paused = False
        self._ack_pending = False
        #: An ack in the outbox should leave before the rest of the read
        #: batch is taken (the demultiplexer reports and clears it).
        self.ack_urgent = False

        # A list, not a deque: it holds a few items at most (received data
        # coalesces), and an empty deque costs 760 bytes per session.
        self._events: list[Event | _PendingData] = []
        self._outbox: list[bytes] = []
        #: The last pure ack built, and the offsets it carries.
        self._pure_ack_bytes = b""
        self._pure_ack_sent = self._pure_ack_received = -1

        self._last_heard = now
        self._unanswered_timeouts = 0
        # Handshake (connector only).
        self._connect_deadline = now + config.connect_timeout
        self._handshake_retry_at: float | None = None
        self._handshake_interval = config.handshake_retry_interval
        self._handshake_sent_at = now
        self._handshake_retried = False
        self._echo_tries = 0
        self._cookie_echo = b""
        #: Early data (``config.early_data``): _NOT_EARLY, or established at
        #: the COOKIE and sending (_EARLY_SENDING) or holding data back
        #: after an ABORT that may have answered it (_EARLY_HELD).
        self._early = _NOT_EARLY
        #: ABORTs taken as answers to early DATA (at most one per DATA
        #: datagram sent), told so from one answering the echo.
        self._early_aborts = 0
        # Shutdown: SHUTDOWN / SHUTDOWN-ACK retransmission, then linger.
        self._control_retry_at: float | None = None
        self._linger_until: float | None = None
        # Keep-alive: when the outstanding probe is due again.
        self._probe_retry_at: float | None = None

        self.bytes_received = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        #: Set by the owner to record a packet trace (``mnet_twisted.trace``).
        self.tracer: SessionTracer | None = None

        if not is_connector:
            self._events.append(Established())

    # ------------------------------------------------------------------
    # Queries

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def writable(self) -> bool:
        """Whether ``send()`` accepts data now."""
        return self.state in _WRITABLE and not self._close_requested

    @property
    def send_buffer_size(self) -> int:
        """Bytes written but not yet acknowledged (sent or not)."""
        return self._sender.buffered

    @property
    def receive_buffer_size(self) -> int:
        """Bytes held for the application: unread in-order plus out-of-order."""
        return self._unread + self._receiver.held_out_of_order

    @property
    def forgettable(self) -> bool:
        """Whether the demultiplexer may drop this session from its tables."""
        return self.state is _CLOSED and self._linger_until is None

    @property
    def smoothed_rtt(self) -> float | None:
        return self._sender.rtt.smoothed

    @property
    def congestion_window(self) -> int:
        return self._sender.congestion.cwnd

    @property
    def retransmissions(self) -> int:
        return self._sender.retransmissions

    def stats(self) -> SessionStats:
        """A snapshot of this session's counters and state."""
        sender, receiver = self._sender, self._receiver
        origin = self.config.stream_origin
        return SessionStats(
            state=self.state.value,
            bytes_sent=sender.snd_max - origin,
            bytes_acknowledged=sender.acked - origin,
            bytes_received=self.bytes_received,
            datagrams_sent=self.datagrams_sent,
            datagrams_received=self.datagrams_received,
            retransmissions=sender.stats.retransmissions,
            duplicate_segments=receiver.duplicate_segments,
            out_of_order_segments=receiver.out_of_order_segments,
            smoothed_rtt=sender.rtt.smoothed,
            rtt_variance=sender.rtt.variance,
            congestion_window=sender.congestion.cwnd,
            datagram_size=sender.segment_size + wire.DATA_HEADER_SIZE,
            send_buffer=self.send_buffer_size,
            receive_buffer=self.receive_buffer_size,
        )

    def recovery_stats(self) -> dict[str, float]:
        """The sender's loss-recovery counters (see ``sender.RecoveryStats``)."""
        return dataclasses.asdict(self._sender.stats)

    # ------------------------------------------------------------------
    # Application calls

    def start(self, now: float) -> None:
        """Send the first INIT (connector only)."""
        assert self.is_connector and self.state is _S.COOKIE_WAIT
        self._send_init(now)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the peer; it leaves at the next drain."""
        if self._close_requested or self.state not in _WRITABLE:  # not self.writable
            raise SessionClosedError(f"session is {self.state.value}; it takes no more data")
        if data:
            self._sender.write(data)
            self._notify(self)

    def close(self, now: float) -> None:
        """Deliver everything written so far, then close both directions."""
        self.take_held_ack()
        if self._close_requested or self.state not in _HANDSHAKING + _OPEN:
            return
        self._close_requested = True
        if self.state is _ESTABLISHED:
            self.state = _S.SHUTDOWN_PENDING
            self._advance_shutdown(now)
        self._notify(self)

    def abort(self, now: float) -> None:
        """End the session at once; the peer is told with ABORT."""
        if self.state is _CLOSED:
            # Already over, perhaps with its end waiting behind data the
            # application paused: it wants the end now, not the data.
            if self._reading_paused and self._unread:
                self._drop_unread()
                self._notify(self)
            return
        self._send_abort()
        self._terminate(CloseReason.ABORTED_LOCALLY, "aborted by the application", now)

    def destination_unreachable(self, now: float) -> None:
        """The network reported the peer's port unreachable (ICMP, via the socket).

        During the handshake that is a refusal, as TCP reports one; later it
        is ignored, since such reports are easy to spoof and the dead-peer
        rule notices a peer that is really gone.
        """
        if self.state in _HANDSHAKING and self._early == _NOT_EARLY:
            # (With early data the COOKIE has come: the port answered.)
            self._terminate(CloseReason.REFUSED, "the peer's port is unreachable", now)

    def datagram_refused(self, datagram: bytes) -> None:
        """The local stack would not send ``datagram``: a size probe too big for it."""
        if isinstance(datagram, ProbeDatagram) and self._sender.size_probe_refused():
            self._notify(self)

    def pause_reading(self) -> None:
        """Hold received data; past ``receive_buffer_limit`` new data is dropped."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self._events:
            self._notify(self)

    def notify_when_send_buffer_low(self) -> None:
        """Emit one ``SendBufferLow`` once the send buffer is below the low-water mark."""
        self._want_send_buffer_low = True
        self._check_send_buffer_low()

    # ------------------------------------------------------------------
    # Drains

    def next_event(self) -> Event | None:
        if not self._events:
            return None
        head = self._events[0]
        if isinstance(head, _PendingData):
            if self._reading_paused:
                return None
            self._events.pop(0)
            self._unread -= head.size
            return DataReceived(b"".join(head.chunks))
        self._events.pop(0)
        return head

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out = self._outbox
        self._outbox = []
        if self.state in _SENDING or (
            self._early == _EARLY_SENDING and self.state is _S.COOKIE_ECHOED
        ):
            segments = self._sender.transmit(now)
            if segments:
                self._emit(segments, out)
        if self._ack_pending:
            self._ack_pending = False
            out.append(self._pure_ack())
        self.datagrams_sent += len(out)
        if self.tracer is not None:
            self._trace_drain(out, now)
        return out

    def _trace_drain(self, out: list[bytes], now: float) -> None:
        tracer = self.tracer
        assert tracer is not None
        # Metrics change only with what came in or a timer: both end in a drain.
        rtt = self._sender.rtt
        tracer.metrics(now, self._sender.congestion.cwnd, rtt.smoothed, rtt.variance, rtt.minimum)
        for datagram in out:
            tracer.datagram(now, datagram, sent=True)

    def next_deadline(self) -> float | None:
        if self.held_ack is not None and self.take_held_ack():
            self._notify(self)  # (the demultiplexer takes them before asking)
        if self.state is _CLOSED:
            return self._linger_until
        if self.state in _HANDSHAKING:
            retry = self._handshake_retry_at
            handshake = (
                self._connect_deadline if retry is None else min(retry, self._connect_deadline)
            )
            pacing = self._sender.pacing_deadline
            if pacing is not None and self._early == _EARLY_SENDING and pacing < handshake:
                return pacing  # early data the pacer holds back
            return handshake
        earliest = self._sender.deadline
        control = self._control_retry_at
        if control is not None and (earliest is None or control < earliest):
            earliest = control
        keepalive = self._keepalive_deadline()
        if keepalive is not None and (earliest is None or keepalive < earliest):
            earliest = keepalive
        return earliest

    # ------------------------------------------------------------------
    # Inputs from the network and the clock

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """A datagram the demultiplexer routed to this session."""
        if self.held_ack is not None:
            self.take_held_ack()
        self.datagrams_received += 1
        if self.tracer is not None:
            self.tracer.datagram(now, datagram, sent=False)
        fields = wire.parse_data(datagram)
        if fields is not None:
            # The hot path: DATA without building a packet object.
            if self.state is not _CLOSED:
                if self._on_data(*fields, now):
                    self._heard(now)
                self._notify(self)
            return
        try:
            packet = wire.parse(datagram)
        except wire.MalformedPacket:
            return
        if self.state is _CLOSED:
            if isinstance(packet, wire.ShutdownAck) and self._linger_until is not None:
                self._outbox.append(wire.ShutdownComplete(self.local_tag).to_bytes())
                self._notify(self)
            return
        # Well-formed DATA took the path above: this is the rest.
        state, acked = self.state, self._sender.acked
        if isinstance(packet, wire.Cookie):
            self._on_cookie(packet, now)
        elif isinstance(packet, wire.CookieAck):
            if self.state is _S.COOKIE_ECHOED:
                self._establish(now)
        elif isinstance(packet, wire.Shutdown):
            self._on_shutdown(packet, now)
        elif isinstance(packet, wire.ShutdownAck):
            self._on_shutdown_ack(now)
        elif isinstance(packet, wire.ShutdownComplete):
            if self.state is _S.SHUTDOWN_ACK_SENT:
                self._terminate(CloseReason.CLEAN, "", now)
        elif isinstance(packet, wire.Abort):
            self._on_abort(now)
        if self.state is not state or self._sender.acked > acked:
            self._heard(now)  # control packets show life by moving the session on
        self._notify(self)

    def receive_repeated_ack(self, datagram: bytes, copies: int, now: float) -> None:
        """``copies`` more of the pure ack ``datagram``, which ``receive_datagram`` just took.

        A peer sends one for each segment it got past a hole, and the
        sender counts every one; a run of them is taken in one call.
        """
        fields = wire.parse_data(datagram)
        if self.tracer is not None or fields is None or self.state is not _ESTABLISHED:
            for _ in range(copies):
                self.receive_datagram(datagram, now)
            return
        self.datagrams_received += copies
        resend = self._sender.on_repeated_acks(fields[1], copies, now)
        if resend:
            self._emit(resend, self._outbox)
        if self._awaits_no_answer():  # as _on_data judges a duplicate ack
            self._heard(now)
        self._notify(self)

    def _heard(self, now: float) -> None:
        """The peer showed progress: the dead-peer rule starts counting afresh.

        Only progress counts, as TCP gives up once its retransmissions go
        unanswered however much the peer talks: a peer that keeps sending
        acks that acknowledge nothing, or data we cannot take, while ours
        goes unacknowledged, is as good as gone.
        """
        self._last_heard = now
        self._unanswered_timeouts = 0
        self._probe_retry_at = None

    def handle_timer(self, now: float) -> None:
        """Act on whatever deadline has passed."""
        self.take_held_ack()
        if self.state is _CLOSED:
            if self._linger_until is not None and now >= self._linger_until:
                self._linger_until = None
                self._notify(self)
            return
        if self.state in _HANDSHAKING:
            self._handshake_timer(now)
        elif self._peer_is_dead(now):
            if self.state is _S.SHUTDOWN_ACK_SENT:
                # Both streams were fully acknowledged before we got here.
                self._terminate(CloseReason.CLEAN, "", now)
            elif self.state is _S.SHUTDOWN_SENT:
                self._send_abort()
                self._terminate(CloseReason.SHUTDOWN_TIMEOUT, "no answer to SHUTDOWN", now)
            else:
                self._send_abort()
                self._terminate(CloseReason.PEER_TIMEOUT, "the peer stopped answering", now)
        else:
            sender_deadline = self._sender.deadline
            if sender_deadline is not None and now >= sender_deadline:
                segments, timed_out = self._sender.on_timer(now)
                self._unanswered_timeouts += timed_out
                self._emit(segments, self._outbox)
            if self._control_retry_at is not None and now >= self._control_retry_at:
                self._unanswered_timeouts += 1
                self._retransmit_control(now)
            keepalive = self._keepalive_deadline()
            if keepalive is not None and now >= keepalive:
                self._send_keepalive_probe(now)
        self._notify(self)

    # ------------------------------------------------------------------
    # Handshake

    def _send_init(self, now: float) -> None:
        self._outbox.append(wire.Init(self.local_tag).to_bytes())
        self._handshake_sent_at = now
        self._handshake_retry_at = now + self._handshake_interval

    def _send_echo(self, now: float) -> None:
        self._outbox.append(self._cookie_echo)
        self._echo_tries += 1
        self._handshake_sent_at = now
        self._handshake_retry_at = now + self._handshake_interval

    def _handshake_timer(self, now: float) -> None:
        if now >= self._connect_deadline:
            if self.peer_tag is not None:
                # An echo went out: the listener may hold a session for us.
                self._send_abort()
            self._terminate(CloseReason.CONNECT_TIMEOUT, "no answer from the listener", now)
            return
        if self._handshake_retry_at is None or now < self._handshake_retry_at:
            return
        self._handshake_retried = True
        self._handshake_interval = min(
            2 * self._handshake_interval, self.config.handshake_max_retry_interval
        )
        if (
            self.state is _S.COOKIE_ECHOED
            and self._echo_tries >= self.config.cookie_echo_tries
            and self._sender.snd_max == self.config.stream_origin
        ):
            # The cookie may have expired meanwhile: start over.  (Not once
            # early data went out under it: the stream cannot start over;
            # the listener answers an expired echo with ABORT.)
            self.state = _S.COOKIE_WAIT
        if self.state is _S.COOKIE_WAIT:
            self._send_init(now)
        else:
            self._send_echo(now)

    def _on_cookie(self, cookie: wire.Cookie, now: float) -> None:
        if self.state is not _S.COOKIE_WAIT:
            return
        if not self._handshake_retried:
            self._sender.rtt.add_sample(now - self._handshake_sent_at)
        self.peer_tag = cookie.listener_tag
        self._cookie_echo = wire.CookieEcho.of(cookie).to_bytes()
        self.state = _S.COOKIE_ECHOED
        self._echo_tries = 0
        self._handshake_retried = False
        self._handshake_interval = self.config.handshake_retry_interval
        self._send_echo(now)
        if self.config.early_data:
            if self._early == _NOT_EARLY:  # not again after starting over
                self._events.append(Established())
            self._early = _EARLY_SENDING

    def _establish(self, now: float) -> None:
        if not self._handshake_retried:
            self._sender.rtt.add_sample(now - self._handshake_sent_at)
        self.state = _ESTABLISHED
        self._handshake_retry_at = None
        if self._early == _NOT_EARLY:
            self._events.append(Established())
        elif self._early == _EARLY_HELD:
            self._sender.resend_unheard()  # the listener dropped what it answered
        if self._close_requested:
            self.state = _S.SHUTDOWN_PENDING
            self._advance_shutdown(now)

    # ------------------------------------------------------------------
    # Data

    def _on_data(self, seq: int, ack: int, payload: bytes, now: float) -> bool:
        """Take a DATA packet; returns whether it showed progress (see ``_heard``).

        Progress is an ack of new data, new in-order data we took, or any
        packet while we wait for no answer at all (an idle session's
        keep-alive probe is answered by an ack that acknowledges nothing new).
        """
        if self.state is not _ESTABLISHED:
            if self.state is _S.COOKIE_ECHOED:
                # DATA from the listener proves our echo arrived; its ACK was lost.
                self._establish(now)
            elif self.state is _S.COOKIE_WAIT:
                return False
        hold = False
        if payload and ack == self._sender.wire_acked:
            newly_acked = 0  # a one-way receiver's usual packet: no news for our sender
        elif payload and self.state is _ESTABLISHED and self._sender.ack_may_wait():
            hold = True  # decided once the data is taken
            newly_acked = 0
        else:
            newly_acked = self._process_ack(ack, now, pure=not payload)
        delivered: list[bytes] = []
        if payload:
            delivered, ack_when = self._receiver.on_segment(seq, payload, self._unread)
            if delivered:
                self._deliver(delivered)
                if hold:
                    self.held_ack, self._held_ack_at = ack, now
            elif hold:
                newly_acked = self._process_ack(ack, now, pure=False)
            if ack_when is ACK_LATER:
                self._ack_pending = True
            else:
                self._outbox.append(self._pure_ack())
                if ack_when is ACK_FILLED:
                    self.ack_urgent = True
        return bool(newly_acked or delivered) or self._awaits_no_answer()

    def take_held_ack(self) -> bool:
        """Act on the ack field ``_on_data`` held back; True if that left output or events.

        The ack on a packet that brings new data, while nothing is being
        repaired, can only release what the peer has and grow the window:
        nothing the answer to that data needs.  Held until the answer is
        sent, its bookkeeping (the RTT sample, the release, the window)
        leaves the round trip.  Its packet already counted as progress.
        """
        ack = self.held_ack
        if ack is None:
            return False
        self.held_ack = None
        if self.state is not _ESTABLISHED:
            return False  # aborted or closing since: the close took it (or needs it no more)
        self._process_ack(ack, self._held_ack_at, pure=False)
        # (Where the answer counts, after a drain, both were empty before.)
        return bool(self._outbox or self._events) or self._sender.has_unsent

    def _awaits_no_answer(self) -> bool:
        """Nothing of ours is unacknowledged: any packet from the peer shows life."""
        return not self._sender.awaiting_ack and self._control_retry_at is None

    def _process_ack(self, wire_ack: int, now: float, *, pure: bool) -> int:
        """Take an acknowledgement field; returns the bytes it newly acknowledged."""
        newly_acked, retransmit = self._sender.on_ack(wire_ack, now, pure=pure)
        if retransmit:
            self._emit(retransmit, self._outbox)
        if newly_acked:
            if self._want_send_buffer_low:
                self._check_send_buffer_low()
            if self.state is not _ESTABLISHED:
                self._advance_shutdown(now)  # it acts only once a close began
        return newly_acked

    def _deliver(self, chunks: list[bytes]) -> None:
        """Hold in-order bytes for the application: one segment's, or a filled hole's run."""
        # (One chunk, an in-order segment's, is the usual case: sum and map cost
        # it more than a thousand instructions.)
        size = len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
        self.bytes_received += size
        self._unread += size
        events = self._events
        tail = events[-1] if events else None
        if type(tail) is _PendingData:
            tail.chunks += chunks
            tail.size += size
        else:
            events.append(_PendingData(chunks, size))

    # Every packet carries its sender's own tag (observed on the wire).
    def _emit(self, segments: list[Segment], out: list[bytes]) -> None:
        if not segments:
            return
        ack = self._receiver.rcv_nxt & WIRE_MASK  # wrap(), written out on the hot path
        tag, encode = self.local_tag, wire.encode_data
        probe_end = self._sender.size_probe_end
        for end, payload in segments:
            datagram = encode(tag, end & WIRE_MASK, ack, payload)
            out.append(ProbeDatagram(datagram) if end == probe_end else datagram)
        self._ack_pending = False
        self._receiver.on_ack_sent()

    def _pure_ack(self) -> bytes:
        # It acknowledges all in-order data so far: one still pending would
        # repeat it, which the peer counts as a report of a later segment.
        self._ack_pending = False
        receiver = self._receiver
        receiver.on_ack_sent()
        sent, received = self._sender.snd_max, receiver.rcv_nxt
        # Past a hole every segment is answered by the same ack: build it once.
        if sent != self._pure_ack_sent or received != self._pure_ack_received:
            self._pure_ack_sent, self._pure_ack_received = sent, received
            self._pure_ack_bytes = wire.encode_data(
                self.local_tag, sent & WIRE_MASK, received & WIRE_MASK, b""
            )
        return self._pure_ack_bytes

    def _keepalive_deadline(self) -> float | None:
        interval = self.config.keepalive_interval
        if (
            interval is None
            or self.state is not _ESTABLISHED
            or self._sender.awaiting_ack
            or self._control_retry_at is not None
        ):
            return None  # not idle: retransmissions already probe the peer
        if self._probe_retry_at is not None:
            return self._probe_retry_at
        return self._last_heard + interval

    def _send_keepalive_probe(self, now: float) -> None:
        if self._probe_retry_at is not None:
            self._unanswered_timeouts += 1
        self._emit([self._sender.keepalive_probe()], self._outbox)
        # Back off like retransmissions, without touching the data RTO.
        backoff = 1 << min(self._unanswered_timeouts, 16)
        self._probe_retry_at = now + min(self.config.max_rto, self._sender.rtt.rto * backoff)

    def _peer_is_dead(self, now: float) -> bool:
        return (
            self._unanswered_timeouts >= self.config.dead_peer_retransmissions
            and now >= self._last_heard + self.config.peer_timeout
        )

    def _check_send_buffer_low(self) -> None:
        if (
            self._want_send_buffer_low
            and self.state is not _CLOSED
            and self._sender.buffered < self.config.send_buffer_low_water
        ):
            self._want_send_buffer_low = False
            self._events.append(SendBufferLow())
            self._notify(self)

    # ------------------------------------------------------------------
    # Shutdown and abort

    def _advance_shutdown(self, now: float) -> None:
        if self._sender.buffered:
            return
        if self.state is _S.SHUTDOWN_PENDING:
            self.state = _S.SHUTDOWN_SENT
            self._send_control(wire.Shutdown(self.local_tag, wrap(self._receiver.rcv_nxt)), now)
            # The SHUTDOWN carries the same cumulative ack: a pending pure ack
            # would only cost both ends another datagram.
            self._ack_pending = False
            self._receiver.on_ack_sent()
        elif self.state is _S.SHUTDOWN_RECEIVED:
            self.state = _S.SHUTDOWN_ACK_SENT
            self._send_control(wire.ShutdownAck(self.local_tag), now)

    def _send_control(self, packet: wire.Shutdown | wire.ShutdownAck, now: float) -> None:
        self._outbox.append(packet.to_bytes())
        rtt = self._sender.rtt
        floor = CONTROL_RETRY_FLOOR * (1 << min(rtt.backoff_count, _CONTROL_FLOOR_DOUBLINGS))
        self._control_retry_at = now + max(rtt.rto, floor)

    def _retransmit_control(self, now: float) -> None:
        self._sender.rtt.back_off()
        if self.state is _S.SHUTDOWN_SENT:
            self._send_control(wire.Shutdown(self.local_tag, wrap(self._receiver.rcv_nxt)), now)
        elif self.state is _S.SHUTDOWN_ACK_SENT:
            self._send_control(wire.ShutdownAck(self.local_tag), now)
        else:
            self._control_retry_at = None

    def _on_shutdown(self, packet: wire.Shutdown, now: float) -> None:
        if self.state in _HANDSHAKING:
            return
        self._process_ack(packet.ack, now, pure=False)
        if self.state in (_ESTABLISHED, _S.SHUTDOWN_PENDING):
            self.state = _S.SHUTDOWN_RECEIVED
            self._advance_shutdown(now)
        elif self.state in (_S.SHUTDOWN_SENT, _S.SHUTDOWN_ACK_SENT):
            # Simultaneous close, or our SHUTDOWN-ACK was lost.
            self.state = _S.SHUTDOWN_ACK_SENT
            self._send_control(wire.ShutdownAck(self.local_tag), now)

    def _on_shutdown_ack(self, now: float) -> None:
        if self.state in (_S.SHUTDOWN_SENT, _S.SHUTDOWN_ACK_SENT):
            self._outbox.append(wire.ShutdownComplete(self.local_tag).to_bytes())
            self._terminate(CloseReason.CLEAN, "", now, linger=True)
        elif self.state in _OPEN:
            self._send_abort()
            self._terminate(CloseReason.PROTOCOL_ERROR, "SHUTDOWN-ACK on an open session", now)

    def _on_abort(self, now: float) -> None:
        if self._early != _NOT_EARLY and self._answers_early_data(now):
            if self._early == _EARLY_SENDING and self.state is _S.COOKIE_ECHOED:
                # Early DATA reached the listener without its echo: hold the
                # data, and try the echo once more.
                self._early = _EARLY_HELD
                self._send_echo(now)
            return
        if self.state in _HANDSHAKING:
            self._terminate(CloseReason.REFUSED, "the listener answered ABORT", now)
        elif self.state is _S.SHUTDOWN_ACK_SENT:
            # Everything was acknowledged both ways; the closer just forgot us.
            self._terminate(CloseReason.CLEAN, "", now)
        else:
            self._terminate(CloseReason.ABORTED_BY_PEER, "the peer sent ABORT", now)

    def _answers_early_data(self, now: float) -> bool:
        """Whether an ABORT may answer early DATA that reached the listener
        before its echo, rather than end the session (counted if so).

        Before the COOKIE-ACK: while it cannot be the answer to an echo sent
        again (sooner than the least RTT after it), or while fewer came than
        DATA went out; a path that duplicates datagrams may bring more.  After
        it, one it overtook may still come, within two probe timeouts of the
        last echo; later an ABORT is the peer's word again.
        """
        sender = self._sender
        if self.state is _S.COOKIE_ECHOED:
            least = sender.rtt.minimum
            if (
                self._early == _EARLY_HELD
                and least is not None
                and now - self._handshake_sent_at < least
            ):
                return True
        elif self.state not in _OPEN or now - self._handshake_sent_at > 2 * sender.rtt.rto:
            return False
        if self._early_aborts >= sender.stats.data_datagrams_sent:
            return False
        self._early_aborts += 1
        return True

    def _drop_unread(self) -> None:
        """Forget data the application held back, as a TCP reset does: after
        an abort its end must not wait on the application's reading."""
        self._events = [e for e in self._events if not isinstance(e, _PendingData)]
        self._unread = 0

    def _send_abort(self) -> None:
        self._outbox.append(wire.Abort(self.local_tag).to_bytes())

    def _terminate(
        self, reason: CloseReason, detail: str, now: float, *, linger: bool = False
    ) -> None:
        self.state = _CLOSED
        self._control_retry_at = None
        self._handshake_retry_at = None
        self._ack_pending = False
        self._want_send_buffer_low = False
        self._linger_until = now + self.config.linger if linger else None
        self._receiver.discard()
        self._sender.discard()
        if self._reading_paused and reason is not CloseReason.CLEAN:
            self._drop_unread()
        self._events.append(Closed(reason, detail))
        self._notify(self)
