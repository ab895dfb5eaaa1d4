"""
Pacing: spread a window's worth of segments over the round trip.

Without it a sender answers each batch of acks with a burst of the whole
freed window, which overruns shallow queues (a 20-packet router buffer, a
receiver's default socket buffer) while the average rate would fit, and
turns the burst's tail into losses that look like congestion.

A token bucket refilled at ``gain * cwnd / srtt``: twice the window per RTT
in slow start (the window doubles per round there), 1.25 times after it
(room to grow and to absorb ack jitter), the factors Linux uses.  Its depth
is what an event loop's timer can resolve: a timer fires a millisecond late
at best, so a bucket shallower than a couple of milliseconds of sending
would cap the rate instead of smoothing it.  At loopback speeds that depth
exceeds the window and pacing stays out of the way; on a slow link it
breaks a burst into a few segments every millisecond.
"""

from __future__ import annotations

__all__ = ["Pacer"]

SLOW_START_GAIN = 2.0
AVOIDANCE_GAIN = 1.25
#: Sending time the bucket may store: about two timer ticks.
QUANTUM = 0.002
#: The bucket always holds at least this many segments.
MIN_BURST_SEGMENTS = 10
_MIN_WAIT = 1e-6


class Pacer:
    """How many bytes may leave now, and when the next segment may."""

    __slots__ = (
        "_mss",
        "_rate",
        "_updated_at",
        "tokens",
    )

    def __init__(self, mss: int) -> None:
        self._mss = mss
        #: Bytes that may leave now.  The bucket fills lazily: ``refill``
        #: credits all the time since the last one, so it need only run once
        #: the bucket may be too low for what waits.
        self.tokens = float(MIN_BURST_SEGMENTS * mss)
        self._updated_at: float | None = None
        self._rate: float | None = None

    def set_segment_size(self, mss: int) -> None:
        self._mss = mss

    def refill(self, now: float, cwnd: int, srtt: float | None, slow_start: bool) -> float | None:
        """Bring the bucket up to ``now``; returns the bytes it allows (None: no limit)."""
        if srtt is None or srtt <= 0:
            self._rate = None
            self._updated_at = now
            return None
        rate = (SLOW_START_GAIN if slow_start else AVOIDANCE_GAIN) * cwnd / srtt
        depth = max(MIN_BURST_SEGMENTS * self._mss, rate * QUANTUM)
        if self._updated_at is not None and now > self._updated_at:
            self.tokens += (now - self._updated_at) * rate
        self.tokens = min(self.tokens, depth)
        self._updated_at = now
        self._rate = rate
        return self.tokens

    def take(self, size: int) -> bool:
        """Spend ``size`` bytes if they may leave now; returns whether they may."""
        if self._rate is None:
            return True
        if self.tokens < size:
            return False
        self.tokens -= size
        return True

    def spend(self, size: int) -> None:
        """``size`` bytes left (a repair may overdraw the bucket)."""
        if self._rate is not None:
            self.tokens -= size

    def refund(self, size: int) -> None:
        """``size`` bytes spent did not leave after all (a size probe the stack refused)."""
        if self._rate is not None:
            self.tokens += size

    def ready_at(self, now: float, size: int) -> float:
        """When the bucket will hold ``size`` bytes, at the current rate."""
        if self._rate is None or self.tokens >= size:
            return now
        # At least a microsecond ahead, so that rounding in the refill can
        # never leave the bucket a hair short at the very deadline.
        return now + max(_MIN_WAIT, (size - self.tokens) / self._rate)
