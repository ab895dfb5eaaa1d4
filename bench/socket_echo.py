"""
A 64-byte echo over real loopback sockets, both ends in one reactor:

    .venv/bin/python bench/socket_echo.py [--messages 5000] [--instructions]
    .venv/bin/python bench/socket_echo.py --cycles [--messages 5000] [--instructions]

An MNET listener and one client session in this process, through the
endpoint strings, Twisted's reactor and the kernel's UDP: the client
sends, the server's protocol echoes, the client sends the next message
once the whole echo is back.  Prints the mean round trip in microseconds.
Unlike ``bench/suite.py`` (separate processes, the same scenario against
Twisted TCP) it exists to weigh MNET's own Python on both ends, Twisted
adapter included: ``--instructions`` counts the user-space CPU
instructions per round trip under valgrind (callgrind, if installed), the
difference between a run of 1,000 and one of 3,000 messages, each in a
process of its own.  The kernel's share of a ``sendmsg`` is not counted.

``--cycles`` weighs the connection scenario instead: each message is a
whole cycle of connect (the client sharing one socket between its
sessions, as ``bench/suite.py``'s connect scenario does), one echo, and
close, the next cycle starting once both ends have seen the close.

``--tcp`` runs the same over Twisted's TCP, for the floor: there the
kernel does the handshake, the acks and the retransmission timers, so
its user-space count is what Twisted itself costs per message.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import _engine

sys.path.insert(0, _engine.ENGINE_PATH)

from _instructions import available, per_unit
from twisted.internet import defer, protocol

MESSAGE = b"x" * 64
#: The client transports' classes, printed after the timing: what carried it.
CARRIERS: set[str] = set()


def _note_carrier(transport: Any) -> None:
    kind = type(transport)
    CARRIERS.add(f"{kind.__module__}.{kind.__qualname__}")


#: The two run lengths whose difference ``--instructions`` reports.
_SHORT_RUN, _LONG_RUN = 1_000, 3_000


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Asker(protocol.Protocol):
    """Sends ``count`` messages one after another; ``done`` fires after the last echo."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.pending = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        _note_carrier(self.transport)
        self._ask()

    def _ask(self) -> None:
        self.pending = len(MESSAGE)
        self.transport.write(MESSAGE)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if data != MESSAGE[: len(data)]:
            raise AssertionError(f"the echo came back changed: {data!r}")
        self.pending -= len(data)
        if self.pending:
            return
        self.left -= 1
        if self.left:
            self._ask()
        else:
            self.done.callback(None)


class CycleAsker(protocol.Protocol):
    """One echo, then close; ``closed`` fires when the session is gone."""

    def __init__(self) -> None:
        self.pending = len(MESSAGE)
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        _note_carrier(self.transport)
        self.transport.write(MESSAGE)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if data != MESSAGE[-self.pending :][: len(data)]:
            raise AssertionError(f"the echo came back changed: {data!r}")
        self.pending -= len(data)
        if not self.pending:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class TrackedEcho(Echo):
    def __init__(self, ends: EndCountingFactory) -> None:
        self.ends = ends

    def connectionLost(self, reason: Any = None) -> None:
        self.ends.ended_one()


class EndCountingFactory(protocol.Factory):
    """Builds echo sessions and counts those that ended, waking whoever waits for the next."""

    def __init__(self) -> None:
        self.ended = 0
        self.waiting: defer.Deferred[None] | None = None

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return TrackedEcho(self)

    def ended_one(self) -> None:
        self.ended += 1
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(None)

    async def until(self, count: int) -> None:
        while self.ended < count:
            self.waiting = defer.Deferred()
            await self.waiting


def _server(tcp: bool) -> str:
    return ("tcp" if tcp else "mnet") + ":0:interface=127.0.0.1"


async def cycles(reactor: Any, count: int, tcp: bool = False) -> float:
    """Seconds for ``count`` cycles of connect, one echo and close, both ends closed."""
    from twisted.internet.endpoints import clientFromString, serverFromString

    from mnet_twisted import MNETClientEndpoint

    ends = EndCountingFactory()
    port = await serverFromString(reactor, _server(tcp)).listen(ends)
    number = port.getHost().port
    client = (
        clientFromString(reactor, f"tcp:host=127.0.0.1:port={number}")
        if tcp
        else MNETClientEndpoint(reactor, "127.0.0.1", number, shareSocket=True)
    )
    started = time.perf_counter()
    for done in range(1, count + 1):
        asker = await client.connect(protocol.Factory.forProtocol(CycleAsker))
        await asker.closed
        await ends.until(done)
    elapsed = time.perf_counter() - started
    await port.stopListening()
    return elapsed


async def echo(reactor: Any, count: int, tcp: bool = False) -> float:
    """Seconds for ``count`` round trips (the connect and close not included)."""
    from twisted.internet.endpoints import clientFromString, serverFromString

    port = await serverFromString(reactor, _server(tcp)).listen(protocol.Factory.forProtocol(Echo))
    kind = "tcp" if tcp else "mnet"
    client = clientFromString(reactor, f"{kind}:host=127.0.0.1:port={port.getHost().port}")
    asker = Asker(count)
    started = time.perf_counter()
    await client.connect(protocol.Factory.forProtocol(lambda: asker))
    await asker.done
    elapsed = time.perf_counter() - started
    asker.transport.loseConnection()  # type: ignore[union-attr]
    await port.stopListening()
    return elapsed


def run(count: int, whole_cycles: bool, tcp: bool = False) -> float:
    from twisted.internet import reactor

    result: list[Any] = []
    done = defer.ensureDeferred((cycles if whole_cycles else echo)(reactor, count, tcp))
    done.addBoth(result.append)
    done.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if not isinstance(result[0], float):
        result[0].raiseException()
    return float(result[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument(
        "--cycles",
        action="store_true",
        help="each message is a cycle of connect, one echo and close (a shared client socket)",
    )
    parser.add_argument(
        "--tcp", action="store_true", help="Twisted's TCP instead of MNET, for comparison"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the user-space CPU instructions per round trip instead of timing "
        "(valgrind's callgrind; about a minute)",
    )
    options = parser.parse_args()
    what = "connect + echo + close" if options.cycles else "socket echo round trip"
    if options.tcp:
        what += " (Twisted TCP)"
    if not options.instructions:
        seconds = run(options.messages, options.cycles, options.tcp)
        print(f"{what}, both ends: {seconds / options.messages * 1e6:.1f} µs")
        print(f"carried by: {', '.join(sorted(CARRIERS))}")
        print(f"engine: {_engine.ENGINE}")
    elif not available():
        print("valgrind is not installed: instructions not counted")
    else:
        short, long = (
            (_SHORT_RUN // 5, _LONG_RUN // 5) if options.cycles else (_SHORT_RUN, _LONG_RUN)
        )
        mode = (["--cycles"] if options.cycles else []) + (["--tcp"] if options.tcp else [])
        count = per_unit(
            __file__, lambda messages: [*mode, "--messages", str(messages)], short, long
        )
        print(f"{what}, both ends: {count:,.0f} instructions")


if __name__ == "__main__":
    main()
