"""
``twistd mnet-echo`` / ``twist mnet-echo``: an echo server over MNET.

    twistd -n mnet-echo --listen mnet:9000:interface=127.0.0.1 --stats-interval 60
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.application import internet, service
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python import usage

__all__ = ["Echo", "Options", "makeService"]


class Echo(Protocol):
    """Writes back whatever it receives, and stops reading while its peer does not.

    The transport is registered as its own streaming producer (Twisted's
    producer/consumer contract, as over TCP): once the echoed data waiting
    for the peer passes the send buffer's high-water mark, the transport
    pauses reading, so the peer's further data is no longer taken (MNET then
    stops acknowledging it, which stops the peer); below the low-water mark
    reading resumes.  A peer that sends but never reads thus holds a bounded
    amount of memory here, not everything it sent.
    """

    def connectionMade(self) -> None:
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT] [--stats-interval SECONDS]"
    longdesc = "Echo server over MNET (a reliable byte stream over UDP)."
    optParameters = [
        [
            "listen",
            "l",
            "mnet:9000",
            "Endpoint description to listen on (mnet:PORT[:interface=IP])",
        ],
        [
            "stats-interval",
            None,
            0.0,
            "Log the listening port's totals every this many seconds (0: never)",
            float,
        ],
    ]


class _Recorded:
    """A server endpoint that remembers the port it listened on."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint
        self.port: Any = None

    def listen(self, factory: Any) -> Any:
        def remember(port: Any) -> Any:
            self.port = port
            return port

        return self._endpoint.listen(factory).addCallback(remember)


class _StatsLog:
    """Logs a listening port's totals (``getStats()``), one event with named fields."""

    _log = Logger()

    def __init__(self, endpoint: _Recorded) -> None:
        self._endpoint = endpoint

    def __call__(self) -> None:
        port = self._endpoint.port
        if port is None or not hasattr(port, "getStats"):
            return  # not listening yet, or not an MNET port
        totals = dataclasses.asdict(port.getStats())
        self._log.info(
            "mnet-echo: {sessions_open} session(s) open, {sessions_accepted} accepted,"
            " {sessions_refused} refused; {datagrams_received} datagrams in,"
            " {datagrams_sent} out",
            **totals,
        )


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    # On shutdown the port's stopListening closes every session gracefully.
    endpoint = _Recorded(serverFromString(reactor, options["listen"]))
    listening = internet.StreamServerEndpointService(endpoint, Factory.forProtocol(Echo))
    # As strports.service does: a port that cannot be bound fails startup.
    listening._raiseSynchronously = True
    interval = options["stats-interval"]
    if not interval:
        return listening
    top = service.MultiService()
    listening.setServiceParent(top)
    internet.TimerService(interval, _StatsLog(endpoint)).setServiceParent(top)
    return top
