"""What the benchmark peers (bench/_*_peer.py) share: JSON lines out, quiet
Twisted logs, the kernel's drop count of a socket, and running one job on
the reactor."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer


def emit(**fields: Any) -> None:
    """One JSON line on stdout, in one write: workers may share one stdout."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def socket_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` (IPv4)."""
    # As bytes: see _scale_peer.rss_kib (a text read would pin memory).
    for line in Path("/proc/net/udp").read_bytes().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(b":")[1], 16) == port:
            return int(fields[-1])
    return 0


def quiet_twisted_logs() -> None:
    """Warnings and errors to stderr only: per-session events would cost time,
    and without an observer Twisted keeps the last 65,536 of them in memory."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    shown = LogLevelFilterPredicate(LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [shown])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run_job(job: Callable[[Any], Awaitable[Any]]) -> None:
    """Run ``job(reactor)`` on the reactor; a failure is emitted as an error line."""
    from twisted.internet import reactor

    def finished(result: object) -> None:
        if reactor.running:
            reactor.stop()

    def failed(failure: Any) -> None:
        emit(event="error", error=repr(failure.value))
        finished(None)

    def start() -> None:
        defer.ensureDeferred(job(reactor)).addCallbacks(finished, failed)  # type: ignore[arg-type]

    reactor.callWhenRunning(start)
    reactor.run()
