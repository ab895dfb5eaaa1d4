"""
The Twisted adapter: one UDP port, one sans-IO :class:`Demultiplexer`.

:class:`MNETDatagramProtocol` is the only place where the reactor meets the
core.  It feeds received datagrams and timer expiries into the demux, drains
what comes out (events, datagrams, the next deadline) once per reactor turn,
and turns events into calls on application protocols through
:class:`~mnet_twisted.transport.MNETTransport`.
"""

from __future__ import annotations

#: Docstrings here use epytext (C{code}, L{link}, @param), as Twisted's do.
__docformat__ = "epytext"

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionLost,
    ConnectionRefusedError,
    InvalidAddressError,
    MessageLengthError,
    TimeoutError,
)
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel
from twisted.python import context
from twisted.python.failure import Failure
from twisted.python.log import ILogContext

from .config import ListenerLimits, SessionConfig
from .counts import Counts, numbers, times
from .demux import shrink_in_place, table_oversized
from .events import Closed, CloseReason, DataReceived, Established, SendBufferLow
from .finetimer import FineTimer, fine_timer, fine_timer_possible
from .heap import WaveTrimmer, format_a_first_event
from .session import ProbeDatagram
from .sockopts import FragmentationControl, SocketBuffers, size_socket_buffers
from .trace import SessionTracer
from .transport import MNETTransport
from .udpport import MNETPort

#: The names of ``MNETDatagramProtocol.stats``.
_STAT_NAMES = (
    "datagramsReceived",
    "datagramsSent",
    "sendErrors",
    "probesRefused",
    "applicationErrors",
    "memoryTrims",
    "timerWakeups",
)

__all__ = ["ListenerStats", "MNETDatagramProtocol", "peerAddress"]


def peerAddress(addr: tuple[str, int]) -> IPv4Address | IPv6Address:
    """The Twisted address object of an MNET peer (always of type ``'UDP'``)."""
    host, port = addr[0], addr[1]
    # Addresses come from the socket as literals: only IPv6 ones have colons
    # (a cheaper test than isIPv6Address, which parses the text).
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


class _PendingConnect:
    """A connector session waiting for its handshake to finish."""

    def __init__(self, factory: IProtocolFactory, deferred: defer.Deferred[Any]) -> None:
        self.factory = factory
        self.deferred = deferred


@dataclasses.dataclass(frozen=True, slots=True)
class ListenerStats:
    """Totals of one MNET port (``MNETListeningPort.getStats()``)."""

    #: Sessions open now, and accepted since the port opened.
    sessions_open: int
    sessions_accepted: int
    #: Handshakes turned away by ``ListenerLimits`` (answered ABORT).
    sessions_refused: int
    #: COOKIE-ECHOs with a forged or expired cookie.
    cookies_rejected: int
    #: ABORTs sent to strangers (unknown tags, refused handshakes).
    aborts_sent: int
    #: Stateless replies (COOKIE, ABORT) left unsent over their rate limits,
    #: and handshake datagrams dropped over a read batch's share.
    replies_limited: int
    handshakes_dropped: int
    #: Out-of-order bytes all sessions hold, against the listener's budget.
    out_of_order_held: int
    datagrams_received: int
    datagrams_sent: int
    #: Datagrams the socket would not take (each one a lost packet).
    send_errors: int


