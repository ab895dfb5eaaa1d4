"""Round-trip time estimation and the retransmission timeout (RFC 6298)."""

from __future__ import annotations

__all__ = ["RttEstimator"]

_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4
#: Clock granularity G of RFC 6298; our clock is a float, so this only keeps
#: RTTVAR's contribution from vanishing on a perfectly steady link.
_GRANULARITY = 0.001


class RttEstimator:
    """SRTT/RTTVAR smoothing, exponential backoff, clamped RTO."""

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self._min_rto = min_rto
        self._max_rto = max_rto
        self._base_rto = initial_rto
        self.smoothed: float | None = None
        self.variance = 0.0
        self.latest: float | None = None
        self._backoff = 0

    @property
    def rto(self) -> float:
        """The current timeout, including backoff, within [min_rto, max_rto]."""
        return min(self._max_rto, max(self._min_rto, self._base_rto) * (1 << self._backoff))

    @property
    def backed_off(self) -> bool:
        return self._backoff > 0

    def add_sample(self, rtt: float) -> None:
        """Fold in one measurement from a segment that was never retransmitted."""
        rtt = max(rtt, 0.0)
        self.latest = rtt
        if self.smoothed is None:
            self.smoothed = rtt
            self.variance = rtt / 2
        else:
            self.variance = (1 - _BETA) * self.variance + _BETA * abs(self.smoothed - rtt)
            self.smoothed = (1 - _ALPHA) * self.smoothed + _ALPHA * rtt
        self._base_rto = self.smoothed + max(_GRANULARITY, _K * self.variance)
        self._backoff = 0

    def back_off(self) -> None:
        """Double the timeout after it expired (RFC 6298 5.5), up to max_rto."""
        if self.rto < self._max_rto:
            self._backoff += 1

    def reset_backoff(self) -> None:
        """New data was acknowledged: the path works again."""
        self._backoff = 0
