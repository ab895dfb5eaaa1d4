"""
One end of one transfer for ``bench/lossy_netns.py``, run in its own process
(inside a network namespace, through ``ip netns exec``).

    python bench/_netns_peer.py receive --proto mnet --host 127.0.0.1 --port 0 --bytes N
    python bench/_netns_peer.py send --proto mnet --host 127.0.0.1 --port P --bytes N

Both ends speak JSON lines on stdout: the receiver first announces
``{"event": "listening", "port": P}``; each end ends with one
``{"event": "result", ...}`` line.  Times are ``time.monotonic()`` values,
which are CLOCK_MONOTONIC and so comparable between processes on one host
(network namespaces do not change the clock).

Two modes:

- ``--bytes N``: the sender writes N bytes of a fixed pseudo-random stream
  and closes gracefully; the receiver reports when all N have arrived, or
  what arrived once ``--timeout`` seconds have passed since the connection.
- ``--start-at T --until U``: the sender writes from T on, as fast as flow
  control lets it; the receiver counts the bytes that arrive before U, then
  reports and aborts the connection.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

#: The stream every sender writes: a fixed pseudo-random block, repeated.
#: Its odd length keeps repeats out of step with segment and chunk sizes.
PATTERN_PERIOD = 1_000_003
PATTERN = random.Random(0x4D4E4554).randbytes(PATTERN_PERIOD)
CHUNK = 65536
_LOOPED = PATTERN + PATTERN[:CHUNK]


def stream_chunks(total: int | None) -> Iterator[bytes]:
    """The sent stream, in chunks of at most CHUNK bytes (endless if ``total`` is None)."""
    offset = 0
    left = total
    while left is None or left > 0:
        size = CHUNK if left is None else min(CHUNK, left)
        yield _LOOPED[offset : offset + size]
        offset = (offset + size) % PATTERN_PERIOD
        if left is not None:
            left -= size


def stream_sha256(length: int) -> str:
    """SHA-256 of the first ``length`` bytes of the stream (checks a partial arrival)."""
    digest = hashlib.sha256()
    for chunk in stream_chunks(length):
        digest.update(chunk)
    return digest.hexdigest()


def port_counters(transport: Any) -> dict[str, int] | None:
    """What the MNET port under ``transport`` did: reads, writes, offloads."""
    mnet = getattr(transport, "_mnet", None)
    port = getattr(mnet, "transport", None)
    if mnet is None or port is None:
        return None
    names = ("readBatches", "quietReads", "coalescedReads", "batchedWrites")
    counters = {name: int(getattr(port, name, 0)) for name in names}
    counters["datagramsSent"] = mnet.stats["datagramsSent"]
    counters["datagramsReceived"] = mnet.stats["datagramsReceived"]
    counters["acksPassedOver"] = getattr(mnet.demux, "acks_passed_over", 0)
    return counters


def session_counters(transport: Any) -> dict[str, Any] | None:
    """An MNET session's own counters (``getStats()``): out-of-order segments and the like."""
    get_stats = getattr(transport, "getStats", None)
    if get_stats is None:
        return None
    return dataclasses.asdict(get_stats())


