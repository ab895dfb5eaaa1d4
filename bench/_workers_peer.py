"""
One process of ``bench/workers_bench.py``: a worker serving the shared port,
or a client process.

    python -m mnet_twisted.workers -n K -- \
        python bench/_workers_peer.py server --port P --secret F [--stagger S]
    python bench/_workers_peer.py bulk --port P --sessions S --bytes N
    python bench/_workers_peer.py rate --port P --parallel L --seconds T
    python bench/_workers_peer.py hold --port P --sessions S --interval 0.1

``server`` listens with ``MNETServerEndpoint(reusePort=True,
cookieSecretFile=F)``, the code path of ``mnet-echo --listen
mnet:P:reusePort=yes:secretFile=F``, and announces ``{"event":
"listening", "worker": W, "pid": ..., "bound_at": ...}`` (W from
``MNET_WORKER``, which ``mnet-workers`` sets).  Each session's first byte
picks what it does: ``E`` echoes everything after it, ``B`` takes an 8-byte
length and that many bytes, and answers their SHA-256.  The first byte a
worker sends on a session is its number, so a client knows where the
kernel put each of its sessions.

Every client session has its own UDP port (no ``shareSocket``), so the
kernel's reuseport hash spreads them over the workers.  Clients report JSON
lines on stdout: ``ready`` once every session is open (``hold``, ``bulk``)
or the reactor runs (``rate``), then wait for SIGUSR1 to start (``bulk``,
``rate``) or to stop (``hold``), and end with ``result``.  Times are
``time.monotonic()``, comparable between processes on one host.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from _peer_run import emit, quiet_twisted_logs, run_job
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _netns_peer import stream_chunks, stream_sha256

MESSAGE_SIZE = 64
DIGEST_SIZE = 32


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def on_signal(reactor: Any, handler: Any) -> None:
    """Run ``handler`` in the reactor on SIGUSR1."""
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(handler))


# -- the worker ----------------------------------------------------------------------


class Worker(Protocol):
    """``E``: echo; ``B``: a hashed sink.  Bad input aborts the session."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.mode = b""
        self.header = b""
        self.left = 0
        self.digest = hashlib.sha256()

    def dataReceived(self, data: bytes) -> None:
        if not self.mode:
            self.mode, data = data[:1], data[1:]
            if self.mode not in (b"E", b"B"):
                self.transport.abortConnection()
                return
            if self.mode == b"E":
                self.transport.write(bytes([self.number]) + data)
                return
            self.transport.write(bytes([self.number]))
        if self.mode == b"E":
            self.transport.write(data)
            return
        if len(self.header) < 8:
            need = 8 - len(self.header)
            self.header, data = self.header + data[:need], data[need:]
            if len(self.header) < 8:
                return
            self.left = int.from_bytes(self.header, "big")
        if len(data) > self.left:
            self.transport.abortConnection()
            return
        self.digest.update(data)
        self.left -= len(data)
        if not self.left and data:
            self.transport.write(self.digest.digest())


async def serve(options: argparse.Namespace, reactor: Any) -> None:
    from mnet_twisted import MNETServerEndpoint

    number = int(os.environ.get("MNET_WORKER", "1"))
    endpoint = MNETServerEndpoint(
        reactor,
        options.port,
        interface="127.0.0.1",
        cookieSecretFile=options.secret,
        reusePort=True,
        stopGrace=1.0,
    )
    factory = Factory()
    factory.protocol = lambda: Worker(number)
    # Workers that bind one after another join the kernel's reuseport group in
    # a known order (which matters when one dies); the times bracket the bind.
    await task.deferLater(reactor, (number - 1) * options.stagger, lambda: None)
    binding = time.monotonic()
    port = await endpoint.listen(factory)
    emit(
        event="listening",
        worker=number,
        pid=os.getpid(),
        binding_at=binding,
        bound_at=time.monotonic(),
    )
    await defer.Deferred()  # until stopped
    del port


# -- clients -------------------------------------------------------------------------


