"""
Round-trip time estimation and the probe timeout.

Smoothing follows RFC 6298; the timeout itself follows RFC 9002's probe
timeout: ``srtt + max(4 * rttvar, granularity) + the peer's ack delay``,
doubled per expiry in a row.  There is no fixed floor such as TCP's 200 ms
or one second: on a 0.1 ms path a lost tail costs about a millisecond, not
two hundred.  ``min_rto`` only keeps the timer above the clock's resolution.
"""

from __future__ import annotations

__all__ = ["RttEstimator"]

_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4
#: RFC 9002's kGranularity: the resolution below which timers cannot be
#: trusted to fire, and the least variance a steady link is credited with.
GRANULARITY = 0.001
#: Past this many doublings every timeout is max_rto anyway.
_MAX_DOUBLINGS = 30


class RttEstimator:
    """SRTT/RTTVAR smoothing, the minimum seen, exponential backoff, clamped timeout."""

    __slots__ = (
        "_backoff",
        "_base_rto",
        "_max_rto",
        "_min_rto",
        "_peer_ack_delay",
        "latest",
        "minimum",
        "rto",
        "smoothed",
        "variance",
    )

    def __init__(
        self,
        initial_rto: float,
        min_rto: float,
        max_rto: float,
        peer_ack_delay: float = 0.0,
    ) -> None:
        self._min_rto = min_rto
        self._max_rto = max_rto
        self._base_rto = initial_rto
        self._peer_ack_delay = peer_ack_delay
        self.smoothed: float | None = None
        self.variance = 0.0
        self.latest: float | None = None
        #: The least sample ever taken: the path's delay without queues.
        self.minimum: float | None = None
        self._backoff = 0
        #: The current timeout, including backoff, within [min_rto, max_rto]
        #: (kept up to date here: it is read for every segment sent).
        self.rto = 0.0
        self._update_rto()

    def _update_rto(self) -> None:
        doublings = 1 << min(self._backoff, _MAX_DOUBLINGS)
        self.rto = min(self._max_rto, max(self._min_rto, self._base_rto) * doublings)

    @property
    def backoff_count(self) -> int:
        """Expiries since the timeout last proved long enough (a sample or a clean ack)."""
        return self._backoff

    def add_sample(self, rtt: float) -> None:
        """Fold in one measurement from a segment that was never retransmitted."""
        if rtt < 0.0:
            rtt = 0.0
        self.latest = rtt
        minimum = self.minimum
        if minimum is None or rtt < minimum:
            self.minimum = rtt
        self._smooth(rtt)
        self._backoff = 0
        self._update_rto()

    def add_lower_bound(self, rtt: float) -> None:
        """The round trip now takes at least ``rtt``: fold it in if that is news.

        An ack of bytes last sent ``rtt`` ago cannot have come sooner than
        a round trip after that, whichever copy it answers, so unlike a
        sample (Karn) this holds for retransmitted data too.  It is taken
        only when it exceeds the smoothed estimate: during a long recovery
        no clean sample comes, and a queue that grew since the last one
        would otherwise leave the estimate, and every timer built on it,
        far too short.  The backoff is kept: a bound is no proof that the
        timeout is now long enough.
        """
        if self.smoothed is None or rtt <= self.smoothed:
            return
        self.latest = rtt
        self._smooth(rtt)
        self._update_rto()

    def _smooth(self, rtt: float) -> None:
        """RFC 6298's SRTT and RTTVAR with ``rtt`` folded in, and the timeout they give."""
        smoothed = self.smoothed
        if smoothed is None:
            self.smoothed = rtt
            self.variance = rtt / 2
        else:
            self.variance = (1 - _BETA) * self.variance + _BETA * abs(smoothed - rtt)
            self.smoothed = (1 - _ALPHA) * smoothed + _ALPHA * rtt
        self._base_rto = (
            self.smoothed + max(GRANULARITY, _K * self.variance) + self._peer_ack_delay
        )

    def back_off(self) -> None:
        """Double the timeout after it expired, up to max_rto."""
        self._backoff += 1
        self._update_rto()

    def reset_backoff(self) -> None:
        """Data sent once only was acknowledged in time: the timeout was long enough."""
        if self._backoff:
            self._backoff = 0
            self._update_rto()
