"""
One process of ``bench/scale_sessions.py``: the echo listener, or a client
holding its share of the sessions.

    python bench/_scale_peer.py server [--tracemalloc] [--survivors]
    python bench/_scale_peer.py client --port P --sessions N --duration S [--interval S]

Both report JSON lines on stdout and move to their next step on SIGUSR1,
so the runner can line the processes up: the server answers each signal
with a ``sample<k>`` event (memory after a collection, or as it is on
SIGUSR2, and also once the C allocator gave back its free memory on SIGHUP;
CPU, sessions, timer wake-ups, the reactor's delayed calls); a client opens its sessions
at once (``opened``), exchanges messages on the first signal (``loaded``),
and closes them all on the second (``closed``), then exits.

Every message is 64 bytes naming its session and round, and must come back
byte for byte; a client counts the echoes that did not.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import signal
import sys
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any

from _peer_run import emit, quiet_twisted_logs, run_job, socket_drops
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol

MESSAGE_SIZE = 64
#: How often a client's sender wakes up to send the messages now due.
TICK = 0.01


def rss_kib() -> int:
    """Resident memory of this process (VmRSS), KiB."""
    # Read as bytes: a text read looks up its decoder by a name made anew
    # each time, which the interpreter's type cache keeps, so a read while
    # sessions live would keep one of their memory arenas (docs/scaling.md).
    for line in Path("/proc/self/status").read_bytes().splitlines():
        if line.startswith(b"VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def collected_rss() -> int:
    """RSS after a full collection (what a long-lived server holds)."""
    GcPauses.explicit = True
    try:
        gc.collect()
    finally:
        GcPauses.explicit = False
    return rss_kib()


class GcPauses:
    """The collector's own pauses in this process: how many, the longest, their sum.

    Kept in arrays: a number that lasts the whole run and is set while the
    sessions live would, as an object of its own, sit in a memory arena of
    theirs and keep it from going back after they close (docs/scaling.md),
    adding the benchmark's own numbers to the listener's RSS.
    """

    #: Set while the benchmark collects on purpose (not counted).
    explicit = False

    def __init__(self) -> None:
        self._count = array("q", [0])
        #: The longest, the sum, and when the current one began.
        self._times = array("d", [0.0, 0.0, 0.0])
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if GcPauses.explicit:
            return
        times = self._times
        if phase == "start":
            times[2] = time.perf_counter()
            return
        pause = time.perf_counter() - times[2]
        self._count[0] += 1
        times[1] += pause
        if pause > times[0]:
            times[0] = pause

    def report(self) -> dict[str, float]:
        """Since the last report."""
        times = self._times
        figures = {"gc_pauses": self._count[0], "gc_longest": times[0], "gc_total": times[1]}
        self._count[0], times[0], times[1] = 0, 0.0, 0.0
        return figures


def trimmed_rss() -> int:
    """RSS once the C allocator gave back what it holds free (glibc's malloc_trim)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)
    return rss_kib()


def session_config(options: argparse.Namespace) -> Any:
    """The defaults, but for ``--peer-ack-delay``."""
    from mnet_twisted.config import SessionConfig

    return SessionConfig(peer_ack_delay=options.peer_ack_delay)


def on_signal(reactor: Any, handler: Any, number: int = signal.SIGUSR1) -> None:
    """Run ``handler`` in the reactor on every signal ``number``."""
    signal.signal(number, lambda *_: reactor.callFromThread(handler))


# -- the listener ------------------------------------------------------------------------


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(options: argparse.Namespace, reactor: Any) -> None:
    from mnet_twisted import MNETServerEndpoint
    from mnet_twisted.config import ListenerLimits

    if options.tracemalloc:
        import tracemalloc

        tracemalloc.start(4)
    limits = ListenerLimits(max_sessions=None)
    endpoint = MNETServerEndpoint(
        reactor, 0, interface="127.0.0.1", limits=limits, config=session_config(options)
    )
    port = await endpoint.listen(Factory.forProtocol(Echo))
    samples = 0
    snapshots: list[Any] = []
    pauses = GcPauses()
    number = port.getHost().port

    def sample(collect: bool = True, trim: bool = False) -> None:
        nonlocal samples
        samples += 1
        # Memory first: the sample's own objects, made later, would sit in
        # the wave's freed memory pools and keep some of them while read.
        rss = collected_rss() if collect else rss_kib()
        trimmed = trimmed_rss() if trim else None
        # Python's own small blocks in use: whether the objects went away.
        blocks = sys.getallocatedblocks()
        stats = port.getStats()
        fields = {
            **pauses.report(),
            "socket_drops": socket_drops(number),
            "rss_kib": rss,
            "rss_trimmed_kib": trimmed,
            "python_blocks": blocks,
            "cpu": cpu_seconds(),
            "sessions_open": stats.sessions_open,
            "sessions_accepted": stats.sessions_accepted,
            "sessions_refused": stats.sessions_refused,
            "aborts_sent": stats.aborts_sent,
            "replies_limited": stats.replies_limited,
            "datagrams_received": stats.datagrams_received,
            "datagrams_sent": stats.datagrams_sent,
            "send_errors": stats.send_errors,
            "memory_trims": port.protocol.stats["memoryTrims"],
            "memory_trim_longest_ms": port.protocol.longestMemoryTrim * 1e3,
            "timer_wakeups": port.protocol.stats["timerWakeups"],
            "session_timer_calls": port.protocol.demux.timers_run,
            "delayed_calls": len(reactor.getDelayedCalls()),
            **recovery_totals(port.protocol.demux),
            # Entries in the demultiplexer's deadline heap, live or superseded.
            "heap_entries": len(port.protocol.demux._heap),
        }
        if options.tracemalloc and collect:
            fields["top_lines"] = _tracemalloc_top(snapshots, stats.sessions_accepted)
        if survivors is not None and trim:
            # Last, so its own objects are not in the figures above.
            fields["survivors"] = survivors.report(limit=100, holders=100)
        emit(event=f"sample{samples}", **fields)

    on_signal(reactor, sample)
    # While loaded: no collection, which would stall the listener.
    on_signal(reactor, lambda: sample(collect=False), signal.SIGUSR2)
    on_signal(reactor, lambda: sample(trim=True), signal.SIGHUP)
    survivors = _arena_survivors() if options.survivors else None
    gc.collect()
    emit(event="listening", port=port.getHost().port, pid=os.getpid())
    await defer.Deferred()  # until terminated


def recovery_totals(demux: Any) -> dict[str, int]:
    """Recovery counters of the sessions open in ``demux``, and segments they got twice."""
    # The counters themselves: recovery_stats() builds a dict per session.
    counters = [s._sender.stats for s in demux._open]
    duplicates = sum(s._receiver.duplicate_segments for s in demux._open)
    return {
        "duplicates_received": duplicates,
        "retransmissions": sum(c.retransmissions for c in counters),
        "timeouts": sum(c.timeouts for c in counters),
        "spurious": sum(c.spurious_undos for c in counters),
        "deferred": sum(c.deferred_timeouts for c in counters),
    }


def _arena_survivors() -> Any:
    """A snapshot of the pools in use now, or None where they cannot be walked."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from arena_survivors import ArenaSurvivors, available

    usable, why = available()
    if not usable:
        emit(event="note", note=f"--survivors: {why}")
        return None
    return ArenaSurvivors()


def _tracemalloc_top(snapshots: list[Any], sessions: int) -> list[str]:
    """The lines that grew most since the first sample, per session accepted."""
    import tracemalloc

    snapshots.append(tracemalloc.take_snapshot())
    if len(snapshots) < 2 or not sessions:
        return []
    diff = snapshots[-1].compare_to(snapshots[0], "lineno")
    return [
        f"{stat.size_diff / sessions:7.0f} B {stat.count_diff / sessions:5.2f} blocks"
        f"  {stat.traceback[0]}"
        for stat in diff[:25]
    ]


# -- a client ----------------------------------------------------------------------------


class EchoSession(Protocol):
    """Sends numbered messages; checks each echo and times it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.buffer = b""
        self.waiting: deque[tuple[bytes, float]] = deque()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def ask(self, message: bytes) -> None:
        self.waiting.append((message, time.perf_counter()))
        self.transport.write(message)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= MESSAGE_SIZE and self.waiting:
            reply, self.buffer = self.buffer[:MESSAGE_SIZE], self.buffer[MESSAGE_SIZE:]
            message, sent_at = self.waiting.popleft()
            self.client.answered(reply == message, time.perf_counter() - sent_at)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class Client:
    def __init__(self, options: argparse.Namespace, reactor: Any) -> None:
        self.options = options
        self.reactor = reactor
        self.sessions: list[EchoSession] = []
        self.latencies: list[float] = []
        self.mismatches = 0
        self.sent = 0
        self.step: defer.Deferred[None] = defer.Deferred()
        self.pauses = GcPauses()
        on_signal(reactor, self._next_step)

    def _next_step(self) -> None:
        step, self.step = self.step, defer.Deferred()
        step.callback(None)

    def answered(self, same: bool, seconds: float) -> None:
        self.latencies.append(seconds)
        if not same:
            self.mismatches += 1

    async def open(self) -> None:
        from mnet_twisted import MNETClientEndpoint

        options = self.options
        endpoint = MNETClientEndpoint(
            self.reactor,
            "127.0.0.1",
            options.port,
            timeout=options.timeout,
            shareSocket=True,
            config=session_config(options),
        )
        factory = Factory.forProtocol(lambda: EchoSession(self))
        failures: list[str] = []
        remaining = options.sessions

        async def loop() -> None:
            nonlocal remaining
            while remaining > 0 and len(failures) < options.sessions // 10 + 10:
                remaining -= 1
                try:
                    protocol = await endpoint.connect(factory)
                except Exception as error:
                    failures.append(repr(error))
                    remaining += 1  # a real client tries again
                    continue
                self.sessions.append(protocol)

        rss_before = collected_rss()
        began = time.perf_counter()
        await defer.gatherResults(
            [defer.ensureDeferred(loop()) for _ in range(options.parallel)], consumeErrors=True
        )
        emit(
            event="opened",
            sessions=len(self.sessions),
            failures=len(failures),
            first_failures=failures[:3],
            seconds=time.perf_counter() - began,
            rss_before_kib=rss_before,
            rss_kib=collected_rss(),
        )

    async def load(self) -> None:
        """Each session sends one message per ``--interval``, the sessions spread over it."""
        sessions, interval = self.sessions, self.options.interval
        count = len(sessions)
        total = int(count * self.options.duration / interval)
        began = time.perf_counter()
        cpu = cpu_seconds()
        self.pauses.report()
        local_port = sessions[0].transport.getHost().port if sessions else 0
        drops = socket_drops(local_port)

        def send_due() -> None:
            due = min(total, int((time.perf_counter() - began) / interval * count))
            while self.sent < due:
                index = self.sent
                round_, slot = divmod(index, count)
                message = (slot.to_bytes(4, "big") + round_.to_bytes(4, "big")) * 8
                sessions[slot].ask(message)
                self.sent += 1
            if self.sent >= total:
                sender.stop()

        sender = task.LoopingCall(send_due)
        await sender.start(TICK)
        # The last round's echoes: wait for them, up to a few seconds.
        deadline = time.perf_counter() + 5
        while len(self.latencies) < total and time.perf_counter() < deadline:
            await task.deferLater(self.reactor, 0.05, lambda: None)
        shared = sessions[0].transport._mnet if sessions else None
        emit(
            event="loaded",
            **(recovery_totals(shared.demux) if shared is not None else {}),
            sent=self.sent,
            echoed=len(self.latencies),
            mismatches=self.mismatches,
            seconds=time.perf_counter() - began,
            cpu=cpu_seconds() - cpu,
            socket_drops=socket_drops(local_port) - drops,
            **self.pauses.report(),
            latencies_us=[round(seconds * 1e6) for seconds in self.latencies],
            rss_kib=collected_rss(),
        )

    async def close(self) -> None:
        began = time.perf_counter()
        for protocol in self.sessions:
            protocol.transport.loseConnection()
        await defer.gatherResults([p.closed for p in self.sessions])
        self.sessions.clear()
        emit(event="closed", seconds=time.perf_counter() - began, rss_kib=collected_rss())

    async def run(self) -> None:
        await self.open()
        await self.step
        await self.load()
        await self.step
        await self.close()
        # The shared port stays open (for a listener resending its last
        # SHUTDOWN-ACK) until the runner ends this process.
        await defer.Deferred()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=2500)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0, help="per session, s")
    parser.add_argument("--parallel", type=int, default=64, help="connects in flight at once")
    parser.add_argument("--timeout", type=float, default=10.0, help="connect timeout, s")
    parser.add_argument("--tracemalloc", action="store_true", help="server: top lines per session")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="server: what lives, after the wave, in memory pools the wave made",
    )
    parser.add_argument("--peer-ack-delay", type=float, default=0.0, help="SessionConfig's, s")
    options = parser.parse_args()
    quiet_twisted_logs()
    if options.role == "server":
        run_job(lambda reactor: serve(options, reactor))
    else:
        run_job(lambda reactor: Client(options, reactor).run())


if __name__ == "__main__":
    sys.exit(main())
