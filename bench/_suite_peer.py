"""
One process of ``bench/suite.py``'s latency and connection scenarios.

    python bench/_suite_peer.py server --proto mnet
    python bench/_suite_peer.py echo --proto mnet --port P --count N
    python bench/_suite_peer.py connect --proto mnet --port P --count N [--seconds S]

``server`` echoes everything back on every connection it accepts and
announces ``{"event": "listening", "port": P}``.  ``echo`` opens one
connection and times ``count`` 64-byte round trips one after another.
``connect`` times ``count`` rounds (or as many as fit in ``--seconds``) of
connect, one 64-byte echo, and close, one after another, in ``--parallel``
loops at once; ``--early-data`` makes MNET clients established at the
COOKIE (``SessionConfig.early_data``).  Each client ends
with one ``{"event": "result", ...}`` JSON line; every echo is checked byte
for byte, and a digest of all bytes echoed is reported.

``--breakdown`` (server and echo) times each side's part of a round trip:
from the read that brought a message to the send of what answers it, and
the send call itself (the median of each, µs); the echo client adds them to
its result, the server reports them (``{"event": "breakdown", ...}``) when
a connection ends.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from typing import Any

from _peer_run import emit, run_job
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

MESSAGE_SIZE = 64


class Turnarounds:
    """One side's part of each round trip: its read to its answer's send.

    The time from the start of the read that brought a message to the start
    of the next send is this process's work (the reactor's and the
    protocol's); the send call's own time is the kernel's, on loopback
    including the delivery to the peer and its wake-up.  The read and send
    methods of the transport's class are wrapped, which adds a call and a
    clock reading or two to each, on both protocols alike.
    """

    def __init__(self) -> None:
        self.read_at: int | None = None
        self.turns: list[int] = []
        self.sends: list[int] = []

    def install(self, proto: str) -> None:
        if proto == "mnet":
            from mnet_twisted.udpport import MNETPort

            self._wrap(MNETPort, "doRead", "writeDatagram")
        else:
            from twisted.internet.tcp import Connection

            self._wrap(Connection, "doRead", "writeSomeData")

    def _wrap(self, kind: type, read_name: str, send_name: str) -> None:
        read, send = getattr(kind, read_name), getattr(kind, send_name)
        clock, turnarounds = time.perf_counter_ns, self

        def timed_read(transport: Any, *args: Any, **kwargs: Any) -> Any:
            if turnarounds.read_at is None:
                turnarounds.read_at = clock()
            return read(transport, *args, **kwargs)

        def timed_send(transport: Any, *args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return send(transport, *args, **kwargs)
            finally:
                if turnarounds.read_at is not None:
                    turnarounds.turns.append(started - turnarounds.read_at)
                    turnarounds.sends.append(clock() - started)
                    turnarounds.read_at = None

        setattr(kind, read_name, timed_read)
        setattr(kind, send_name, timed_send)

    def report(self) -> dict[str, float]:
        if not self.turns:
            return {}
        return {
            "turn_us": statistics.median(self.turns) / 1e3,
            "send_us": statistics.median(self.sends) / 1e3,
            "turns": len(self.turns),
        }


class Echo(Protocol):
    #: Set by ``--breakdown``: reported as each connection ends.
    turnarounds: Turnarounds | None = None

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.turnarounds is not None:
            emit(event="breakdown", **self.turnarounds.report())


class EchoClient(Protocol):
    """Sends one message at a time; ``reply`` fires when all of it came back."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.reply: defer.Deferred[bytes] | None = None
        self.expected = 0
        self.closed: defer.Deferred[None] = defer.Deferred()

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        self.reply = defer.Deferred()
        self.expected = len(message)
        self.transport.write(message)
        return self.reply

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.reply is not None and len(self.buffer) >= self.expected:
            reply, self.reply = self.reply, None
            data, self.buffer = self.buffer, b""
            reply.callback(data)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


