"""
``twistd mnet-forward``: forward connections between any two endpoints.

    twistd -n mnet-forward --listen tcp:2222 --connect mnet:host=H:port=22
    twistd -n mnet-forward --listen mnet:9022 --connect tcp:host=127.0.0.1:port=22

Each connection accepted on ``--listen`` gets its own connection to
``--connect``; bytes flow both ways unchanged.  Each transport is the
streaming producer of the other, so a slow side pauses reading on the fast
side (and MNET then stops acknowledging, which stops the peer).  A side
that half-closes (TCP FIN) half-closes the other where it can, and closes it
otherwise (MNET has no half-close) once what was read has been written; a
side that closes closes the other the same way.  Each connection's start,
end and failure to connect are logged with both ends named.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IHalfCloseableDescriptor, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from ._services import STATS_INTERVAL_OPTION, listeningService

__all__ = ["ForwardingFactory", "Options", "makeService"]


@implementer(IHalfCloseableProtocol)
class _Side(Protocol):
    """One end of a forwarded connection; ``other`` is the opposite end."""

    _log = Logger()
    other: _Side | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.write(data)

    def readConnectionLost(self) -> None:
        """This side sent FIN: pass it on, or close the other side once it has written all."""
        other = self.other
        if other is None or other.transport is None:
            return
        if IHalfCloseableDescriptor.providedBy(other.transport):
            other.transport.loseWriteConnection()
        else:
            other.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        other, self.other = self.other, None
        if other is not None and other.transport is not None:
            other.other = None
            # A transport closing with a paused producer still registered
            # waits for that producer forever: let go of this side first.
            other.transport.unregisterProducer()
            other.transport.loseConnection()  # after what is buffered has gone


def _join(inbound: _Side, outbound: _Side) -> None:
    inbound.other, outbound.other = outbound, inbound
    # Backpressure both ways: each side pauses the other's reading.
    inbound.transport.registerProducer(outbound.transport, True)
    outbound.transport.registerProducer(inbound.transport, True)


class _Inbound(_Side):
    _lost = False

    def connectionMade(self) -> None:
        factory: ForwardingFactory = self.factory
        self.transport.pauseProducing()  # nothing is read until the other end exists
        self._where = f"{self.transport.getPeer()} -> {factory.description}"
        connecting = factory.target.connect(Factory.forProtocol(_Side))
        connecting.addCallbacks(self._connected, self._failed)

    def _connected(self, outbound: _Side) -> None:
        if self._lost:
            outbound.transport.loseConnection()  # the client left meanwhile
            return
        _join(self, outbound)
        self._log.info("Forwarding {where}", where=self._where)
        self.transport.resumeProducing()

    def _failed(self, failure: Failure) -> None:
        self._log.warn(
            "Forwarding {where} failed: {error}",
            where=self._where,
            error=failure.getErrorMessage(),
        )
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        if self.other is not None:
            self._log.info("Forwarding {where} ended", where=self._where)
        super().connectionLost(reason)


class ForwardingFactory(Factory):
    """Accepts connections and forwards each to a new connection to ``target``."""

    protocol = _Inbound

    def __init__(self, target: Any, description: str) -> None:
        self.target = target
        self.description = description


class Options(usage.Options):
    synopsis = "--listen ENDPOINT --connect ENDPOINT"
    longdesc = (
        "Forward every connection accepted on one endpoint to another, e.g. TCP to"
        " MNET (--listen tcp:2222 --connect mnet:host=H:port=22) or back."
    )
    optParameters = [
        ["listen", "l", None, "Endpoint description to listen on (tcp:PORT, mnet:PORT, ...)"],
        ["connect", "c", None, "Endpoint description to connect each connection to"],
        STATS_INTERVAL_OPTION,
    ]

    def postOptions(self) -> None:
        for name in ("listen", "connect"):
            if not self[name]:
                raise usage.UsageError(f"--{name} is required")


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    target = clientFromString(reactor, options["connect"])
    factory = ForwardingFactory(target, options["connect"])
    return listeningService(options["listen"], factory, options["stats-interval"], "mnet-forward")
