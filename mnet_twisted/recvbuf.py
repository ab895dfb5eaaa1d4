"""Out-of-order segments held until the bytes before them arrive."""

from __future__ import annotations

import bisect

__all__ = ["ReassemblyBuffer"]

#: What each held segment costs beyond its bytes, so a peer cannot exhaust
#: memory with a swarm of one-byte segments inside the byte limit.
SEGMENT_OVERHEAD = 64


class ReassemblyBuffer:
    """Non-overlapping segments beyond the next expected offset, sorted."""

    __slots__ = (
        "_segments",
        "_starts",
        "cost",
    )

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._segments: dict[int, bytes] = {}
        #: Memory charged for what is held (bytes plus per-segment overhead).
        self.cost = 0

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, start: int, data: bytes, expected: int) -> None:
        """Keep the parts of ``data`` (at stream ``start``) that are new to us."""
        end = start + len(data)
        cursor = max(start, expected)
        index = bisect.bisect_right(self._starts, cursor)
        if index:
            previous = self._starts[index - 1]
            cursor = max(cursor, previous + len(self._segments[previous]))
        pieces: list[tuple[int, bytes]] = []
        while cursor < end:
            following = self._starts[index] if index < len(self._starts) else end
            if following > cursor:
                stop = min(following, end)
                pieces.append((cursor, data[cursor - start : stop - start]))
            if following >= end:
                break
            cursor = max(cursor, following + len(self._segments[following]))
            index += 1
        for piece_start, piece in pieces:
            bisect.insort(self._starts, piece_start)
            self._segments[piece_start] = piece
            self.cost += len(piece) + SEGMENT_OVERHEAD

    def evict_farthest(self, cost: int) -> None:
        """Forget the segments farthest ahead until ``cost`` has been freed."""
        while cost > 0 and self._starts:
            data = self._segments.pop(self._starts.pop())
            freed = len(data) + SEGMENT_OVERHEAD
            self.cost -= freed
            cost -= freed

    def pop_contiguous(self, expected: int) -> list[bytes]:
        """Remove and return the held bytes that continue the stream at ``expected``."""
        out: list[bytes] = []
        while self._starts and self._starts[0] <= expected:
            start = self._starts.pop(0)
            data = self._segments.pop(start)
            self.cost -= len(data) + SEGMENT_OVERHEAD
            end = start + len(data)
            if end > expected:
                out.append(data[expected - start :])
                expected = end
        return out
