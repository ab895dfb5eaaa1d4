"""
``twistd mnet-echo`` / ``twist mnet-echo``: an echo server over MNET.

    twistd -n mnet-echo --listen mnet:9000:interface=127.0.0.1 --stats-interval 60
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage

from ._services import STATS_INTERVAL_OPTION, listeningService

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
        STATS_INTERVAL_OPTION,
    ]


def makeService(options: Options) -> service.IService:
    # On shutdown the port's stopListening closes every session gracefully.
    return listeningService(
        options["listen"], Factory.forProtocol(Echo), options["stats-interval"], "mnet-echo"
    )
