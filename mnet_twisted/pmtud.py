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

    __slots__ = (
        "_ceiling",
        "_losses",
        "_too_big",
        "done",
        "probes_lost",
        "probes_sent",
        "proven",
    )

    def __init__(self, base: int, ceiling: int, enabled: bool) -> None:
        #: The largest datagram proven to get through (at first: the base).
        self.proven = base
        self._too_big = ceiling + 1
        self._ceiling = ceiling
        self._losses = 0
        self.probes_sent = 0
        self.probes_lost = 0
        #: Whether the search is over (disabled, or sizes narrowed down).
        self.done = not enabled or ceiling <= base

    @property
    def searching(self) -> bool:
        return not self.done

    def next_probe_size(self) -> int | None:
        """The datagram size to probe next, or None once the search is over."""
        if self.done:
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
            self.done = True


#: (start offset, end offset, datagram size) of one size probe.
Probe = tuple[int, int, int]


class SizeProbes:
    """The sender's bookkeeping of its size probes: the one in flight, the one lost.

    Offsets are stream offsets; the sender does what follows from each
    answer (resending, rewinding, growing its segments).
    """

    __slots__ = (
        "_header",
        "in_flight",
        "lost",
        "search",
    )

    def __init__(self, base: int, ceiling: int, enabled: bool, header: int) -> None:
        self.search = PathSizeSearch(base, ceiling, enabled)
        self._header = header
        self.in_flight: Probe | None = None
        #: The probe the current recovery episode took for lost (undo may clear it).
        self.lost: Probe | None = None

    def payload_wanted(self) -> int:
        """Payload of the next probe if one may go now, else 0 (the window aside)."""
        if self.in_flight is not None or self.search.done:
            return 0
        size = self.search.next_probe_size()
        return 0 if size is None else size - self._header

    def sent(self, start: int, end: int) -> None:
        self.in_flight = (start, end, end - start + self._header)
        self.search.on_probe_sent()

    def acknowledged(self, ack: int, resent_until: int) -> bool:
        """Whether ``ack`` proved the probe in flight (the proven size may have grown).

        A probe whose whole range was sent again (a timeout, a go-back pass)
        is not proven by the ack: the copies may be what arrived.  It counts
        as lost, as its resending already assumed.
        """
        probe = self.in_flight
        if probe is None or ack < probe[1]:
            return False
        self.in_flight = None
        if resent_until >= probe[1]:
            self.search.on_probe_lost(probe[2])
            return False
        self.search.on_probe_acknowledged(probe[2])
        return True

    def refused(self, sent_until: int) -> Probe | None:
        """The local stack refused the probe; it is returned if it was the last sent."""
        probe = self._take(1, sent_until)
        if probe is not None:
            self.search.on_probe_lost(probe[2], refused=True)
        return probe

    def lost_at(self, hole: int) -> Probe | None:
        """If the first hole is the probe in flight: it is lost; returned to be resent."""
        probe = self._take(0, hole)
        if probe is not None:
            self.lost = probe
            self.search.on_probe_lost(probe[2])
        return probe

    def _take(self, field: int, offset: int) -> Probe | None:
        """The probe in flight, forgotten, if its start (0) or end (1) is ``offset``."""
        probe = self.in_flight
        if probe is None or probe[field] != offset:
            return None
        self.in_flight = None
        return probe

    def arrived_late(self, acked: int, resent_until: int) -> bool:
        """The episode was spurious: whether the probe taken for lost got through.

        As in ``acknowledged``, only an ack past bytes that went in the
        probe alone proves it (a misjudged undo once proved so a size the
        peer could not take, and everything sent at it was lost).
        """
        probe, self.lost = self.lost, None
        if probe is None or acked < probe[1] or resent_until >= probe[1]:
            return False
        self.search.on_probe_acknowledged(probe[2])
        return True
