"""
How late a deadline's work runs, in the reactor this process gets:

    .venv/bin/python bench/timer_lateness.py [--waits 200] [--delay-ms 1.3]

Three ways, one wait after another, each timed from when it was asked:

- ``callLater``: Twisted's own call, as a timer of the application's;
- the port, reactor alone: an MNET listener's timer with
  ``MNETDatagramProtocol.fineTimers = False``;
- the port: the same with its fine timer (``mnet_twisted/finetimer.py``),
  where the platform has one.

For the port the time is when its sessions' deadlines are handled (the
demultiplexer's ``handle_timers``), less the deadline it was given.
Prints the median and 90th percentile lateness in milliseconds.  The epoll
reactor waits whole milliseconds, rounded up; the fine timer, which the
port waits on alone where it has one, fires to the microsecond.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import _engine
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "tests"), _engine.ENGINE_PATH]

from demux_spy import spy_on  # noqa: E402  (needs the sys.path entries above)


def summary(late: list[float]) -> str:
    ordered = sorted(late)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered) * 1e3:.3f} ms, p90 {p90 * 1e3:.3f} ms"


async def call_later_lateness(reactor: Any, waits: int, delay: float) -> list[float]:
    late = []
    for _ in range(waits):
        asked = reactor.seconds()
        fired: defer.Deferred[float] = defer.Deferred()
        reactor.callLater(delay, lambda d=fired: d.callback(reactor.seconds()))
        late.append(await fired - asked - delay)
    return late


async def port_lateness(reactor: Any, waits: int, delay: float, fine: bool) -> list[float]:
    from mnet_twisted import MNETServerEndpoint
    from mnet_twisted.protocol import MNETDatagramProtocol

    MNETDatagramProtocol.fineTimers = fine
    try:
        port = await MNETServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
    finally:
        MNETDatagramProtocol.fineTimers = True
    listener = port.protocol
    if fine and listener._fineTimer is None:
        await port.stopListening()
        return []
    handled: list[defer.Deferred[float]] = []

    def handle_timers(now: float) -> None:
        if handled:
            handled.pop().callback(reactor.seconds())

    spy_on(listener, handle_timers=handle_timers)
    late = []
    try:
        for _ in range(waits):
            fired: defer.Deferred[float] = defer.Deferred()
            handled.append(fired)
            now = reactor.seconds()
            listener._armTimer(now + delay, now)
            late.append(await fired - now - delay)
            await task.deferLater(reactor, 0, lambda: None)  # its own flush
    finally:
        await port.stopListening()
    return late


async def measure(reactor: Any, options: argparse.Namespace) -> None:
    delay = options.delay_ms / 1e3
    print(f"{options.waits} waits of {options.delay_ms} ms each, {type(reactor).__name__}:")
    late = await call_later_lateness(reactor, options.waits, delay)
    print(f" callLater:                late by {summary(late)}")
    late = await port_lateness(reactor, options.waits, delay, fine=False)
    print(f" the port, reactor alone:  late by {summary(late)}")
    late = await port_lateness(reactor, options.waits, delay, fine=True)
    if late:
        print(f" the port, its fine timer: late by {summary(late)}")
    else:
        print(" the port, its fine timer: none here (no timerfd, or the reactor has no FDs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=1.3)
    options = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(measure(reactor, options)))


if __name__ == "__main__":
    main()
