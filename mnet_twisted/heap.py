"""
Give the C heap's free memory back to the operating system.

When thousands of sessions close, the memory they held is free but stays
in the process: glibc keeps freed pages in its heap for reuse unless they
sit at its very top.  ``malloc_trim`` hands every free page back.  The
port calls :func:`release_free_memory` when its sessions fall to an eighth
of their peak, so a server that held a wave of sessions shrinks after it.

What this reaches depends on the allocator Python uses for small objects.
With ``PYTHONMALLOC=malloc`` every object lives in the C heap, and a server
comes back to its starting size.  With CPython's default (pymalloc), most
objects live in 1 MiB arenas that go back only once all their objects are
gone, and a few long-lived objects allocated during the wave keep some of
them; only the larger blocks (tables, buffers) are trimmed.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "can_release_free_memory",
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
