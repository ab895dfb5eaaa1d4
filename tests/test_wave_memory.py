"""
What a wave of sessions must not leave behind in a listener's memory.

CPython's allocator gives a 1 MiB arena back to the system only once every
object in it is gone.  After ten thousand sessions close, a handful of
objects that were made while they lived and that outlast them keeps some
of their arenas (``docs/scaling.md``).  These tests pin down three such
objects that the listener used to leave: names in the interpreter's type
cache, the cache that Twisted's log formatting builds at its first event,
and ``twisted.python.failure.count``'s value after one Failure per close.
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import pytest
import pytest_twisted
from conftest import child_env
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python import failure

from mnet_twisted.heap import can_release_free_memory, forget_cached_names

TYPE_CACHE_ONLY = pytest.mark.skipif(
    not hasattr(sys, "_clear_type_cache"), reason="no type attribute cache to clear (not CPython)"
)


class _Holder:
    pass


def _name_made_anew(text: str) -> str:
    # Joined at run time: a literal would be a constant the code keeps.
    return "".join(text.split("|"))


def _look_up(name: str) -> None:
    """Look ``name`` up on a class, as datetime does a time zone's "utcoffset"."""
    getattr(_Holder, name, None)


@TYPE_CACHE_ONLY
def test_forgetting_cached_names_lets_the_type_cache_go_of_a_name() -> None:
    name = _name_made_anew("a_name|_nobody|_defines")
    alone = sys.getrefcount(name)
    _look_up(name)
    assert sys.getrefcount(name) > alone  # the type cache holds it (for type and class)
    forget_cached_names()
    assert sys.getrefcount(name) == alone


class _Recorder(Protocol):
    reasons: list[Any] = []

    def connectionLost(self, reason: Any = None) -> None:
        _Recorder.reasons.append(reason)


@TYPE_CACHE_ONLY
@pytest.mark.skipif(not can_release_free_memory(), reason="the C library has no malloc_trim")
@pytest_twisted.ensureDeferred
async def test_the_trim_after_a_wave_clears_the_type_cache(mnet) -> None:  # type: ignore[no-untyped-def]
    """A name made during the wave and kept by the type cache is let go by the listener's trim."""
    port = await mnet.listen(Factory.forProtocol(Protocol))
    listener = port.protocol
    listener.releaseMemoryAfter = 2
    listener.releaseMemoryDelay = 0.3
    endpoint = mnet.client(port, shareSocket=True)
    clients = [
        await mnet.within(endpoint.connect(Factory.forProtocol(Protocol))) for _ in range(3)
    ]
    await mnet.waitFor(lambda: listener.demux.open_sessions == 3)
    for client in clients:
        client.transport.loseConnection()
    await mnet.waitFor(lambda: listener.demux.open_sessions == 0)
    assert listener.stats["memoryTrims"] == 0
    name = _name_made_anew("made|_while|_the_wave|_ends")
    alone = sys.getrefcount(name)
    _look_up(name)
    assert sys.getrefcount(name) > alone
    await mnet.waitFor(lambda: listener.stats["memoryTrims"] == 1)
    assert sys.getrefcount(name) == alone


@pytest_twisted.ensureDeferred
async def test_clean_closes_share_one_reason_and_make_no_failure(mnet) -> None:  # type: ignore[no-untyped-def]
    """As Twisted's own ``connectionDone``: one Failure for every clean close, on both sides."""
    _Recorder.reasons = []
    port = await mnet.listen(Factory.forProtocol(_Recorder))
    endpoint = mnet.client(port, shareSocket=True)
    clients = [
        await mnet.within(endpoint.connect(Factory.forProtocol(_Recorder))) for _ in range(3)
    ]
    await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 3)
    made = failure.count
    for client in clients:
        client.transport.loseConnection()
    await mnet.waitFor(lambda: len(_Recorder.reasons) == 6)
    assert failure.count == made
    assert all(reason is _Recorder.reasons[0] for reason in _Recorder.reasons)
    assert _Recorder.reasons[0].check(ConnectionDone)
    assert str(_Recorder.reasons[0].value) == "Connection was closed cleanly: clean."


class _Raiser(Protocol):
    """Raises its reason and keeps nothing, as a protocol may."""

    def connectionLost(self, reason: Any = None) -> None:
        marker = _Marker()
        _Raiser.markers.append(weakref.ref(marker))
        with contextlib.suppress(ConnectionDone):
            reason.raiseException()

    markers: list[weakref.ref[_Marker]] = []


class _Marker:
    pass


@pytest_twisted.ensureDeferred
async def test_the_shared_reason_keeps_nothing_of_whoever_raised_it(mnet) -> None:  # type: ignore[no-untyped-def]
    """Raised, it carried the raiser's frames; they go by the next clean close."""
    _Raiser.markers = []
    port = await mnet.listen(Factory.forProtocol(Protocol))
    endpoint = mnet.client(port, shareSocket=True)
    for kind in (_Raiser, Protocol):
        client = await mnet.within(endpoint.connect(Factory.forProtocol(kind)))
        client.transport.loseConnection()
        await mnet.waitFor(lambda: port.protocol.demux.open_sessions == 0)
        await mnet.sleep(0.05)  # the client's own close
    assert len(_Raiser.markers) == 1
    gc.collect()
    assert _Raiser.markers[0]() is None


_FIRST_EVENT = textwrap.dedent(
    """
    import json, sys, typing
    from twisted.internet import defer, reactor
    from twisted.internet.protocol import Factory, Protocol
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                globalLogBeginner, textFileLogObserver, Logger)
    from mnet_twisted import MNETServerEndpoint

    # Warnings only, to a text observer: nothing is formatted at start-up.
    shown = LogLevelFilterPredicate(LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [shown])],
        redirectStandardIO=False)

    def cached():
        return sum(clear.__self__.cache_info().currsize for clear in typing._cleanups)

    async def main():
        port = await MNETServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol))
        before = cached()
        Logger().warn("a first warning, as a wave's {what}", what="limits")
        after = cached()
        await port.stopListening()
        print(json.dumps({"before": before, "after": after}))

    defer.ensureDeferred(main()).addBoth(lambda _: reactor.stop())
    reactor.run()
    """
)


def test_a_listening_port_builds_the_log_formatting_caches_before_its_first_wave() -> None:
    """The first warning formatted (in a wave, typically) makes no new ``typing`` cache entry."""
    run = subprocess.run(
        [sys.executable, "-c", _FIRST_EVENT],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "a first warning, as a wave's limits" in run.stderr
    counts = json.loads(run.stdout)
    assert counts["after"] == counts["before"]
