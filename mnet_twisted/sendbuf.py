"""Bytes the application wrote that the peer has not acknowledged yet."""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["SendBuffer"]

#: Small writes are gathered into chunks of about this size, so a segment
#: spans at most two chunks however the application slices its writes.
_CHUNK = 64 * 1024
#: Released chunks are dropped from the front of the lists in batches.
_COMPACT_AFTER = 256


class SendBuffer:
    """A byte queue addressed by absolute stream offset.

    ``start`` is the first byte still held (the oldest unacknowledged one);
    ``end`` is one past the last byte written.  Finding the chunk holding an
    offset is a binary search over the chunks' start offsets, so the cost
    of ``get`` does not grow with the amount buffered.
    """

    __slots__ = (
        "_chunks",
        "_first",
        "_starts",
        "end",
        "last_byte",
        "start",
    )

    def __init__(self, origin: int) -> None:
        self._chunks: list[bytes | bytearray] = []
        #: Stream offset of the first byte of each chunk.
        self._starts: list[int] = []
        #: Index of the first chunk still (partly) held.
        self._first = 0
        self.start = origin
        self.end = origin
        #: The stream's last byte (a zero byte before anything was written):
        #: what a keep-alive probe resends.
        self.last_byte = b"\x00"

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes, sent_until: int = 0) -> None:
        """Hold ``data`` after what is held; ``sent_until`` is how far the stream was sent.

        A tail chunk sent to its end takes no more: a later write starts a
        chunk of its own, which an interactive session's segment then
        carries uncopied even while the answer before is unacknowledged.
        """
        if not data:
            return
        self.last_byte = bytes(data[-1:])
        chunks = self._chunks
        tail = chunks[-1] if len(chunks) > self._first and self.end > sent_until else None
        size = len(data)
        if tail is not None and len(tail) + size <= _CHUNK:
            if type(tail) is bytes:
                # A second small write: gather from now on.  A lone one stays
                # the bytes it came as, which a segment then carries uncopied
                # (an interactive session's usual write).
                tail = chunks[-1] = bytearray(tail)
            tail += data
        else:
            chunks.append(bytes(data))  # (a copy only of a buffer the caller may change)
            self._starts.append(self.end)
        self.end += size

    def get(self, offset: int, length: int) -> bytes:
        """``length`` bytes starting at stream ``offset`` (which must be held)."""
        if not self.start <= offset <= offset + length <= self.end:
            raise IndexError(f"[{offset}, {offset + length}) not in [{self.start}, {self.end})")
        if not length:
            return b""
        chunks, starts = self._chunks, self._starts
        index = bisect_right(starts, offset, self._first) - 1
        chunk = chunks[index]
        position = offset - starts[index]
        if position + length <= len(chunk):
            piece = chunk[position : position + length]
            return piece if isinstance(piece, bytes) else bytes(piece)
        pieces = []
        while length:
            piece = chunk[position : position + length]
            pieces.append(piece)
            length -= len(piece)
            index += 1
            position = 0
            if length:
                chunk = chunks[index]
        return b"".join(pieces)

    def release_until(self, offset: int) -> None:
        """Forget every byte before stream ``offset`` (it was acknowledged)."""
        offset = min(offset, self.end)
        if offset <= self.start:
            return
        self.start = offset
        chunks, starts = self._chunks, self._starts
        first = self._first
        while first < len(chunks) and starts[first] + len(chunks[first]) <= offset:
            chunks[first] = b""  # let the memory go now
            first += 1
        if first == len(chunks):
            # All acknowledged (an interactive session's usual state): keep
            # no empty places, whose start offsets would pile up until the
            # compaction below.
            chunks.clear()
            starts.clear()
            first = 0
        elif first >= _COMPACT_AFTER and first * 2 >= len(chunks):
            del chunks[:first], starts[:first]
            first = 0
        self._first = first
