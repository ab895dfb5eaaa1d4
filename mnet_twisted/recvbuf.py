"""Out-of-order segments held until the bytes before them arrive."""

from __future__ import annotations

import heapq

__all__ = ["ReassemblyBuffer", "SharedBudget"]

#: What each held segment costs beyond its bytes: the bytes object's header,
#: its dict entry and key, and its places in both heaps (about 120 bytes on
#: CPython).  Charging it means a swarm of one-byte segments cannot hold
#: more memory than the byte limit says.
SEGMENT_OVERHEAD = 128
#: Heaps are rebuilt once stale entries outnumber live ones this many times.
_STALE_FACTOR = 2


class SharedBudget:
    """Out-of-order bytes all sessions of one listener may hold together.

    Each session has its own limit; this bounds their sum, so that many
    sessions each filling theirs with far-ahead segments cannot add up to
    more memory than the listener allows.  A segment that does not fit is
    not kept (nor acknowledged): its sender sends it again later.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int | None) -> None:
        #: None: no bound beyond each session's own.
        self.limit = limit
        self.used = 0

    def fits(self, cost: int) -> bool:
        return self.limit is None or self.used + cost <= self.limit


class ReassemblyBuffer:
    """Segments beyond the next expected offset, each stored whole, as it came.

    A segment is kept as received (never cut into pieces around what is
    already held), so what is charged is exactly what is stored; overlaps
    are trimmed on the way out.  Two heaps index the segments by start
    offset, nearest and farthest first: adding, delivering and evicting a
    segment each cost O(log n), however the peer orders or overlaps them.
    Entries of segments that left through the other heap are skipped when
    met, and each heap is rebuilt when such entries pile up in it.  The
    farthest-first heap is built at the first eviction only (O(n log n)
    once, then kept): a loss's holes fill without ever needing it.
    """

    __slots__ = (
        "_budget",
        "_farthest",
        "_nearest",
        "_segments",
        "cost",
    )

    def __init__(self, budget: SharedBudget | None = None) -> None:
        self._budget = budget
        #: The data held, by stream offset of its first byte.
        self._segments: dict[int, bytes] = {}
        self._nearest: list[int] = []
        #: Negated starts: a max-heap; None until the first eviction.
        self._farthest: list[int] | None = None
        #: Memory charged for what is held (bytes plus per-segment overhead).
        self.cost = 0

    def __len__(self) -> int:
        return len(self._segments)

    def add(self, start: int, data: bytes, expected: int) -> bool:
        """Hold ``data`` (at stream ``start``), unless what is held already covers it.

        Returns False if the shared budget had no room for it (nothing kept).
        """
        if start < expected:
            data = data[expected - start :]
            start = expected
        if not data:
            return True
        held = self._segments.get(start)
        grown = len(data) - len(held) if held is not None else len(data) + SEGMENT_OVERHEAD
        if grown <= 0:
            return True  # a copy of what we hold
        budget = self._budget
        if budget is not None:
            if not budget.fits(grown):
                return False
            budget.used += grown
        self.cost += grown
        self._segments[start] = data  # a longer copy replaces a shorter one
        if held is None:
            heapq.heappush(self._nearest, start)
            if self._farthest is not None:
                heapq.heappush(self._farthest, -start)
        return True

    def clear(self) -> None:
        """Forget everything (the session is over), handing its charge back."""
        if self._budget is not None:
            self._budget.used -= self.cost
        self._segments.clear()
        self._nearest, self._farthest = [], None
        self.cost = 0

    def _release(self, cost: int) -> None:
        self.cost -= cost
        if self._budget is not None:
            self._budget.used -= cost

    def evict_farthest(self, cost: int) -> None:
        """Forget the segments farthest ahead until ``cost`` has been freed."""
        segments, farthest = self._segments, self._farthest
        if farthest is None:
            farthest = self._farthest = _farthest_first(segments)
        while cost > 0 and segments:
            data = segments.pop(-heapq.heappop(farthest), None)
            if data is None:
                continue  # it already left through the other heap
            freed = len(data) + SEGMENT_OVERHEAD
            self._release(freed)
            cost -= freed
        self._compact()

    def pop_contiguous(self, expected: int) -> list[bytes]:
        """Remove and return the held bytes that continue the stream at ``expected``."""
        out: list[bytes] = []
        segments, nearest = self._segments, self._nearest
        freed = 0
        while nearest and nearest[0] <= expected:
            start = heapq.heappop(nearest)
            data = segments.pop(start, None)
            if data is None:
                continue  # evicted already
            size = len(data)
            freed += size + SEGMENT_OVERHEAD
            end = start + size
            if end > expected:
                out.append(data[expected - start :])
                expected = end
        if freed:
            self._release(freed)
        self._compact()
        return out

    def _compact(self) -> None:
        """Rebuild a heap once its stale entries outnumber the live ones."""
        segments = self._segments
        bound = _STALE_FACTOR * len(segments) + 32
        if len(self._nearest) > bound:
            self._nearest = sorted(segments)
        if self._farthest is not None and len(self._farthest) > bound:
            self._farthest = _farthest_first(segments)


def _farthest_first(segments: dict[int, bytes]) -> list[int]:
    """A max-heap of the held starts (negated; ascending order is already a heap)."""
    return [-start for start in sorted(segments, reverse=True)]