class _Client(Protocol):
    """Learns its worker from the first byte; ``opened`` fires then."""

    def __init__(self) -> None:
        self.worker = 0
        self.buffer = b""
        self.opened: defer.Deferred[int] = defer.Deferred()
        self.closed: defer.Deferred[str] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.worker and self.buffer:
            self.worker, self.buffer = self.buffer[0], self.buffer[1:]
            self.opened.callback(self.worker)
        self.received()

    def received(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        text = f"{type(reason.value).__name__}: {reason.value}" if reason else "closed"
        if not self.opened.called:
            self.opened.errback(reason)
            self.opened.addErrback(lambda _: None)  # nobody may be waiting for it
        self.closed.callback(text)


@implementer(IPushProducer)
class BulkClient(_Client):
    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.chunks = stream_chunks(total)
        self.paused = True
        self.started = 0.0
        self.finished = 0.0
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"B" + self.total.to_bytes(8, "big"))

    def go(self) -> None:
        self.started = time.monotonic()
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    stopProducing = pauseProducing

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.transport.unregisterProducer()
                return
            self.transport.write(chunk)

    def received(self) -> None:
        if len(self.buffer) >= DIGEST_SIZE and not self.done.called:
            self.finished = time.monotonic()
            self.done.callback(self.buffer[:DIGEST_SIZE])

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(reason)
        super().connectionLost(reason)


def _endpoint(options: argparse.Namespace, reactor: Any) -> Any:
    from mnet_twisted import MNETClientEndpoint

    return MNETClientEndpoint(reactor, "127.0.0.1", options.port, timeout=options.timeout)


def _go_signal(reactor: Any) -> defer.Deferred[None]:
    go: defer.Deferred[None] = defer.Deferred()
    on_signal(reactor, lambda: go.called or go.callback(None))
    return go


async def bulk(options: argparse.Namespace, reactor: Any) -> None:
    endpoint = _endpoint(options, reactor)
    expected = bytes.fromhex(stream_sha256(options.bytes))
    go = _go_signal(reactor)
    sessions: list[BulkClient] = []
    for _ in range(options.sessions):
        session = await endpoint.connect(Factory.forProtocol(lambda: BulkClient(options.bytes)))
        await session.opened
        sessions.append(session)
    emit(event="ready", workers=[s.worker for s in sessions])
    await go
    cpu = cpu_seconds()
    for session in sessions:
        session.go()
    records = []
    for session in sessions:
        digest = await session.done
        records.append(
            {
                "worker": session.worker,
                "started": session.started,
                "done": session.finished,
                "bytes": options.bytes,
                "hash_ok": digest == expected,
            }
        )
    cpu = cpu_seconds() - cpu
    for session in sessions:
        session.transport.loseConnection()
    await defer.DeferredList([s.closed for s in sessions])
    emit(event="result", sessions=records, cpu_seconds=cpu)


class EchoClient(_Client):
    """Echo round trips, one at a time: ``ask`` fires with the echo."""

    def __init__(self) -> None:
        super().__init__()
        self.reply: defer.Deferred[bytes] | None = None

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        self.reply = defer.Deferred()
        self.transport.write((b"" if self.worker else b"E") + message)
        return self.reply

    def received(self) -> None:
        if self.reply is not None and len(self.buffer) >= MESSAGE_SIZE:
            reply, self.reply = self.reply, None
            data, self.buffer = self.buffer, b""
            reply.callback(data)


