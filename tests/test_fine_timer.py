"""
The port's timer: a ``timerfd`` the reactor watches, or a ``callLater``.

The epoll reactor rounds every wait up to whole milliseconds, so a probe
timeout due in 1.3 ms ran after 2.1 ms; ``mnet_twisted.finetimer`` fires to
the microsecond, and the reactor then sleeps without a timeout of the
port's.  These tests run the real reactor and a real ``timerfd``; where
there is none they check the ``callLater`` fallback only.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from conftest import _reactor
from demux_spy import spy_on
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted.finetimer import FineTimer, fine_timer
from mnet_twisted.protocol import MNETDatagramProtocol

HAVE_TIMERFD = fine_timer(_reactor(), lambda: None) is not None
NEEDS_TIMERFD = pytest.mark.skipif(not HAVE_TIMERFD, reason="no timerfd here (Linux only)")


@NEEDS_TIMERFD
@pytest_twisted.ensureDeferred
async def test_a_fine_timer_fires_once_not_before_its_time_and_not_once_cancelled(mnet) -> None:  # type: ignore[no-untyped-def]
    fired: list[float] = []
    timer = fine_timer(mnet.reactor, lambda: fired.append(time.monotonic()))
    assert timer is not None
    try:
        began = time.monotonic()
        timer.start(0.05)
        timer.start(0.002)  # moved earlier: one firing, at the new time
        await mnet.waitFor(lambda: fired)
        await mnet.sleep(0.08)
        assert len(fired) == 1 and fired[0] - began >= 0.002
        assert not timer.armed
        timer.start(0.005)
        timer.cancel()
        await mnet.sleep(0.03)
        assert len(fired) == 1
    finally:
        timer.close()


class _Deadlines:
    """Records the times the port's demultiplexer was asked to act on its deadlines."""

    def __init__(self, listener: Any) -> None:
        self.times: list[float] = []
        spy_on(listener, handle_timers=self.times.append)


async def _armAndAwait(mnet: Any, listener: Any) -> None:
    """Arm a deadline 5 ms ahead; the deadline's work waits for it.

    With a fine timer the reactor holds no call of the port's (its sleeps
    get no short timeout); without, the reactor's call is set for it.
    """
    deadlines = _Deadlines(listener)
    now = mnet.reactor.seconds()
    listener._armTimer(now + 0.005, now)
    if listener._fineAvailable:
        assert listener._timerCall is None and listener._fineTimer.armed
    else:
        assert listener._timerCall.getTime() == pytest.approx(now + 0.005, abs=1e-4)
    await mnet.waitFor(lambda: deadlines.times)
    assert deadlines.times[0] >= now + 0.005


@NEEDS_TIMERFD
@pytest_twisted.ensureDeferred
async def test_the_port_waits_for_a_deadline_on_its_fine_timer_alone(mnet, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    port = await mnet.listen(Factory.forProtocol(Protocol))
    listener = port.protocol
    # A listener has its fine timer from the start, not made in a wave.
    assert listener._fineAvailable and listener._fineTimer is not None
    waits: list[float] = []
    start = FineTimer.start

    def recordingStart(self: FineTimer, delay: float) -> bool:
        waits.append(delay)
        return start(self, delay)

    monkeypatch.setattr(FineTimer, "start", recordingStart)
    await _armAndAwait(mnet, listener)
    assert waits == [pytest.approx(0.005, abs=1e-6)]
    assert not listener._fineTimer.armed


@pytest_twisted.ensureDeferred
async def test_without_fine_timers_the_reactor_alone_runs_the_deadline(mnet) -> None:  # type: ignore[no-untyped-def]
    MNETDatagramProtocol.fineTimers = False
    try:
        port = await mnet.listen(Factory.forProtocol(Protocol))
    finally:
        MNETDatagramProtocol.fineTimers = True
    listener = port.protocol
    assert not listener._fineAvailable
    await _armAndAwait(mnet, listener)
    assert listener._fineTimer is None


@NEEDS_TIMERFD
@pytest_twisted.ensureDeferred
async def test_a_port_that_stops_closes_its_fine_timer(mnet) -> None:  # type: ignore[no-untyped-def]
    port = await mnet.listen(Factory.forProtocol(Protocol))
    listener = port.protocol
    client = await mnet.connect(port, Factory.forProtocol(Protocol))
    await mnet.waitFor(lambda: listener.demux.open_sessions == 1)
    await _armAndAwait(mnet, listener)
    fine = listener._fineTimer
    assert fine is not None
    client.transport.loseConnection()
    await mnet.waitFor(lambda: listener.demux.open_sessions == 0)
    mnet.ports.remove(port)
    await mnet.within(port.stopListening())
    assert listener._fineTimer is None
    assert fine not in mnet.reactor.getReaders()
    assert fine.fileno() == -1  # its descriptor closed


@NEEDS_TIMERFD
@pytest_twisted.ensureDeferred
async def test_a_timer_the_kernel_will_not_arm_leaves_the_reactor_to_it(mnet, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    port = await mnet.listen(Factory.forProtocol(Protocol))
    listener = port.protocol
    monkeypatch.setattr(FineTimer, "start", lambda self, delay: False)
    await _armAndAwait(mnet, listener)
    assert not listener._fineAvailable and listener._fineTimer is None
