"""
:class:`MNETTransport`: what an application protocol sees of one MNET session.

It behaves like a TCP transport: ``write`` buffers (in the session) and never
calls back into the protocol; flow control reaches a registered producer
through the session's high/low water marks; ``pauseProducing`` stops
``dataReceived`` for real, and the core then pushes back on the peer by
dropping what no longer fits its receive buffer.
"""

from __future__ import annotations

#: Docstrings here use epytext (C{code}, L{link}, @param), as Twisted's do.
__docformat__ = "epytext"

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    ILoggingContext,
    IProducer,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import SessionClosedError
from .events import Closed, CloseReason
from .session import SessionStats

if TYPE_CHECKING:
    from .protocol import MNETDatagramProtocol

__all__ = ["MNETTransport"]

#: The reason given for every clean close, as Twisted's own
#: C{twisted.internet.protocol.connectionDone} is shared: a Failure made per
#: close would also move C{twisted.python.failure.count}, and its last value,
#: made during a wave of closes, would keep one of the wave's memory arenas
#: from going back to the system (docs/scaling.md).
_CLEAN_CLOSE = Failure(ConnectionDone(CloseReason.CLEAN.value))


@implementer(ITransport, IConsumer, IPushProducer, ILoggingContext)
class MNETTransport:
    """
    The transport of one MNET session.

    @ivar connected: true from the handshake until C{connectionLost}.
    @ivar disconnecting: true once L{loseConnection} was called.
    @ivar disconnected: true once the session is over.
    @ivar producer: the registered producer, or C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        mnet: MNETDatagramProtocol,
        session: Any,
        protocol: Any,
        sessionNo: int,
    ) -> None:
        self._mnet = mnet
        self._session = session
        self.protocol = protocol
        self.sessionNo = sessionNo
        self.connected = True
        self.disconnecting = False
        self.disconnected = False
        self.producer: IProducer | None = None
        self.streamingProducer = False
        self.producerPaused = False
        self._closeAfterProducer = False
        self._failure: Failure | None = None
        self._readingPaused = False
        #: The log context application calls run in (built on first use).
        self._logContext: dict[Any, Any] | None = None
        if session.is_connector:
            self._logstr = f"{type(protocol).__name__},client"
        else:
            host = session.peer_address[0]
            self._logstr = f"{type(protocol).__name__},{sessionNo},{host}"

    @property
    def session(self) -> Any:
        """The sans-IO session under this transport (read-only inspection)."""
        return self._session

    def __repr__(self) -> str:
        return f"<MNETTransport {self._logstr} to {self._session.peer_address!r}>"

    # -- ILoggingContext --------------------------------------------------------

    def getStats(self) -> SessionStats:
        """A snapshot of this session's counters and state (see L{SessionStats})."""
        stats: SessionStats = self._session.stats()
        return stats

    def logPrefix(self) -> str:
        return self._logstr

    # -- ITransport ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        if not data or not self.connected or self.disconnecting:
            return
        try:
            self._session.send(data)
        except SessionClosedError:
            return  # the session ended (or is closing) under the application
        self._mnet.scheduleFlush()
        if self.producer is not None:
            self._checkHighWater()

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        chunks = list(iovec)
        for chunk in chunks:
            if not isinstance(chunk, bytes):
                raise TypeError(f"Data must be bytes, not {type(chunk).__name__}")
        self.write(b"".join(chunks))

    def loseConnection(self) -> None:
        """Deliver everything written, then close the session gracefully."""
        if not self.connected or self.disconnecting:
            return
        self.disconnecting = True
        if self.producer is not None and not self.streamingProducer:
            # A pull producer still has data to give: close when it unregisters,
            # as a TCP transport does.
            self._closeAfterProducer = True
            return
        self._closeSession()

    def abortConnection(self) -> None:
        """Send ABORT now; C{connectionLost} follows with C{ConnectionAborted}."""
        if self.disconnected:
            return
        self.disconnecting = True
        self._closeAfterProducer = False
        self._session.abort(self._mnet._reactor.seconds())
        self._mnet.scheduleFlush()

    def getPeer(self) -> Any:
        from .protocol import peerAddress

        return peerAddress(self._session.peer_address)

    def getHost(self) -> Any:
        return self._mnet._port.getHost()

    # -- IConsumer ------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer "
                f"{self.producer!r} was never unregistered."
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = bool(streaming)
        self.producerPaused = False
        if streaming:
            self._checkHighWater()
        else:
            producer.resumeProducing()  # type: ignore[attr-defined]
            if self.producer is producer:
                self._armLowWater()
                self._mnet.scheduleFlush()

    def unregisterProducer(self) -> None:
        self.producer = None
        self.producerPaused = False
        if self._closeAfterProducer:
            self._closeAfterProducer = False
            self._closeSession()

    # -- IPushProducer (incoming data) -------------------------------------------

    def pauseProducing(self) -> None:
        """Stop C{dataReceived} calls until L{resumeProducing}."""
        if self.disconnected or self._readingPaused:
            return
        self._readingPaused = True
        self._session.pause_reading()
        self._mnet.scheduleFlush()

    def resumeProducing(self) -> None:
        if self.disconnected or not self._readingPaused:
            return
        self._readingPaused = False
        self._session.resume_reading()
        self._mnet.scheduleFlush()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- called by MNETDatagramProtocol ------------------------------------------

    def _closeSession(self) -> None:
        self._session.close(self._mnet._reactor.seconds())
        self._mnet.scheduleFlush()

    def _checkHighWater(self) -> None:
        if (
            self.producer is not None
            and self.streamingProducer
            and not self.producerPaused
            and self._session.send_buffer_size > self._mnet.config.send_buffer_high_water
        ):
            self.producerPaused = True
            self.producer.pauseProducing()  # type: ignore[attr-defined]
            if self.producer is not None:
                self._armLowWater()

    def _armLowWater(self) -> None:
        if not self.disconnected and self.producer is not None:
            self._session.notify_when_send_buffer_low()

    def _sendBufferLow(self) -> None:
        producer = self.producer
        if producer is None or self.disconnected:
            return
        if self.streamingProducer:
            if self.producerPaused:
                self.producerPaused = False
                self._callProducer(producer.resumeProducing)  # type: ignore[attr-defined]
        else:
            self._callProducer(producer.resumeProducing)  # type: ignore[attr-defined]
            if self.producer is producer:
                self._mnet._armLowWater.append(self)

    def _callProducer(self, method: Any) -> None:
        self._mnet.callApplication(self, method)

    def _applicationFailed(self, failure: Failure) -> None:
        # Twisted TCP hands the exception itself to connectionLost.
        if self.disconnected:
            return
        if self._failure is None:
            self._failure = failure
        self.disconnecting = True
        self._session.abort(self._mnet._reactor.seconds())

    def _closed(self, event: Closed, lost: bool = False) -> None:
        self.connected = False
        self.disconnected = True
        self.disconnecting = False
        reason = self._reason(event, lost)
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.stopProducing()
            except Exception:
                self._log.failure("{producer}.stopProducing() failed", producer=producer)
        protocol = self.protocol
        try:
            protocol.connectionLost(reason)
        except Exception:
            self._mnet._applicationError()
            self._log.failure("Unhandled error in {protocol}.connectionLost", protocol=protocol)
        # As Twisted's TCP connections do: the protocol's reference back to
        # its transport makes a cycle, and a cycle waits for the collector,
        # which with thousands of sessions closing is a long pause later.
        self.protocol = None
        self._logContext = None

    def _reason(self, event: Closed, lost: bool) -> Failure:
        if self._failure is not None:
            return self._failure
        detail = event.detail or event.reason.value
        if lost:
            return Failure(ConnectionLost(f"the MNET port closed: {detail}"))
        if event.reason is CloseReason.CLEAN:
            if event.detail:
                return Failure(ConnectionDone(detail))
            # A protocol may have raised it (reason.raiseException()): what
            # that left on it would keep the raiser's frames.
            shared = _CLEAN_CLOSE.value
            shared.__traceback__ = shared.__context__ = shared.__cause__ = None
            return _CLEAN_CLOSE
        if event.reason is CloseReason.ABORTED_LOCALLY:
            return Failure(ConnectionAborted(detail))
        return Failure(ConnectionLost(f"MNET session ended: {detail}"))
