"""
Bulk throughput over loopback: one MNET session against one Twisted TCP
connection, measured side by side in the same run and the same process.

    python bench/loopback_throughput.py --mib 50 --rounds 3

Both ends of each connection live in this one process (and on one core), so
the figures are for sender and receiver together.  The number that matters
is the ratio, since both transports see the same machine at the same time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint

CHUNK = b"\x5a" * 65536


class Sink(Protocol):
    """Counts bytes; fires ``factory.finished`` when all have arrived."""

    def connectionMade(self) -> None:
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.factory.total:
            self.factory.finished.callback(time.perf_counter())


@implementer(IPushProducer)
class Writer:
    """Writes ``total`` bytes as fast as the transport's flow control allows."""

    def __init__(self, transport: Any, total: int) -> None:
        self.transport = transport
        self.left = total
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            self.transport.write(CHUNK[: min(len(CHUNK), self.left)])
            self.left -= len(CHUNK)
        if self.left <= 0:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.paused = True


async def one_transfer(server: Any, client_for: Any, total: int) -> float:
    """Megabytes per second for ``total`` bytes from a client to a server."""
    factory = Factory.forProtocol(Sink)
    factory.total = total
    factory.finished = defer.Deferred()
    port = await server.listen(factory)
    protocol = await client_for(port.getHost().port).connect(Factory.forProtocol(Protocol))
    writer = Writer(protocol.transport, total)
    started = time.perf_counter()
    protocol.transport.registerProducer(writer, True)
    writer.resumeProducing()
    finished = await factory.finished.addTimeout(600, reactor)
    protocol.transport.loseConnection()
    await port.stopListening()
    return total / (finished - started) / 1e6


async def main(mib: int, rounds: int) -> None:
    total = mib * 1024 * 1024
    results: dict[str, list[float]] = {"MNET": [], "TCP": []}
    for _ in range(rounds):
        results["MNET"].append(
            await one_transfer(
                MNETServerEndpoint(reactor, 0, interface="127.0.0.1"),
                lambda port: MNETClientEndpoint(reactor, "127.0.0.1", port),
                total,
            )
        )
        results["TCP"].append(
            await one_transfer(
                TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                lambda port: TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                total,
            )
        )
    mnet, tcp = (statistics.median(results[name]) for name in ("MNET", "TCP"))
    print(f"{mib} MiB one way over loopback, median of {rounds} alternating rounds:")
    print(f"  MNET        {mnet:8.1f} MB/s   {', '.join(f'{x:.1f}' for x in results['MNET'])}")
    print(f"  Twisted TCP {tcp:8.1f} MB/s   {', '.join(f'{x:.1f}' for x in results['TCP'])}")
    print(f"  MNET / TCP  {mnet / tcp:8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=50, help="megabytes to move per transfer")
    parser.add_argument("--rounds", type=int, default=3, help="alternating MNET/TCP rounds")
    arguments = parser.parse_args()
    outcome: list[BaseException] = []

    def run() -> None:
        d = defer.ensureDeferred(main(arguments.mib, arguments.rounds))
        d.addErrback(lambda failure: outcome.append(failure.value))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if outcome:
        raise SystemExit(f"benchmark failed: {outcome[0]!r}")
