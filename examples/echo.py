"""
An MNET echo server and a client in one process: the client sends a few
lines, prints what comes back, and closes; then the server stops.

    python examples/echo.py
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineReceiver

from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Client(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.replies: list[bytes] = []
        self.done: defer.Deferred[list[bytes]] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.replies.append(line)
        print("echoed:", line.decode())
        if len(self.replies) == 3:
            self.done.callback(self.replies)


async def main(reactor) -> None:  # type: ignore[no-untyped-def]
    port = await MNETServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Echo)
    )
    endpoint = MNETClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await endpoint.connect(Factory.forProtocol(Client))
    for line in (b"hello", b"over", b"MNET"):
        client.sendLine(line)
    await client.done
    client.transport.loseConnection()
    await port.stopListening()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