def _endpoints(options: argparse.Namespace, reactor: Any) -> tuple[Any, Any]:
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

    from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint

    if options.proto == "mnet":
        return MNETServerEndpoint, MNETClientEndpoint
    return TCP4ServerEndpoint, TCP4ClientEndpoint


def _message(index: int) -> bytes:
    return index.to_bytes(8, "big") * (MESSAGE_SIZE // 8)


async def serve(options: argparse.Namespace, reactor: Any) -> None:
    if options.breakdown:
        Echo.turnarounds = Turnarounds()
        Echo.turnarounds.install(options.proto)
    server, _ = _endpoints(options, reactor)
    port = await server(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Echo))
    emit(event="listening", port=port.getHost().port)
    await defer.Deferred()  # until killed


def _client(options: argparse.Namespace, reactor: Any) -> Any:
    _, client = _endpoints(options, reactor)
    extra: dict[str, Any] = {}
    if options.proto == "mnet" and options.share_socket:
        extra["shareSocket"] = True
    if options.early_data:
        from mnet_twisted.config import SessionConfig

        extra["config"] = SessionConfig(early_data=True)
    return client(reactor, "127.0.0.1", options.port, timeout=10, **extra)


async def echo(options: argparse.Namespace, reactor: Any) -> None:
    turnarounds = Turnarounds() if options.breakdown else None
    if turnarounds is not None:
        turnarounds.install(options.proto)
    endpoint = _client(options, reactor)
    protocol = await endpoint.connect(Factory.forProtocol(EchoClient))
    digest = hashlib.sha256()
    times = []
    for index in range(options.count):
        message = _message(index)
        started = time.perf_counter()
        reply = await protocol.ask(message)
        times.append(time.perf_counter() - started)
        if reply != message:
            raise AssertionError(f"echo {index} came back different")
        digest.update(reply)
    protocol.transport.loseConnection()
    await protocol.closed
    breakdown = turnarounds.report() if turnarounds is not None else {}
    emit(event="result", times=times, sha256=digest.hexdigest(), breakdown=breakdown)


async def connect(options: argparse.Namespace, reactor: Any) -> None:
    endpoint = _client(options, reactor)
    digest = hashlib.sha256()
    connects: list[float] = []
    rounds: list[float] = []
    began = time.perf_counter()
    counter = iter(range(2**62))

    def more(index: int) -> bool:
        if options.seconds is not None:
            return time.perf_counter() - began < options.seconds
        return index < options.count

    async def loop() -> None:
        while more(index := next(counter)):
            message = _message(index)
            started = time.perf_counter()
            protocol = await endpoint.connect(Factory.forProtocol(EchoClient))
            connected = time.perf_counter()
            reply = await protocol.ask(message)
            if reply != message:
                raise AssertionError(f"echo {index} came back different")
            protocol.transport.loseConnection()
            await protocol.closed
            rounds.append(time.perf_counter() - started)
            connects.append(connected - started)
            digest.update(reply)

    await defer.gatherResults(
        [defer.ensureDeferred(loop()) for _ in range(options.parallel)], consumeErrors=True
    )
    emit(
        event="result",
        connects=connects,
        rounds=rounds,
        seconds=time.perf_counter() - began,
        sha256=digest.hexdigest(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["server", "echo", "connect"])
    parser.add_argument("--proto", choices=["mnet", "tcp"], required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--parallel", type=int, default=1, help="connect: sessions opened at once")
    parser.add_argument(
        "--share-socket", action="store_true", help="MNET clients share one UDP port"
    )
    parser.add_argument(
        "--early-data", action="store_true", help="MNET clients send data behind the echo"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="server, echo: time each side's turnaround"
    )
    options = parser.parse_args()
    job = {"server": serve, "echo": echo, "connect": connect}[options.role]
    run_job(lambda reactor: job(options, reactor))


if __name__ == "__main__":
    sys.exit(main())
