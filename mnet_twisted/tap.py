"""
``twistd mnet-echo`` / ``twist mnet-echo``: an echo server over MNET.

    twistd -n mnet-echo --listen mnet:9000:interface=127.0.0.1
"""

from __future__ import annotations

from typing import Any

from twisted.application import service, strports
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage

__all__ = ["EchoFactory", "Options", "makeService"]


class Echo(Protocol):
    """Writes back whatever it receives."""

    def connectionMade(self) -> None:
        self.factory.sessions.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.sessions.discard(self)


class EchoFactory(Factory):
    protocol = Echo

    def __init__(self) -> None:
        self.sessions: set[Echo] = set()


class _CloseSessionsOnStop(service.Service):
    """
    Closes every echo session gracefully when the service stops.

    The MNET port's stopListening waits for its sessions to end, and MNET has
    no keep-alive, so an idle client would otherwise hold a shutdown forever.
    """

    def __init__(self, factory: EchoFactory) -> None:
        self._factory = factory

    def stopService(self) -> Any:
        for protocol in list(self._factory.sessions):
            protocol.transport.loseConnection()
        return service.Service.stopService(self)


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT]"
    longdesc = "Echo server over MNET (a reliable byte stream over UDP)."
    optParameters = [
        [
            "listen",
            "l",
            "mnet:9000",
            "Endpoint description to listen on (mnet:PORT[:interface=IP])",
        ],
    ]


def makeService(options: Options) -> service.IService:
    factory = EchoFactory()
    top = service.MultiService()
    strports.service(options["listen"], factory).setServiceParent(top)
    # Added last, so it stops first: sessions close before the port waits on them.
    _CloseSessionsOnStop(factory).setServiceParent(top)
    return top
