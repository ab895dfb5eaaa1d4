"""
The receiving half of a session: in-order delivery and the ack policy.

In-order data is acknowledged at the latest with every second full segment
and otherwise once per drain, where it can ride on data going back (an echo
costs no extra datagram); one lost ack then hides two segments, not a whole
burst.  Anything out of order, duplicated or dropped for lack of space is
acknowledged at once, because the sender counts those duplicate acks to
detect loss.  A segment that joins up with segments held past a hole (a
repair, as a rule) is acknowledged before anything else is read (RFC 5681
4.2): the sender repairs one hole per round trip of its repairs, and this
ack tells it where the next hole is.
"""

from __future__ import annotations

from enum import Enum

from .recvbuf import SEGMENT_OVERHEAD, ReassemblyBuffer, SharedBudget
from .seqnum import unwrap

__all__ = ["ACK_FILLED", "ACK_LATER", "ACK_NOW", "Ack", "StreamReceiver"]


class Ack(Enum):
    #: Acknowledge with the next drain (may ride on outgoing data).
    LATER = "later"
    #: Acknowledge with a packet of its own, now.
    NOW = "now"
    #: As NOW, and before the rest of the read batch: a hole was filled.
    FILLED = "filled"


#: The members as module constants, for the code that gives or reads one
#: per packet: reading a member off its Enum class costs about as much as a
#: function call on CPython 3.11.
ACK_NOW, ACK_LATER, ACK_FILLED = Ack.NOW, Ack.LATER, Ack.FILLED


class StreamReceiver:
    __slots__ = (
        "_budget",
        "_full_segment",
        "_limit",
        "_reassembly",
        "_unacknowledged",
        "duplicate_segments",
        "out_of_order_segments",
        "rcv_nxt",
    )

    def __init__(self, origin: int, limit: int, budget: SharedBudget | None = None) -> None:
        #: Every byte before this offset has been received.
        self.rcv_nxt = origin
        #: Segments that brought nothing new, and segments that came ahead of a hole.
        self.duplicate_segments = 0
        self.out_of_order_segments = 0
        self._limit = limit
        self._budget = budget
        #: Out-of-order segments, from the first one on while any is held
        #: (most sessions never see one; an empty buffer costs ~260 bytes).
        self._reassembly: ReassemblyBuffer | None = None
        #: In-order bytes taken since our last acknowledgement went out.
        self._unacknowledged = 0
        #: The largest payload seen: what a full segment is for this peer.
        self._full_segment = 1

    def on_ack_sent(self) -> None:
        """An acknowledgement of ``rcv_nxt`` left, alone or on data."""
        self._unacknowledged = 0

    @property
    def held_out_of_order(self) -> int:
        """Memory charged for out-of-order segments."""
        return 0 if self._reassembly is None else self._reassembly.cost

    def discard(self) -> None:
        if self._reassembly is not None:
            self._reassembly.clear()
            self._reassembly = None

    def on_segment(self, wire_seq: int, payload: bytes, unread: int) -> tuple[list[bytes], Ack]:
        """Take one DATA payload; return the bytes now deliverable in order.

        ``unread`` is what the application has not consumed yet; together
        with the out-of-order bytes it must stay within the limit.
        """
        rcv_nxt = self.rcv_nxt
        size = len(payload)
        end = unwrap(wire_seq, rcv_nxt)
        start = end - size
        if size > self._full_segment:
            self._full_segment = size
        if end <= rcv_nxt:
            self.duplicate_segments += 1
            return [], ACK_NOW  # a duplicate: our earlier ack was lost
        reassembly = self._reassembly
        if start > rcv_nxt:
            self.out_of_order_segments += 1
            if reassembly is None:
                reassembly = self._reassembly = ReassemblyBuffer(self._budget)
            cost = size + SEGMENT_OVERHEAD
            if unread + reassembly.cost + cost <= self._limit:
                reassembly.add(start, payload, rcv_nxt)
            return [], ACK_NOW
        fresh = payload if start == rcv_nxt else payload[rcv_nxt - start :]
        if unread + len(fresh) > self._limit:
            return [], ACK_NOW  # no room: the sender will try again later
        self.rcv_nxt = end
        self._unacknowledged += len(fresh)
        if reassembly is not None:
            # Out-of-order bytes must never lock out the segment that fills
            # the hole before them: drop the farthest ones instead.  They were
            # never acknowledged (acks are cumulative), so the sender sends
            # them again.
            excess = unread + reassembly.cost + len(fresh) - self._limit
            if excess > 0:
                reassembly.evict_farthest(excess)
            following = reassembly.pop_contiguous(end)
            if not reassembly.cost:
                self._reassembly = None  # the holes are filled
            if following:
                for data in following:
                    self.rcv_nxt += len(data)
                return [fresh, *following], ACK_FILLED
        if self._unacknowledged >= 2 * self._full_segment:
            return [fresh], ACK_NOW
        return [fresh], ACK_LATER
