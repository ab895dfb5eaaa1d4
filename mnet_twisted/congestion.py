"""NewReno congestion control (RFC 5681 with the RFC 6582 recovery rules)."""

from __future__ import annotations

__all__ = ["NewReno"]

DUPLICATE_ACK_THRESHOLD = 3


class NewReno:
    """The congestion window, in bytes, and what to do on acks and losses."""

    def __init__(self, mss: int, initial_window_segments: int, max_window: int) -> None:
        self._mss = mss
        self._max_window = max(max_window, 2 * mss)
        self.cwnd = min(self._max_window, initial_window_segments * mss)
        self.ssthresh = self._max_window
        self.in_recovery = False
        self.duplicate_acks = 0
        #: Highest offset sent when the last loss was detected (RFC 6582 "recover").
        self._recover: int | None = None
        self._avoidance_credit = 0

    def on_new_ack(self, acked: int, ack: int) -> bool:
        """``acked`` new bytes were acknowledged up to ``ack``.

        Returns True for a partial acknowledgement during fast recovery: the
        caller must retransmit the first unacknowledged segment.
        """
        self.duplicate_acks = 0
        if self.in_recovery:
            assert self._recover is not None
            if ack >= self._recover:
                self.in_recovery = False
                self.cwnd = self.ssthresh
                return False
            # Partial ack: deflate by what left the network, re-add one segment.
            self.cwnd = max(self._mss, self.cwnd - acked + self._mss)
            return True
        if self.cwnd < self.ssthresh:
            self.cwnd += acked
        else:
            self._avoidance_credit += acked
            if self._avoidance_credit >= self.cwnd:
                self._avoidance_credit -= self.cwnd
                self.cwnd += self._mss
        self.cwnd = min(self.cwnd, self._max_window)
        return False

    def on_duplicate_ack(self, flight: int, snd_una: int, snd_max: int) -> bool:
        """A pure ack that acknowledged nothing new arrived while data was in flight.

        Returns True when the caller must fast-retransmit the first segment.
        """
        self.duplicate_acks += 1
        if self.in_recovery:
            self.cwnd = min(self._max_window, self.cwnd + self._mss)
            return False
        if self.duplicate_acks != DUPLICATE_ACK_THRESHOLD:
            return False
        if self._recover is not None and snd_una <= self._recover:
            # These duplicates may stem from the loss we already reacted to.
            return False
        self.ssthresh = max(flight // 2, 2 * self._mss)
        self.cwnd = self.ssthresh + DUPLICATE_ACK_THRESHOLD * self._mss
        self._recover = snd_max
        self.in_recovery = True
        return True

    def on_timeout(self, flight: int, snd_max: int) -> None:
        """The retransmission timer expired: start again from one segment."""
        self.ssthresh = max(flight // 2, 2 * self._mss)
        self.cwnd = self._mss
        self.in_recovery = False
        self.duplicate_acks = 0
        self._recover = snd_max
        self._avoidance_credit = 0