def emit(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


def reactor_() -> Any:
    from twisted.internet import reactor

    return reactor


class Receiving(Protocol):
    """Counts and hashes what arrives; reports once, then stops the reactor."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.received = 0
        self.digest = hashlib.sha256()
        self.connected: float | None = None
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.reported = False
        self.closing = False
        self.cpu_at_connect = 0.0

    def connectionMade(self) -> None:
        self.connected = time.monotonic()
        self.cpu_at_connect = time.process_time()
        self.options.connections += 1
        reactor = reactor_()
        if self.options.until is not None:
            reactor.callLater(
                max(0.0, self.options.until - time.monotonic()), self.report, "window"
            )
        else:
            reactor.callLater(self.options.timeout, self.report, "timeout")

    def dataReceived(self, data: bytes) -> None:
        if self.reported:
            return
        now = time.monotonic()
        if self.first_byte is None:
            self.first_byte = now
        self.last_byte = now
        self.received += len(data)
        self.digest.update(data)
        if self.options.bytes is not None and self.received >= self.options.bytes:
            self.report("complete")

    def report(self, how: str) -> None:
        if self.reported:
            return
        self.reported = True
        emit(
            event="result",
            role="receiver",
            proto=self.options.proto,
            bytes=self.received,
            sha256=self.digest.hexdigest(),
            connected=self.connected,
            first_byte=self.first_byte,
            last_byte=self.last_byte,
            ended=time.monotonic(),
            cpu_seconds=time.process_time() - self.cpu_at_connect,
            port=port_counters(self.transport),
            session=session_counters(self.transport),
            complete=how == "complete",
            timed_out=how == "timeout",
            how=how,
        )
        if how == "complete":
            # Stay for the sender's graceful close, but not forever.
            reactor_().callLater(15, self.transport.abortConnection)
        else:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.report("lost")
        reactor = reactor_()
        reactor.callLater(0, reactor.stop)


@implementer(IPushProducer)
class Sending(Protocol):
    """Writes the stream with a push producer; reports when the connection ends."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.chunks = stream_chunks(options.bytes)
        self.written = 0
        self.digest = hashlib.sha256()
        self.first_write: float | None = None
        self.paused = True
        self.reported = False
        self.cpu_at_first_write = 0.0

    def connectionMade(self) -> None:
        emit(event="connected", role="sender", at=time.monotonic())
        reactor = reactor_()
        start_at = self.options.start_at
        delay = 0.0 if start_at is None else max(0.0, start_at - time.monotonic())
        reactor.callLater(delay, self.start)
        if self.options.until is not None:
            reactor.callLater(
                max(0.0, self.options.until - time.monotonic()), self.finish, "window"
            )
        else:
            reactor.callLater(delay + self.options.timeout, self.finish, "timeout")

    def start(self) -> None:
        self.first_write = time.monotonic()
        self.cpu_at_first_write = time.process_time()
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.reported:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.transport.unregisterProducer()
                self.transport.loseConnection()
                return
            self.digest.update(chunk)
            self.written += len(chunk)
            self.transport.write(chunk)

    def finish(self, how: str) -> None:
        if self.reported:
            return
        self.reported = True
        session = getattr(self.transport, "session", None)
        stats_of = getattr(session, "recovery_stats", None)
        emit(
            event="result",
            role="sender",
            proto=self.options.proto,
            bytes_written=self.written,
            sha256=self.digest.hexdigest(),
            first_write=self.first_write,
            ended=time.monotonic(),
            cpu_seconds=time.process_time() - self.cpu_at_first_write,
            port=port_counters(self.transport),
            timed_out=how == "timeout",
            how=how,
            recovery_stats=stats_of() if callable(stats_of) else None,
        )
        if how != "closed":
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.finish("closed")
        reactor = reactor_()
        reactor.callLater(0, reactor.stop)


async def run(options: argparse.Namespace) -> None:
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

    from mnet_twisted import MNETClientEndpoint, MNETServerEndpoint
    from mnet_twisted.config import SessionConfig

    reactor = reactor_()
    mnet = options.proto == "mnet"
    extra: dict[str, Any] = {}
    if mnet and options.pinned_size:
        # The datagram size stays at the default: no size search.
        extra["config"] = SessionConfig(path_mtu_discovery=False)
    if options.role == "receive":
        server = (MNETServerEndpoint if mnet else TCP4ServerEndpoint)(
            reactor, options.port, interface=options.host, **extra
        )
        factory = Factory()
        factory.protocol = functools.partial(Receiving, options)
        port = await server.listen(factory)
        emit(event="listening", port=port.getHost().port)
        # Nobody came: report that rather than wait for the bench to kill us.
        wait = options.timeout if options.until is None else options.until - time.monotonic()
        reactor.callLater(max(0.0, wait) + 30, nobodyCame, options)
    else:
        client = (MNETClientEndpoint if mnet else TCP4ClientEndpoint)(
            reactor, options.host, options.port, timeout=10, **extra
        )
        factory = Factory()
        factory.protocol = functools.partial(Sending, options)
        await client.connect(factory)


def nobodyCame(options: argparse.Namespace) -> None:
    if not options.connections:
        emit(event="error", role="receiver", error="no connection arrived")
        reactor_().stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["receive", "send"])
    parser.add_argument("--proto", choices=["mnet", "tcp"], required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, help="bytes to move (fixed-size mode)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--start-at", type=float, help="monotonic time to start writing")
    parser.add_argument("--until", type=float, help="monotonic time to stop (window mode)")
    parser.add_argument(
        "--pinned-size",
        action="store_true",
        help="MNET: keep 1452-byte datagrams (no size search)",
    )
    options = parser.parse_args()
    options.connections = 0
    if (options.bytes is None) == (options.until is None):
        parser.error("give exactly one of --bytes and --until")

    from twisted.internet import defer

    reactor = reactor_()
    failures: list[Failure] = []

    def started() -> None:
        d = defer.ensureDeferred(run(options))

        def failed(failure: Failure) -> None:
            failures.append(failure)
            emit(event="error", role=options.role, error=repr(failure.value))
            reactor.stop()

        d.addErrback(failed)

    reactor.callWhenRunning(started)
    reactor.run()
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
