"""
Give the C heap's free memory back to the operating system.

When thousands of sessions close, the memory they held is free but stays
in the process: glibc keeps freed pages in its heap for reuse unless they
sit at its very top.  ``malloc_trim`` hands every free page back.  Each
port has a :class:`WaveTrimmer` that calls it once a wave of closed
sessions is over, so a server that held a wave of sessions shrinks after it.

What this reaches depends on the allocator Python uses for small objects.
With ``PYTHONMALLOC=malloc`` every object lives in the C heap, and a server
comes back to its starting size.  With CPython's default (pymalloc), most
objects live in 1 MiB arenas that go back only once all their objects are
gone, and a few long-lived objects allocated during the wave keep some of
them; only the larger blocks (tables, buffers) are trimmed.  The trim
also clears the interpreter's type cache, the most common such keeper
(:func:`forget_cached_names`).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .counts import numbers, times

__all__ = [
    "WaveTrimmer",
    "can_release_free_memory",
    "forget_cached_names",
    "format_a_first_event",
    "release_after_next_full_collection",
    "release_free_memory",
]


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def can_release_free_memory() -> bool:
    """Whether this C library can give free heap memory back (glibc)."""
    return _malloc_trim is not None


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the system; whether any went back."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))


def forget_cached_names() -> None:
    """Clear the interpreter's type attribute cache.

    The cache holds each attribute name it looked up.  Some callers build
    the name anew for each lookup (datetime asks a time zone for its
    ``"utcoffset"`` so; a text read asks its codec for
    ``"incrementaldecoder"``), so the last such name made during a wave of
    sessions sits in one of the wave's memory arenas and keeps that
    megabyte from going back to the system after the wave.  Refilling the
    cache costs one slower lookup per attribute used afterwards.
    """
    clear = getattr(sys, "_clear_type_cache", None)  # CPython's
    if clear is not None:
        clear()


@functools.cache
def format_a_first_event() -> None:
    """Format one log event now, as Twisted's text observers would (once a process).

    Twisted's formatting evaluates a ``typing`` expression at each event,
    whose cached value then lives as long as the process.  Made first
    while a wave of sessions lives (a listener's first "hit its limits"
    warning comes in one), it would keep one of the wave's arenas after it.
    """
    from twisted.logger import formatEventAsClassicLogText

    formatEventAsClassicLogText({"log_format": "{n}", "n": 0, "log_time": 0.0})


class _AfterFullCollection:
    """Trims once after the collector's next full pass, which frees more.

    A full collection empties the interpreter's free lists (thousands of
    spare tuples, floats, frames) and whatever cycles were left: after a
    wave of sessions, megabytes that a trim before it cannot reach.
    """

    def __init__(self) -> None:
        self.owed = False
        self.installed = False

    def want(self) -> None:
        self.owed = True
        if not self.installed:
            gc.callbacks.append(self.collected)
            self.installed = True

    def collected(self, phase: str, info: dict[str, Any]) -> None:
        if self.owed and phase == "stop" and info["generation"] == 2:
            self.owed = False
            release_free_memory()


_after_full_collection = _AfterFullCollection()


def release_after_next_full_collection() -> None:
    """Give the free heap back once more, after the collector's next full pass."""
    if _malloc_trim is not None:
        _after_full_collection.want()


#: Positions in ``WaveTrimmer._counts`` and ``_times``.
_CLOSED, _HELD_PEAK = range(2)
_LAST_CLOSE, _DUE_SINCE = range(2)


class WaveTrimmer:
    """
    Trims the heap of one port once a wave of closed sessions is over.

    A trim is due once ``after`` sessions closed since the last one, or
    the port's last session closed after it held ``after`` at once (a
    trim while some of a wave's sessions live frees little of the pages
    they share).  It is made when no session closed for ``delay``
    seconds, or ten delays after it fell due, so that steady churn costs
    one trim in ten delays; and once more after the collector's next full
    pass.  ``reactor`` gives ``seconds()`` and ``callLater()``; ``trimmed``
    is told how long each trim took.
    """

    def __init__(self, reactor: Any, trimmed: Callable[[float], object]) -> None:
        self._reactor = reactor
        self._trimmed = trimmed
        # Closes since the last trim and the most sessions held; the last
        # close and when the trim fell due: in place, as ``counts`` explains
        # (a number made in the wave would keep some of it in memory).
        self._counts = numbers(2)
        self._times = times(2)
        self._call: Any = None

    def session_closed(self, held: int, remaining: int, after: int | None, delay: float) -> None:
        """A session of the ``held`` the port had closed; ``remaining`` are left."""
        counts, times_ = self._counts, self._times
        counts[_CLOSED] += 1
        times_[_LAST_CLOSE] = self._reactor.seconds()
        if held > counts[_HELD_PEAK]:
            counts[_HELD_PEAK] = held
        if after is None:
            return
        emptied = not remaining and counts[_HELD_PEAK] >= after
        if not remaining:
            counts[_HELD_PEAK] = 0
        if (
            (counts[_CLOSED] >= after or emptied)
            and self._call is None
            and can_release_free_memory()
        ):
            times_[_DUE_SINCE] = times_[_LAST_CLOSE]
            self._call = self._reactor.callLater(delay, self._trim, delay)

    def stop(self) -> None:
        """The port is closing: no trim is waiting any more."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _trim(self, delay: float) -> None:
        now, times_ = self._reactor.seconds(), self._times
        quiet = now - times_[_LAST_CLOSE]
        if quiet < delay and now - times_[_DUE_SINCE] < 10 * delay:
            # Sessions are still closing: one trim after the wave, not one in it.
            self._call = self._reactor.callLater(delay - quiet, self._trim, delay)
            return
        self._call = None
        self._counts[_CLOSED] = 0
        started = perf_counter()
        forget_cached_names()
        release_free_memory()
        self._trimmed(perf_counter() - started)
        release_after_next_full_collection()