def _message(*numbers: int) -> bytes:
    packed = b"".join(n.to_bytes(8, "big") for n in numbers)
    return (packed * (MESSAGE_SIZE // len(packed) + 1))[:MESSAGE_SIZE]


async def rate(options: argparse.Namespace, reactor: Any) -> None:
    """Connect, one echo, close, in ``--parallel`` loops, for ``--seconds``."""
    endpoint = _endpoint(options, reactor)
    go = _go_signal(reactor)
    emit(event="ready")
    await go
    per_worker: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    digest = hashlib.sha256()
    counter = iter(range(2**62))
    cpu = cpu_seconds()
    began = time.monotonic()
    until = began + options.seconds

    async def loop() -> None:
        while time.monotonic() < until:
            message = _message(os.getpid(), next(counter))
            try:
                session = await endpoint.connect(Factory.forProtocol(EchoClient))
                reply = await session.ask(message)
            except Exception as error:  # counted, and the loop goes on
                failures[type(error).__name__] += 1
                continue
            if reply != message:
                failures["wrong echo"] += 1
            digest.update(reply)
            per_worker[session.worker] += 1
            session.transport.loseConnection()
            await session.closed

    await defer.gatherResults(
        [defer.ensureDeferred(loop()) for _ in range(options.parallel)], consumeErrors=True
    )
    emit(
        event="result",
        sessions=sum(per_worker.values()),
        per_worker={str(k): v for k, v in per_worker.items()},
        failures=dict(failures),
        began=began,
        ended=time.monotonic(),
        cpu_seconds=cpu_seconds() - cpu,
        sha256=digest.hexdigest(),
    )


class HoldSession(_Client):
    """Sends a message on ``tick``; checks each echo and times it."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__()
        self.record = record
        self.pending: deque[tuple[bytes, float]] = deque()
        self.index = 0

    def tick(self) -> None:
        self.index += 1
        message = _message(self.record["slot"], self.record["incarnation"], self.index)
        self.pending.append((message, time.monotonic()))
        self.record["sent"] += 1
        self.transport.write((b"E" if self.index == 1 else b"") + message)

    def received(self) -> None:
        record = self.record
        while len(self.buffer) >= MESSAGE_SIZE and self.pending:
            got, self.buffer = self.buffer[:MESSAGE_SIZE], self.buffer[MESSAGE_SIZE:]
            message, sent_at = self.pending.popleft()
            now = time.monotonic()
            record["echoed" if got == message else "bad"] += 1
            record["max_rtt"] = max(record["max_rtt"], now - sent_at)
            if record["first_echo"] is None:
                record["first_echo"] = now
                record["worker"] = self.worker


async def hold(options: argparse.Namespace, reactor: Any) -> None:
    """``--sessions`` slots, each keeping one session open and echoing every
    ``--interval``; a lost session is replaced at once by a new one."""
    endpoint = _endpoint(options, reactor)
    records: list[dict[str, Any]] = []
    live: dict[int, HoldSession] = {}
    stopping = False
    stop: defer.Deferred[None] = defer.Deferred()
    on_signal(reactor, lambda: stop.called or stop.callback(None))

    async def slot(number: int, first: defer.Deferred[None]) -> None:
        incarnation = 0
        while not stopping:
            incarnation += 1
            record: dict[str, Any] = dict(
                slot=number,
                incarnation=incarnation,
                attempt=time.monotonic(),
                connected=None,
                first_echo=None,
                worker=0,
                lost=None,
                reason=None,
                sent=0,
                echoed=0,
                bad=0,
                max_rtt=0.0,
                unanswered=0,
            )
            records.append(record)
            try:
                session = await endpoint.connect(
                    Factory.forProtocol(lambda r=record: HoldSession(r))
                )
            except Exception as error:
                record["reason"] = f"connect failed: {type(error).__name__}: {error}"
                await task.deferLater(reactor, 0.05, lambda: None)
                continue
            record["connected"] = time.monotonic()
            live[number] = session
            sender = task.LoopingCall(session.tick)
            sender.start(options.interval, now=True)
            if not first.called:
                session.opened.addCallbacks(lambda _: first.callback(None), lambda _: None)
            reason = await session.closed
            if sender.running:
                sender.stop()
            live.pop(number, None)
            record["unanswered"] = len(session.pending)
            if not stopping:
                record["lost"] = time.monotonic()
                record["reason"] = reason

    firsts: list[defer.Deferred[None]] = [defer.Deferred() for _ in range(options.sessions)]
    slots = [defer.ensureDeferred(slot(n, firsts[n])) for n in range(options.sessions)]
    await defer.gatherResults(firsts)
    emit(event="ready", workers=[s.worker for s in live.values()])
    cpu = cpu_seconds()
    await stop
    stopping = True
    for session in live.values():
        session.record["stopped"] = time.monotonic()
    # The last messages sent get their echoes; then every session closes cleanly.
    for _ in range(int(2.0 / 0.01)):
        if not any(s.pending for s in live.values()):
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    cpu = cpu_seconds() - cpu
    for session in list(live.values()):
        session.record["unanswered"] = len(session.pending)
    emit(event="result", records=records, cpu_seconds=cpu)
    for session in list(live.values()):
        session.transport.loseConnection()
    await defer.DeferredList(slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["server", "bulk", "rate", "hold"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", help="server: the shared cookie secret file")
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="server: worker N binds (N-1) x this late, s"
    )
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=5.0, help="connect timeout, s")
    options = parser.parse_args()
    quiet_twisted_logs()
    job = {"server": serve, "bulk": bulk, "rate": rate, "hold": hold}[options.role]
    run_job(lambda reactor: job(options, reactor))


if __name__ == "__main__":
    main()