class MNETDatagramProtocol(DatagramProtocol):
    """
    All MNET sessions of one UDP port.

    @ivar demux: the sans-IO core; created in L{startProtocol}, because it
        needs the local port number.
    @ivar stats: counters, for tests and for operators: datagrams received and
        sent, datagrams lost to send errors, application exceptions.
    """

    _log = Logger()
    #: Sessions numbered so far, by all ports (their log prefixes).
    _sessionsNumbered = numbers(1)
    #: Log each session's opening and its ordinary ends (a clean close, an
    #: abort from this side) as debug events.  Off by default, as Twisted logs
    #: no event per TCP connection: building and publishing them cost a tenth
    #: of a short session's CPU even when every observer drops debug.  Ends
    #: that something went wrong (the peer aborted or died, broke the
    #: protocol, the port was lost) are logged either way.
    logSessions = False
    #: Give the C heap's free pages back to the system after a wave of
    #: closed sessions: once this many closed (C{None}: never), when none has
    #: closed for C{releaseMemoryDelay} seconds (L{mnet_twisted.heap.WaveTrimmer}).
    #: The trim after 10,000 sessions took 4.4 ms with C{PYTHONMALLOC=malloc}
    #: (L{longestMemoryTrim}; C{bench/scale_sessions.py} reports it).
    releaseMemoryAfter: int | None = 256
    releaseMemoryDelay = 1.0
    #: Wait for session deadlines on a Linux C{timerfd} the reactor watches
    #: (L{mnet_twisted.finetimer}), not on a C{callLater}.  It fires to the
    #: microsecond, where the epoll reactor rounds its waits up to whole
    #: milliseconds (a probe timeout on a fast path waited up to a
    #: millisecond longer than it should).  And the reactor sleeps without a
    #: timeout of ours: a probe timeout is always a millisecond or so ahead
    #: on such a path, and the 1 ms C{epoll_wait} timeout a reactor call
    #: gave every sleep made wake-ups slower on these VMs.  Used where
    #: the C library has C{timerfd} and the reactor watches file
    #: descriptors; C{False}: C{callLater} alone.
    fineTimers = True

    @property
    def longestMemoryTrim(self) -> float:
        """The longest of those trims so far, in seconds (the reactor waits for it)."""
        return self._longestTrim[0]

    def __init__(
        self,
        reactor: Any,
        factory: IProtocolFactory | None = None,
        config: SessionConfig | None = None,
        cookies: Any = None,
        accepting: bool = False,
        randomBytes: Callable[[int], bytes] = os.urandom,
        closeWhenIdle: bool = False,
        idleGrace: float = 0.0,
        limits: ListenerLimits | None = None,
        traceDirectory: str | None = None,
    ) -> None:
        self._reactor = reactor
        # Logger.__get__ builds a new bound Logger on every access; bind once.
        self._log = self._log
        #: Where each session's packet trace goes (``trace.SessionTracer``), if anywhere.
        self.traceDirectory = traceDirectory
        self._traceFiles: dict[Any, Any] = {}
        self.factory = factory
        self.config = config if config is not None else SessionConfig()
        self.limits = limits if limits is not None else ListenerLimits()
        #: What the limits turned away, as last logged (refused, limited,
        #: dropped), and when the next log may come.
        self._limitsLogged = numbers(3)
        self._limitsLogDue = 0.0
        self._cookies = cookies
        self._accepting = accepting
        self._randomBytes = randomBytes
        # Client ports close themselves once their only session is forgotten.
        self._closeWhenIdle = closeWhenIdle
        # A shared client port stays open this long after its last session,
        # for the next connection to reuse.
        self._idleGrace = idleGrace
        self._idleCall: Any = None
        self._sizeSearchOff: tuple[SessionConfig, SessionConfig] | None = None
        # A client's private port is an implementation detail: do not log
        # "Starting protocol" for every connection, as TCP clients do not.
        self.noisy = not closeWhenIdle
        self._hadSession = False
        self._closing = False
        self._closedDeferreds: list[defer.Deferred[None]] = []
        self.demux: Any = None
        #: What the OS granted the UDP socket (None before startProtocol or
        #: when ``config.socket_buffer_size`` is None).
        self.socketBuffers: SocketBuffers | None = None
        self._port: Any = None
        self._write: Any = None
        self._sendMany: Any = None
        self._fragmentation: FragmentationControl | None = None
        self._transports: dict[Any, MNETTransport] = {}
        self._transportsPeak = 0
        self._trimmer = WaveTrimmer(reactor, self._heapTrimmed)
        self._pending: dict[Any, _PendingConnect] = {}
        # Transports whose pull producer wants another low-water notification,
        # armed after the event loop so a producer that writes nothing cannot
        # spin the loop forever.
        self._armLowWater: list[MNETTransport] = []
        self._flushCall: Any = None
        self._timerCall: Any = None
        # Finishes the wait for a deadline to the microsecond (finetimer.py):
        # made when first needed, where possible.
        self._fineTimer: FineTimer | None = None
        self._fineAvailable = False
        # The deadline _timerCall or _fineTimer was last set for (None: neither).
        self._timerAt: float | None = None
        self._inEventLoop = False
        # Inside an MNETPort read batch: the flush waits for its end.
        self._inReadBatch = False
        self._flushAfterBatch = False
        self._stopped = False
        # Set by loseAllConnections: sessions completing after it are refused.
        self._draining = False
        # (Trims: of the C heap after waves of closed sessions, see releaseMemoryAfter.)
        self.stats = Counts(*_STAT_NAMES)
        self._counts = self.stats.live
        #: The longest trim, in place (see ``counts``).
        self._longestTrim = times(1)

    # -- DatagramProtocol ---------------------------------------------------

    def startProtocol(self) -> None:
        from .demux import Demultiplexer

        self._stopped = False
        # DatagramProtocol.doStop forgets self.transport before stopProtocol
        # runs, but the socket is still open then: keep it to send ABORTs.
        self._port = self.transport
        self._write = getattr(self.transport, "writeDatagram", self.transport.write)
        self._sendMany = getattr(self.transport, "writeDatagrams", None)
        self._sizeSocketBuffers()
        self._fineAvailable = self.fineTimers and fine_timer_possible(self._reactor)
        if self._fineAvailable and self._accepting:
            # A listener's now: made in its first wave of sessions, it would
            # keep some of the wave's memory after it (heap.py).
            self._fineTimer = fine_timer(self._reactor, self._onTimerDue)
        sock = getattr(self.transport, "socket", None)
        self._fragmentation = FragmentationControl(sock) if sock is not None else None
        if self._fragmentation is None or not self._fragmentation.supported:
            # Probes that may be fragmented would "prove" sizes the path
            # cannot carry whole: no size search on this port.
            self.config = dataclasses.replace(self.config, path_mtu_discovery=False)
        self.demux = Demultiplexer(
            local_port=self.transport.getHost().port,
            cookies=self._cookies,
            config=self.config,
            accepting=self._accepting,
            random_bytes=self._randomBytes,
            limits=self.limits,
            tracer_factory=self._openTrace,
        )
        if self._accepting and self.releaseMemoryAfter is not None:
            format_a_first_event()  # now rather than in the first wave

    def _sizeSocketBuffers(self) -> None:
        size = self.config.socket_buffer_size
        sock = getattr(self.transport, "socket", None)
        if size is None or sock is None:
            return
        self.socketBuffers = granted = size_socket_buffers(sock, size)
        if granted.capped:
            self._log.info(
                "MNET port {port}: the OS capped its socket buffers at"
                " {receive} / {send} bytes (asked {requested}); bursts beyond"
                " that are dropped and resent (raise net.core.rmem_max /"
                " wmem_max to avoid it)",
                port=self.transport.getHost().port,
                receive=granted.receive,
                send=granted.send,
                requested=granted.requested,
            )

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.demux is None or self._stopped:
            return
        self._counts["datagramsReceived"] += 1
        if type(addr) is not tuple or len(addr) != 2:
            addr = (addr[0], addr[1])  # ports normally cut IPv6 addresses down already
        if self.demux.receive_datagram(datagram, addr, self._reactor.seconds()):
            self._sendUrgent()
        if self._inReadBatch:
            self._flushAfterBatch = True  # readBatchEnded answers the batch
        else:
            self.scheduleFlush()

    def readBatchStarted(self) -> None:
        """The port starts reading a batch of datagrams (see ``udpport``)."""
        self._inReadBatch = True

    def readBatchEnded(self) -> None:
        """The batch is read: answer all of it now, in this reactor turn."""
        self._inReadBatch = False
        if self._flushAfterBatch:
            self._flushAfterBatch = False
            if self._inEventLoop:
                return  # a read inside a drain (before a timer's): that drain answers it
            call, self._flushCall = self._flushCall, None
            if call is not None and call.active():
                call.cancel()
            self._flush()

    def datagramsReceived(self, datagrams: list[bytes], addr: Any) -> None:
        """Datagrams from one sender that arrived together (``MNETPort``'s GRO reads)."""
        if self.demux is None or self._stopped:
            return
        self._counts["datagramsReceived"] += len(datagrams)
        self.demux.receive_batch(
            datagrams, (addr[0], addr[1]), self._reactor.seconds(), self._sendUrgent
        )
        self.scheduleFlush()

    def _sendUrgent(self) -> None:
        """Send what the core has ready before reading on: it acks a filled hole.

        The sender waits for that ack to learn where the next hole is;
        behind the rest of a busy read batch it would wait a millisecond
        or more.  Application events still wait for the batch's end.
        """
        self._sendAll(self.demux.datagrams_to_send(self._reactor.seconds()))

    def connectionRefused(self) -> None:
        """A connected (client) socket heard ICMP port unreachable from its peer."""
        if self.demux is None or self._stopped:
            return
        self._refusePendingConnects()
        self.scheduleFlush()

    def _refusePendingConnects(self) -> None:
        now = self._reactor.seconds()
        for address in {session.peer_address for session in self._pending}:
            self.demux.destination_unreachable(address, now)

    def stopProtocol(self) -> None:
        """The UDP port is going away: every session is lost."""
        self._stopped = True
        for call in (self._flushCall, self._timerCall, self._idleCall):
            if call is not None and call.active():
                call.cancel()
        self._flushCall = self._timerCall = self._idleCall = None
        self._timerAt = None
        if self._fineTimer is not None:
            self._fineTimer.close()
            self._fineTimer = None
        self._fineAvailable = False
        self._trimmer.stop()
        demux = self.demux
        if demux is not None:
            if not self._closing:
                # We did not close the port: the socket failed.  The epoll
                # reactor does this to a connected socket that got ICMP port
                # unreachable, which for a connection attempt is a refusal.
                self._refusePendingConnects()
            now = self._reactor.seconds()
            demux.abort_all(now)
            while (item := demux.next_event()) is not None:
                session, event = item
                if isinstance(event, Closed):
                    self._sessionClosed(session, event, lost=True)
            # The socket is still open while stopProtocol runs: tell the peers.
            for datagram, addr in demux.datagrams_to_send(now):
                self._sendDatagram(datagram, addr)
        for trace_file in self._traceFiles.values():
            trace_file.close()
        self._traceFiles.clear()
        deferreds, self._closedDeferreds = self._closedDeferreds, []
        for d in deferreds:
            d.callback(None)

    # -- what the endpoints use ----------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether new sessions may still be opened on this port."""
        return self.demux is not None and not (self._stopped or self._closing)

    @property
    def accepting(self) -> bool:
        return bool(self.demux.accepting) if self.demux is not None else self._accepting

    def stopAccepting(self) -> None:
        self._accepting = False
        if self.demux is not None:
            self.demux.accepting = False

    def loseAllConnections(self) -> None:
        """Stop accepting and close every session gracefully (written data still goes)."""
        self.stopAccepting()
        self._draining = True
        for transport in list(self._transports.values()):
            transport.loseConnection()

    def getStats(self) -> ListenerStats:
        demux, stats = self.demux, self.stats
        return ListenerStats(
            sessions_open=demux.open_sessions if demux is not None else 0,
            sessions_accepted=demux.sessions_accepted if demux is not None else 0,
            sessions_refused=demux.sessions_refused if demux is not None else 0,
            cookies_rejected=demux.cookies_rejected if demux is not None else 0,
            aborts_sent=demux.aborts_sent if demux is not None else 0,
            replies_limited=demux.replies_limited if demux is not None else 0,
            handshakes_dropped=demux.handshakes_dropped if demux is not None else 0,
            out_of_order_held=demux.out_of_order.used if demux is not None else 0,
            datagrams_received=stats["datagramsReceived"],
            datagrams_sent=stats["datagramsSent"],
            send_errors=stats["sendErrors"],
        )

    def abortAllConnections(self) -> None:
        """Abort every session now: each peer is sent ABORT, each protocol told."""
        if self.demux is None or self._stopped:
            return
        now = self._reactor.seconds()
        if self.demux.open_sessions:
            self._log.info(
                "Aborting {count} MNET session(s) still open", count=self.demux.open_sessions
            )
        self.demux.abort_all(now)
        self.scheduleFlush()

    def closeWhenIdle(self) -> defer.Deferred[None]:
        """Close the UDP port once no session is left; fires when it is closed."""
        d: defer.Deferred[None] = defer.Deferred()
        if self._stopped or self._port is None:
            d.callback(None)
            return d
        self._closedDeferreds.append(d)
        self._closeWhenIdle = True
        self._hadSession = True
        self._maybeClose()
        return d

    def connect(
        self,
        addr: tuple[str, int],
        factory: IProtocolFactory,
        config: SessionConfig | None = None,
    ) -> defer.Deferred[Any]:
        """
        Open a session to C{addr}; fires with C{factory}'s protocol once the
        handshake is done.  Cancelling aborts the session.
        """
        now = self._reactor.seconds()
        if config is not None and not self.config.path_mtu_discovery:
            config = self._withoutSizeSearch(config)
        session = self.demux.connect(addr, now, config=config)
        self._hadSession = True

        def cancel(d: defer.Deferred[Any]) -> None:
            pending = self._pending.pop(session, None)
            if pending is None:
                return
            session.abort(self._reactor.seconds())
            self.scheduleFlush()
            d.errback(Failure(ConnectingCancelledError(peerAddress(addr))))

        d: defer.Deferred[Any] = defer.Deferred(cancel)
        self._pending[session] = _PendingConnect(factory, d)
        if self._inEventLoop or self._inReadBatch:
            self.scheduleFlush()
        else:
            # The INIT leaves now, not a reactor turn later; no application
            # code runs here (events wait for the flush).
            self._sendAll(self.demux.datagrams_to_send(now))
            self._armTimer(self.demux.next_deadline(), now)
        return d

    def _withoutSizeSearch(self, config: SessionConfig) -> SessionConfig:
        # A shared client port gets the same endpoint config for every
        # connection: copy it once, not once per connect().
        cached = self._sizeSearchOff
        if cached is not None and cached[0] is config:
            return cached[1]
        copy = dataclasses.replace(config, path_mtu_discovery=False)
        self._sizeSearchOff = (config, copy)
        return copy

    # -- the drain ------------------------------------------------------------

    def scheduleFlush(self) -> None:
        """Drain the core once this reactor turn is over."""
        if self._stopped or self._inEventLoop:
            # Inside the event loop, the datagrams step of the running flush
            # picks up whatever the application did.
            return
        if self._inReadBatch:
            self._flushAfterBatch = True
            return
        if self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushCall = None
        if self._stopped or self.demux is None:
            return
        demux = self.demux
        if demux.replies_waiting:
            # The connector waits on the COOKIE-ACK, not on our protocol's
            # connectionMade: answer handshakes before any event.
            self._sendAll(demux.handshake_replies())
        while True:
            self._inEventLoop = True
            try:
                while (item := demux.next_event()) is not None:
                    session, event = item
                    if type(event) is DataReceived:  # the usual event: no _dispatch hop
                        transport = self._transports.get(session)
                        if transport is not None:
                            self.callApplication(
                                transport, transport.protocol.dataReceived, event.data
                            )
                    else:
                        self._dispatch(session, event)
            finally:
                self._inEventLoop = False
            now = self._reactor.seconds()
            self._sendAll(demux.datagrams_to_send(now))
            if not demux.take_held_acks():
                break
        if self._armLowWater:
            arm, self._armLowWater = self._armLowWater, []
            for transport in arm:
                transport._armLowWater()
            self.scheduleFlush()
        self._armTimer(demux.next_deadline(), now)
        if demux.limits_newly_hit and now >= self._limitsLogDue:
            self._logLimits(now)
        self._maybeClose()

    def _logLimits(self, now: float) -> None:
        # One line per ten seconds at most, however many peers are turned away.
        demux = self.demux
        demux.limits_newly_hit = False
        counts = (demux.sessions_refused, demux.replies_limited, demux.handshakes_dropped)
        logged = self._limitsLogged
        if counts == tuple(logged):
            return
        refused, limited, dropped = (new - old for new, old in zip(counts, logged, strict=True))
        self._log.warn(
            "MNET port {port} hit its limits: refused {count} session(s) (maxSessions="
            "{maxSessions}, maxSessionsPerSource={perSource}), left {limited} stateless"
            " replies unsent over their rates, dropped {dropped} handshake datagram(s)",
            count=refused,
            limited=limited,
            dropped=dropped,
            port=self.transport.getHost().port if self.transport is not None else None,
            maxSessions=self.limits.max_sessions,
            perSource=self.limits.max_sessions_per_source,
        )
        logged[0], logged[1], logged[2] = counts
        self._limitsLogDue = now + 10.0

    def _armTimer(self, deadline: float | None, now: float) -> None:
        # Runs after every drain: the call or the fine timer is live exactly
        # while _timerAt is set (it is cleared wherever they fire or are
        # cancelled), so the usual case needs no questions to either.
        if deadline == self._timerAt:
            return
        self._timerAt = deadline
        call = self._timerCall
        if deadline is None:
            if self._fineTimer is not None:
                self._fineTimer.cancel()
            if call is not None:
                self._timerCall = None
                call.cancel()
            return
        delay = deadline - now
        if self._fineAvailable and self._armFinely(delay):
            return
        if delay < 0.0:
            delay = 0.0
        if call is not None:
            # Moving a DelayedCall later is cheap (Twisted only notes the
            # delay, and re-files it when the first time comes), and far
            # cheaper than waking this port for nothing.
            call.reset(delay)
        else:
            self._timerCall = self._reactor.callLater(delay, self._onTimer)

    def _armFinely(self, delay: float) -> bool:
        """Set the fine timer for ``delay``; False, for good, if there is none to set."""
        fine = self._fineTimer
        if fine is None:
            fine = self._fineTimer = fine_timer(self._reactor, self._onTimerDue)
        if fine is not None and fine.start(delay):
            return True
        # No timerfd after all: the reactor alone, from now on.
        self._fineAvailable = False
        if fine is not None:
            fine.close()
            self._fineTimer = None
        return False

    def _onTimer(self) -> None:
        self._timerCall = None
        self._onTimerDue()

    def _onTimerDue(self) -> None:
        self._timerAt = None
        if self._stopped or self.demux is None:
            return
        self._readBeforeTimers()
        if self._stopped:
            return
        self._counts["timerWakeups"] += 1
        self.demux.handle_timers(self._reactor.seconds())
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flush()

    def _readBeforeTimers(self) -> None:
        """Take what the socket holds before acting on deadlines.

        A busy reactor comes to its timer late, perhaps with the acks that
        answer it already waiting: acting first would resend what arrived,
        and under load those resends feed the load (with 4,000 sessions
        echoing, nearly every echo timed out so and the socket overflowed;
        see bench/scale_sessions.py).
        """
        if not isinstance(self._port, MNETPort):
            return  # another reactor's port: it reads by itself
        # What it reads is answered by the timer's own flush, just after.
        self._inEventLoop = True
        try:
            self._port.doRead(drain=True)
        except Exception:
            self._log.failure("Reading MNET port before its timers failed")
        finally:
            self._inEventLoop = False

    def _maybeClose(self, graceOver: bool = False) -> None:
        if (
            self._closeWhenIdle
            and self._hadSession
            and not self._closing
            and not self._stopped
            and self.demux is not None
            # Lingering sessions need not hold the port: a peer that misses
            # our SHUTDOWN-COMPLETE ends cleanly by itself.
            and self.demux.open_sessions == 0
            # But a closed session whose application has not been told yet
            # (its end waits behind data it paused reading) holds it: closing
            # now would strand that data and the connectionLost after it.
            and not self._transports
            and self._port is not None
        ):
            if self._idleGrace > 0 and not graceOver:
                if self._idleCall is None:
                    self._idleCall = self._reactor.callLater(self._idleGrace, self._idleOver)
                return
            self._closing = True
            self._port.stopListening()

    def _idleOver(self) -> None:
        self._idleCall = None
        self._maybeClose(graceOver=True)  # closes now if still idle

    def _sendAll(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Send in order; consecutive datagrams to one peer go to the port together."""
        sendmany = self._sendMany
        if sendmany is None or len(datagrams) == 1 or not self._port.gso:
            for datagram, addr in datagrams:
                self._sendDatagram(datagram, addr)
            return
        index, count = 0, len(datagrams)
        while index < count:
            datagram, addr = datagrams[index]
            end = index + 1
            # Size probes go alone: they need their own socket option.
            if type(datagram) is bytes:
                while (
                    end < count and datagrams[end][1] == addr and type(datagrams[end][0]) is bytes
                ):
                    end += 1
            if end - index == 1:
                self._sendDatagram(datagram, addr)
            else:
                self._sendBatch([d for d, _ in datagrams[index:end]], addr, sendmany)
            index = end

    def _sendBatch(self, batch: list[bytes], addr: tuple[str, int], sendmany: Any) -> None:
        self._sendVia(sendmany, batch, addr, len(batch))

    def _sendDatagram(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if type(datagram) is ProbeDatagram:
            self._sendVia(self._writeUnfragmented, datagram, addr, 1, self._probeRefused)
        else:
            self._sendVia(self._write, datagram, addr, 1)

    def _sendVia(
        self,
        send: Callable[[Any, tuple[str, int]], object],
        what: Any,
        addr: tuple[str, int],
        count: int,
        onTooBig: Callable[[Any, tuple[str, int]], None] | None = None,
    ) -> None:
        """Send ``what`` (``count`` datagrams) with ``send``.

        A datagram that cannot leave is a lost packet: the core retransmits.
        Only a size probe (``onTooBig``) treats "message too long" apart.
        """
        try:
            send(what, addr)
        except (OSError, MessageLengthError, InvalidAddressError) as error:
            if onTooBig is not None and isinstance(error, MessageLengthError):
                onTooBig(what, addr)
            else:
                self._counts["sendErrors"] += count
        except Exception:
            self._counts["sendErrors"] += count
            self._log.failure("Unexpected error sending MNET datagrams to {addr}", addr=addr)
        else:
            self._counts["datagramsSent"] += count

    def _writeUnfragmented(self, datagram: bytes, addr: tuple[str, int]) -> None:
        control = self._fragmentation
        if control is None:
            self._write(datagram, addr)
            return
        control.forbid()
        try:
            self._write(datagram, addr)
        finally:
            control.restore()

    def _probeRefused(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """The stack refused a size probe as too big: it is taken back, not lost."""
        self._counts["probesRefused"] += 1
        self.demux.datagram_refused(datagram, addr, self._reactor.seconds())
        self.scheduleFlush()

    # -- events -> application ---------------------------------------------

    def _dispatch(self, session: Any, event: Any) -> None:
        """Every event but DataReceived, which the flush hands on itself."""
        if isinstance(event, SendBufferLow):
            transport = self._transports.get(session)
            if transport is not None:
                transport._sendBufferLow()
        elif isinstance(event, Established):
            if session in self._pending:
                self._connected(session)
            elif not session.is_connector:
                self._accept(session)
        elif isinstance(event, Closed):
            self._sessionClosed(session, event)

    def _newTransport(self, session: Any, protocol: Any) -> MNETTransport:
        numbered = MNETDatagramProtocol._sessionsNumbered
        numbered[0] += 1
        transport = MNETTransport(self, session, protocol, numbered[0])
        self._transports[session] = transport
        return transport

    def _accept(self, session: Any) -> None:
        addr = peerAddress(session.peer_address)
        if self._draining:
            # The handshake finished after the port stopped listening.
            session.abort(self._reactor.seconds())
            return
        try:
            protocol = self.factory.buildProtocol(addr) if self.factory is not None else None
        except Exception:
            self._applicationError()
            self._log.failure("{factory} failed to build a protocol", factory=self.factory)
            protocol = None
        if protocol is None:
            session.abort(self._reactor.seconds())
            return
        transport = self._newTransport(session, protocol)
        self._logOpened(transport, "accepted")
        self.callApplication(transport, protocol.makeConnection, transport)

    def _connected(self, session: Any) -> None:
        pending = self._pending.pop(session)
        try:
            protocol = pending.factory.buildProtocol(peerAddress(session.peer_address))
        except Exception:
            session.abort(self._reactor.seconds())
            pending.deferred.errback()
            return
        if protocol is None:
            session.abort(self._reactor.seconds())
            pending.deferred.errback(
                Failure(ConnectionRefusedError("the factory built no protocol"))
            )
            return
        transport = self._newTransport(session, protocol)
        self._logOpened(transport, "connected")
        if self.callApplication(transport, protocol.makeConnection, transport):
            pending.deferred.callback(protocol)
        else:
            pending.deferred.errback(Failure(ConnectionLost("connectionMade raised")))

    def _sessionClosed(self, session: Any, event: Closed, lost: bool = False) -> None:
        pending = self._pending.pop(session, None)
        if pending is not None:
            pending.deferred.errback(Failure(_connectFailure(session, event, lost)))
        held = len(self._transports)
        if held > self._transportsPeak:
            self._transportsPeak = held
        transport = self._transports.pop(session, None)
        if table_oversized(held, self._transportsPeak):
            shrink_in_place(self._transports)
            self._transportsPeak = held
        self._trimmer.session_closed(
            held, len(self._transports), self.releaseMemoryAfter, self.releaseMemoryDelay
        )
        if transport is not None:
            self._logClosed(transport, event, lost)
            transport._closed(event, lost)
        trace_file = self._traceFiles.pop(session, None)
        if trace_file is not None:
            trace_file.close()

    def _applicationError(self) -> None:
        """Count an exception the application raised into us."""
        self._counts["applicationErrors"] += 1

    def _heapTrimmed(self, seconds: float) -> None:
        self._counts["memoryTrims"] += 1
        if seconds > self._longestTrim[0]:
            self._longestTrim[0] = seconds
        self._afterWave()

    def _afterWave(self) -> None:
        """A wave of sessions is over: let go of the numbers made during it.

        Counted on the hot paths as plain ints and times, each would keep
        some of the wave's memory from going back to the system
        (``mnet_twisted.counts``): the counts fold into arrays, the times
        go back to a constant, and the rate limits forget the sources
        whose buckets refilled.
        """
        self.stats.fold()
        self._limitsLogDue = 0.0
        if isinstance(self._port, MNETPort):
            self._port.afterWave()
        if self.demux is not None:
            self.demux.after_wave(self._reactor.seconds())

    def _openTrace(self, session: Any, now: float) -> SessionTracer | None:
        """A trace file for a new session: DIR/mnet-<time>-<port>-<tag>.jsonl (if tracing)."""
        if self.traceDirectory is None:
            return None
        port = self.transport.getHost().port if self.transport is not None else 0
        name = f"mnet-{now:.6f}-{port}-{session.local_tag.hex()}.jsonl"
        try:
            trace_file = open(os.path.join(self.traceDirectory, name), "w")  # noqa: SIM115
        except OSError as error:
            self._log.warn("No packet trace for an MNET session: {error}", error=error)
            return None
        self._traceFiles[session] = trace_file

        def write(line: str) -> None:
            if not trace_file.closed:
                trace_file.write(line)

        return SessionTracer(write, now)

    # -- structured logs: every field named, for JSON and other observers -----

    def _logOpened(self, transport: MNETTransport, how: str) -> None:
        if not self.logSessions:
            return
        peer = transport.session.peer_address
        self._log.debug(
            "MNET session {session} {how} ({peerHost}:{peerPort})",
            session=transport.logPrefix(),
            how=how,
            peerHost=peer[0],
            peerPort=peer[1],
        )

    def _logClosed(self, transport: MNETTransport, event: Closed, lost: bool) -> None:
        reason = event.reason
        level, why = _CLOSE_LOGGING.get(reason, (LogLevel.info, reason.value))
        if lost:
            level, why = LogLevel.info, "lost with its UDP port"
        elif level is LogLevel.debug and not self.logSessions:
            return
        peer = transport.session.peer_address
        self._log.emit(
            level,
            "MNET session {session} ({peerHost}:{peerPort}) ended: {why}",
            session=transport.logPrefix(),
            peerHost=peer[0],
            peerPort=peer[1],
            why=why,
            reason=reason.value,
            detail=event.detail,
            stats=_fields(transport.getStats()),
        )

    def _callInContext(self, newContext: Any, method: Any, *args: Any) -> Any:
        """C{context.call}, bound once to the reactor thread's context tracker."""
        tracker = context.theContextTracker
        current = getattr(tracker, "currentContext", None)
        bound = current().callWithContext if current is not None else tracker.callWithContext
        self._callInContext = bound  # type: ignore[method-assign]
        return bound(newContext, method, *args)

    def callApplication(self, transport: MNETTransport, method: Any, *args: Any) -> bool:
        """
        Call application code for C{transport}'s session.

        An exception is logged and ends that session alone, as an exception in
        C{dataReceived} ends a TCP connection; the other sessions of this port
        go on.  Returns whether the call succeeded.
        """
        log_context = transport._logContext
        if log_context is None:
            # What log.callWithContext builds on every call, built once: the
            # surrounding log context with the session's prefix as "system".
            system = dict(context.get(ILogContext) or {})
            system["system"] = transport.logPrefix()
            log_context = transport._logContext = {ILogContext: system}
        try:
            self._callInContext(log_context, method, *args)
        except Exception:
            self._applicationError()
            failure = Failure()
            self._log.failure(
                "Unhandled error in {protocol}; aborting its MNET session",
                failure=failure,
                protocol=transport.protocol,
            )
            transport._applicationFailed(failure)
            return False
        return True


def _fields(snapshot: Any) -> dict[str, Any]:
    """A flat dataclass's fields as a dict (``dataclasses.asdict`` costs ten times more)."""
    kind = type(snapshot)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        # Not __slots__: a class the compiled build made has none.
        names = _FIELD_NAMES[kind] = tuple(field.name for field in dataclasses.fields(snapshot))
    return {name: getattr(snapshot, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


#: How a session's end is logged: the level, and what it says.
_CLOSE_LOGGING = {
    CloseReason.CLEAN: (LogLevel.debug, "closed cleanly"),
    CloseReason.ABORTED_LOCALLY: (LogLevel.debug, "aborted here"),
    CloseReason.ABORTED_BY_PEER: (LogLevel.info, "aborted by the peer"),
    CloseReason.PEER_TIMEOUT: (LogLevel.info, "peer declared dead (no progress)"),
    CloseReason.SHUTDOWN_TIMEOUT: (LogLevel.info, "peer declared dead while closing"),
    CloseReason.PROTOCOL_ERROR: (LogLevel.warn, "the peer broke the protocol"),
}


def _connectFailure(session: Any, event: Closed, lost: bool) -> Exception:
    detail = event.detail or event.reason.value
    if event.reason is CloseReason.REFUSED:
        return ConnectionRefusedError(detail)
    if event.reason is CloseReason.CONNECT_TIMEOUT:
        return TimeoutError(detail)
    return ConnectionLost(detail)
