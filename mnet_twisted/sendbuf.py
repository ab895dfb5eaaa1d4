"""Bytes the application wrote that the peer has not acknowledged yet."""

from __future__ import annotations

from collections import deque

__all__ = ["SendBuffer"]

#: Small writes are gathered into chunks of about this size, so looking up a
#: segment walks a few chunks however the application slices its writes.
_CHUNK = 64 * 1024


class SendBuffer:
    """A byte queue addressed by absolute stream offset.

    ``start`` is the first byte still held (the oldest unacknowledged one);
    ``end`` is one past the last byte written.
    """

    def __init__(self, origin: int) -> None:
        self._chunks: deque[bytes | bytearray] = deque()
        #: Bytes at the front of the first chunk that were already released.
        self._head_skip = 0
        self.start = origin
        self.end = origin
        #: The stream's last byte (a zero byte before anything was written):
        #: what a keep-alive probe resends.
        self.last_byte = b"\x00"

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes) -> None:
        if not data:
            return
        self.last_byte = bytes(data[-1:])
        tail = self._chunks[-1] if self._chunks else None
        if isinstance(tail, bytearray) and len(tail) + len(data) <= _CHUNK:
            tail += data
        elif len(data) >= _CHUNK:
            self._chunks.append(bytes(data))
        else:
            self._chunks.append(bytearray(data))
        self.end += len(data)

    def get(self, offset: int, length: int) -> bytes:
        """``length`` bytes starting at stream ``offset`` (which must be held)."""
        if not self.start <= offset <= offset + length <= self.end:
            raise IndexError(f"[{offset}, {offset + length}) not in [{self.start}, {self.end})")
        position = offset - self.start + self._head_skip
        pieces = []
        for chunk in self._chunks:
            if position >= len(chunk):
                position -= len(chunk)
                continue
            piece = chunk[position : position + length]
            pieces.append(piece)
            length -= len(piece)
            position = 0
            if not length:
                break
        return pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)

    def release_until(self, offset: int) -> None:
        """Forget every byte before stream ``offset`` (it was acknowledged)."""
        drop = min(offset, self.end) - self.start
        if drop <= 0:
            return
        self.start += drop
        drop += self._head_skip
        while self._chunks and drop >= len(self._chunks[0]):
            drop -= len(self._chunks.popleft())
        self._head_skip = drop
