"""
Numbers a long-lived object keeps all its life, written over in place.

CPython makes a new object for every int above 256 and every float it
computes, and its small-object allocator gives a 1 MiB arena back to the
system only once nothing in it lives.  A listener's counters and times
last as long as the listener; each one set while a wave of sessions
fills the arenas ends up in one of them, and keeps it after the sessions
are gone.  After 10,000 sessions a dozen such numbers held a dozen
arenas, 30 % of the listener's starting RSS (``docs/scaling.md``).  Kept
in an ``array``, a number never moves: the array's storage is made once,
with its owner.  Adding to an array's item costs more than adding to a
dict's value or an attribute, though (``python -m timeit`` on CPython
3.11: 67, 44 and 22 ns), so counters the hot paths add to are
:class:`Counts`: plain ints in a dict, folded into an array once a wave is
over; and the times the hot paths keep go back to a constant then.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Counts", "count_property", "numbers", "times"]


def numbers(count: int) -> array[int]:
    """``count`` integer counters, all 0."""
    return array("q", bytes(8 * count))


def times(count: int) -> array[float]:
    """``count`` float slots (times, durations), all 0.0."""
    return array("d", bytes(8 * count))


class Counts(Mapping[str, int]):
    """Named counters, read like a dict of ints.

    The hot paths add to :attr:`live`, a plain dict, which costs no more
    than counting in one; after a wave, :meth:`fold` moves its counts into
    an array and leaves ``0`` (an object made once, by the interpreter) in
    their place.
    """

    __slots__ = ("_folded", "_positions", "live")

    def __init__(self, *names: str) -> None:
        self._positions = {name: position for position, name in enumerate(names)}
        self._folded = numbers(len(names))
        #: The counts since the last fold, by name.
        self.live = dict.fromkeys(names, 0)

    def fold(self) -> None:
        """Move the live counts into the array (see the module's notes)."""
        live, folded = self.live, self._folded
        for name, position in self._positions.items():
            folded[position] += live[name]
            live[name] = 0

    def __getitem__(self, name: str) -> int:
        return self._folded[self._positions[name]] + self.live[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)

    def __repr__(self) -> str:
        return f"Counts({dict(self)!r})"


def count_property(name: str, doc: str) -> property:
    """A read-only attribute of an object that keeps its ``Counts`` as ``counts``."""

    def read(owner: Any) -> int:
        counts: Counts = owner.counts
        return counts[name]

    return property(read, doc=doc)
