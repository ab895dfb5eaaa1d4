"""
A LineReceiver chat over MNET: every line a client sends goes to every other
client, prefixed with the sender's name.

    python examples/chat.py server 9400
    python examples/chat.py client 127.0.0.1 9400 alice     # then type lines
"""

from __future__ import annotations

import sys

from twisted.internet import defer, stdio, task
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint


class Member(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.name: bytes | None = None

    def lineReceived(self, line: bytes) -> None:
        if self.name is None:  # the first line is the name
            self.name = line
            self.factory.members.add(self)
            print(f"{line.decode(errors='replace')} joined", flush=True)
            return
        for other in self.factory.members - {self}:
            other.sendLine(self.name + b": " + line)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.members.discard(self)


class Room(Factory):
    protocol = Member

    def __init__(self) -> None:
        self.members: set[Member] = set()


class Terminal(LineReceiver):
    """Standard input to the room, the room to standard output."""

    delimiter = b"\n"

    def __init__(self, room: LineReceiver) -> None:
        self.room = room

    def lineReceived(self, line: bytes) -> None:
        self.room.sendLine(line)

    def connectionLost(self, reason: object = None) -> None:
        self.room.transport.loseConnection()  # end of input: leave the room


class Speaker(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.left: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        sys.stdout.write(line.decode() + "\n")
        sys.stdout.flush()

    def connectionLost(self, reason: object = None) -> None:
        self.left.callback(None)


async def serve(reactor, port: int) -> None:  # type: ignore[no-untyped-def]
    await MNETServerEndpoint(reactor, port, interface="127.0.0.1").listen(Room())
    print(f"chat room on MNET port {port}", flush=True)
    await defer.Deferred()  # until interrupted


async def join(reactor, host: str, port: int, name: str) -> None:  # type: ignore[no-untyped-def]
    speaker = await MNETClientEndpoint(reactor, host, port).connect(Factory.forProtocol(Speaker))
    speaker.sendLine(name.encode())
    stdio.StandardIO(Terminal(speaker), reactor=reactor)
    await speaker.left


def main(argv: list[str]) -> None:
    if argv[:1] == ["server"] and len(argv) == 2:
        task.react(lambda reactor: defer.ensureDeferred(serve(reactor, int(argv[1]))))
    elif argv[:1] == ["client"] and len(argv) == 4:
        task.react(
            lambda reactor: defer.ensureDeferred(join(reactor, argv[1], int(argv[2]), argv[3]))
        )
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
