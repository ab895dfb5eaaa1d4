"""
The sending half of a session: what to (re)transmit, and when.

Segments are described as ``(end offset, payload)``; the session wraps them
into DATA packets with its tag and current acknowledgement.  Acknowledgements
are cumulative only (MNET has no SACK), so loss recovery is NewReno's: fast
retransmit on three duplicate acks, one retransmission per partial ack, and
on timeout a return to the first unacknowledged byte with a one-segment
window.

Some receivers (the reference peers among them) throw away every segment
that does not start exactly at their offset.  For them NewReno would repair
one segment per round trip after each loss, so the sender watches for it —
the ack after a retransmission stops exactly at its end, though more was
sent — and then goes back N instead: resends everything after the hole.
"""

from __future__ import annotations

from collections import deque

from .config import SessionConfig
from .congestion import NewReno
from .rtt import RttEstimator
from .sendbuf import SendBuffer
from .seqnum import unwrap

__all__ = ["Segment", "StreamSender"]

#: (stream offset of the end of the payload, payload)
Segment = tuple[int, bytes]


class StreamSender:
    """Invariant: ``acked <= snd_nxt <= snd_max <= written``."""

    def __init__(self, config: SessionConfig) -> None:
        self._mss = config.max_segment_size
        self._buffer = SendBuffer(config.stream_origin)
        self.snd_nxt = config.stream_origin
        #: Highest offset ever sent: the "total bytes sent" of the wire.
        self.snd_max = config.stream_origin
        self.rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self.congestion = NewReno(
            self._mss, config.initial_window_segments, config.max_congestion_window
        )
        #: (end offset, send time) of segments sent exactly once, for RTT samples.
        self._timed: deque[tuple[int, float]] = deque()
        self.rto_deadline: float | None = None
        self.retransmissions = 0
        #: Whether the peer seems to discard out-of-order segments.
        self.peer_discards_out_of_order = False
        #: End of the last retransmission of the first unacknowledged segment.
        self._repair_end: int | None = None
        self._discard_evidence = 0

    @property
    def acked(self) -> int:
        """Every byte before this offset is acknowledged."""
        return self._buffer.start

    @property
    def buffered(self) -> int:
        """Bytes written but not yet acknowledged."""
        return len(self._buffer)

    @property
    def awaiting_ack(self) -> bool:
        return self.snd_max > self._buffer.start

    def keepalive_probe(self) -> Segment:
        """A one-byte segment the peer already has, to make it answer."""
        return self.snd_max, self._buffer.last_byte

    def write(self, data: bytes) -> None:
        self._buffer.append(data)

    def discard(self) -> None:
        """Drop everything: the session is over."""
        self._buffer.release_until(self._buffer.end)
        self.rto_deadline = None

    def transmit(self, now: float) -> list[Segment]:
        """Segments the congestion window lets us send now, new or gone back to."""
        out: list[Segment] = []
        acked = self._buffer.start
        written = self._buffer.end
        cwnd = self.congestion.cwnd
        while self.snd_nxt < written:
            size = min(self._mss, written - self.snd_nxt)
            flight = self.snd_nxt - acked
            if flight and flight + size > cwnd:
                break
            start = self.snd_nxt
            end = start + size
            out.append((end, self._buffer.get(start, size)))
            if start >= self.snd_max:
                self._timed.append((end, now))
            else:
                self.retransmissions += 1
            self.snd_max = max(self.snd_max, end)
            self.snd_nxt = end
            if self.rto_deadline is None:
                self.rto_deadline = now + self.rtt.rto
        return out

    def on_ack(self, wire_ack: int, now: float, *, pure: bool) -> tuple[int, list[Segment]]:
        """Process an acknowledgement field.

        Returns the number of newly acknowledged bytes and any segment that
        must be retransmitted at once.  ``pure`` tells whether the packet
        carried nothing else, the only kind that counts as a duplicate ack.
        """
        acked = self._buffer.start
        ack = unwrap(wire_ack, acked)
        if ack > self.snd_max or ack < acked:
            return 0, []  # acknowledges nothing we sent, or an old ack overtaken
        if ack == acked:
            if pure and self.snd_nxt > acked:
                flight = self.snd_nxt - acked
                if self.congestion.on_duplicate_ack(flight, acked, self.snd_max):
                    return 0, self._repair(now)
            return 0, []
        newly = ack - acked
        sent_at = None
        while self._timed and self._timed[0][0] <= ack:
            sent_at = self._timed.popleft()[1]
        if sent_at is not None:
            self.rtt.add_sample(now - sent_at)
        else:
            self.rtt.reset_backoff()
        self._buffer.release_until(ack)
        self.snd_nxt = max(self.snd_nxt, ack)
        self._learn_receiver_behaviour(ack)
        retransmit = self._repair(now) if self.congestion.on_new_ack(newly, ack) else []
        self.rto_deadline = now + self.rtt.rto if self.snd_nxt > ack else None
        return newly, retransmit

    def on_timeout(self, now: float) -> list[Segment]:
        """The retransmission timer expired."""
        self.rto_deadline = None
        acked = self._buffer.start
        if self.snd_max <= acked:
            return []
        self.congestion.on_timeout(self.snd_nxt - acked, self.snd_max)
        self.rtt.back_off()
        self._timed.clear()
        self.snd_nxt = acked  # no SACK: go back and resend from the hole
        resent = self.transmit(now)
        if resent:
            self._repair_end = resent[0][0]
        return resent

    def _repair(self, now: float) -> list[Segment]:
        """Resend the first unacknowledged segment; for a discarding peer, all after it too."""
        resent = self._retransmit_first(now)
        if resent and self.peer_discards_out_of_order:
            # Everything in flight behind the hole was thrown away: resend it
            # as the window allows, starting right after the repaired segment.
            self.snd_nxt = resent[0][0]
        return resent

    def _learn_receiver_behaviour(self, ack: int) -> None:
        repaired = self._repair_end
        if repaired is None or ack < repaired:
            return
        self._repair_end = None
        if ack > repaired:
            # The repair released bytes sent after it: they had been kept.
            self._discard_evidence = 0
            self.peer_discards_out_of_order = False
        elif self.snd_max > ack:
            # Nothing sent after the hole was kept (or all of it was lost):
            # twice in a row is taken as the receiver's habit.
            self._discard_evidence += 1
            if self._discard_evidence >= 2:
                self.peer_discards_out_of_order = True

    def _retransmit_first(self, now: float) -> list[Segment]:
        start = self._buffer.start
        end = min(start + self._mss, self.snd_max)
        if end <= start:
            return []
        self.retransmissions += 1
        self._timed.clear()  # Karn: no sample may come from an ambiguous ack
        self.rto_deadline = now + self.rtt.rto
        self._repair_end = end
        return [(end, self._buffer.get(start, end - start))]
