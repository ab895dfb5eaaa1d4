"""
``twistd mnet-echo`` / ``twist mnet-echo``: an echo server over MNET.

    twistd -n mnet-echo --listen mnet:9000:interface=127.0.0.1
"""

from __future__ import annotations

from twisted.application import service, strports
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage

__all__ = ["Echo", "Options", "makeService"]


class Echo(Protocol):
    """Writes back whatever it receives."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


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
    # On shutdown the port's stopListening closes every session gracefully.
    return strports.service(options["listen"], Factory.forProtocol(Echo))
