"""
A one-shot timer finer than the reactor's own (Linux ``timerfd``).

Twisted's epoll reactor sleeps in ``epoll_wait``, whose timeout counts
whole milliseconds, rounded up: a call due in 1.3 ms runs after 2.1 ms on
these machines.  On a loopback path whose round trip is a fraction of a
millisecond that rounding makes every probe timeout wait half as long again
as it should.  The port therefore waits for its deadlines on a ``timerfd``,
which the kernel fires to the microsecond and the reactor watches like a
socket.  The reactor then sleeps with no timeout of the port's: with a
probe timeout always about a millisecond ahead, a reactor call meant a 1 ms
``epoll_wait`` timeout on every sleep, and wake-ups came slower for it on
these VMs (``bench/suite.py --only echo --breakdown``, its "rest").

Where there is no ``timerfd`` (not Linux, a C library without it) or the
reactor watches no file descriptors, :func:`fine_timer_possible` says so,
:func:`fine_timer` returns None, and the port keeps to ``callLater`` alone.
A listening port makes its timer when it starts; a client port the first
time it has a deadline.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["FineTimer", "fine_timer", "fine_timer_possible"]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2000000


class _TimeSpec(ctypes.Structure):
    _fields_ = [("seconds", ctypes.c_long), ("nanoseconds", ctypes.c_long)]


class _TimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


def _libc_calls() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_TimerSpec),
        ctypes.c_void_p,
    ]
    settime.restype = ctypes.c_int
    return create, settime


_CALLS = _libc_calls()


class FineTimer:
    """
    One ``timerfd`` the reactor watches: ``start(delay)`` arms it (again),
    ``cancel()`` disarms it, and ``callback`` runs when it fires.  Follows
    Twisted's C{IReadDescriptor}; ``close()`` takes it out of the reactor.
    """

    def __init__(self, reactor: Any, callback: Callable[[], object], fd: int) -> None:
        self._reactor = reactor
        self._callback = callback
        self._fd = fd
        self._spec = _TimerSpec()
        self.armed = False
        # Watched from the start, disarmed (never readable) until started:
        # adding it to the reactor's tables later, in a wave of sessions,
        # would grow them there and keep some of the wave's memory.
        reactor.addReader(self)
        self._watched = True

    def start(self, delay: float) -> bool:
        """Fire once, ``delay`` seconds from now (at least a microsecond).

        False if the kernel refused to arm it (nothing will fire).
        """
        assert _CALLS is not None
        nanoseconds = max(1000, int(delay * 1e9))
        value = self._spec.value
        value.seconds, value.nanoseconds = divmod(nanoseconds, 1_000_000_000)
        if self._fd < 0 or _CALLS[1](self._fd, 0, ctypes.byref(self._spec), None) != 0:
            return False
        self.armed = True
        return True

    def cancel(self) -> None:
        if not self.armed:
            return
        assert _CALLS is not None
        self.armed = False
        value = self._spec.value
        value.seconds = value.nanoseconds = 0
        _CALLS[1](self._fd, 0, ctypes.byref(self._spec), None)

    def close(self) -> None:
        self.cancel()
        if self._watched:
            self._reactor.removeReader(self)
            self._watched = False
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- IReadDescriptor ------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # disarmed or re-armed since the reactor polled
            return
        if self.armed:
            self.armed = False
            self._callback()

    def connectionLost(self, reason: Any) -> None:
        self._watched = False

    def logPrefix(self) -> str:
        return "FineTimer"


def fine_timer_possible(reactor: Any) -> bool:
    """Whether :func:`fine_timer` can give ``reactor`` a timer (Linux, an FD reactor)."""
    from twisted.internet.interfaces import IReactorFDSet

    return _CALLS is not None and IReactorFDSet.providedBy(reactor)


def fine_timer(reactor: Any, callback: Callable[[], object]) -> FineTimer | None:
    """A :class:`FineTimer` for ``reactor``, or None where it cannot have one."""
    if not fine_timer_possible(reactor):
        return None
    assert _CALLS is not None
    fd = _CALLS[0](_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return None
    return FineTimer(reactor, callback, fd)
