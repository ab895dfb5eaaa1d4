"""
Datagram size search (DPLPMTUD, RFC 8899, in spirit): find the largest
datagram the path and the peer carry, from the safe default upwards.

A *probe* is a DATA segment larger than the size proven so far, carrying
new stream data, sent with fragmentation forbidden.  The peer's cumulative
ack passing its end proves the size; a probe lost (or refused by the local
stack as too big) is a size signal only, never congestion.  Nothing larger
than a proven size is ever sent except as a probe, so a peer that cannot
take large datagrams (or a path that drops them) costs a few lost probes
and the session goes on at the size it had.

The search first tries the ceiling (loopback and jumbo-frame links carry
it at once), then halves the interval between the largest size proven and
the smallest that failed, until it is narrower than ``RESOLUTION``.
"""

from __future__ import annotations

__all__ = ["MAX_PROBES", "RESOLUTION", "PathSizeSearch"]

#: Lost probes of one size before it counts as too big (a single loss may be
#: random; RFC 8899 uses 3).  A local refusal counts at once.
MAX_PROBES = 2
#: The search stops when the next probe would gain less than this.
RESOLUTION = 64


class PathSizeSearch:
    """The proven datagram size of one path, and the next size to probe."""

    def __init__(self, base: int, ceiling: int, enabled: bool) -> None:
        #: The largest datagram proven to get through (at first: the base).
        self.proven = base
        self._too_big = ceiling + 1
        self._ceiling = ceiling
        self._losses = 0
        self.probes_sent = 0
        self.probes_lost = 0
        self._done = not enabled or ceiling <= base

    @property
    def searching(self) -> bool:
        return not self._done

    def next_probe_size(self) -> int | None:
        """The datagram size to probe next, or None once the search is over."""
        if self._done:
            return None
        if self._too_big > self._ceiling:
            return self._ceiling
        return (self.proven + self._too_big) // 2

    def on_probe_sent(self) -> None:
        self.probes_sent += 1

    def on_probe_acknowledged(self, size: int) -> None:
        """A probe of ``size`` bytes got through (perhaps after it was taken for lost)."""
        self.proven = max(self.proven, size)
        if self._too_big <= size:
            self._too_big = self._ceiling + 1
        self._losses = 0
        self._check_done()

    def on_probe_lost(self, size: int, *, refused: bool = False) -> None:
        """A probe of ``size`` bytes was lost, or ``refused`` by the local stack."""
        self.probes_lost += 1
        self._losses += 1
        if refused or self._losses >= MAX_PROBES:
            self._too_big = min(self._too_big, size)
            self._losses = 0
        self._check_done()

    def _check_done(self) -> None:
        if self._too_big - self.proven <= RESOLUTION or self.proven >= self._ceiling:
            self._done = True
