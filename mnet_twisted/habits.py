"""
What a peer's acks show of how its receiver treats out-of-order segments.

Some receivers (the reference peers among them) throw away every segment
that does not start exactly at their offset.  For them repairing one hole
per round trip would crawl, so the sender goes back N (resends everything
after the hole) once acks after three repairs in a row stopped exactly at
the repaired segment's end although later segments were reported arrived.
A peer is known to keep out-of-order data once it acked eight segments past
a repaired one at once, or acked in-order data less than three times per
four segments (ours ack every second one; the references ack each): for
such a peer stops only mean a burst of losses, answered by resending the
next 2, 4, 8 … segments that were not reported arrived, never by a whole
pass for that reason.

Pure bookkeeping: the sender (``sender.StreamSender``) feeds it acks and
asks it what they showed.  Sizes are in bytes; ``mss`` is the sender's
segment size at the time, which a datagram size search may raise.
"""

from __future__ import annotations

__all__ = [
    "HABIT_SEGMENTS",
    "KEPT_JUMP_SEGMENTS",
    "STOPS_BEFORE_GOING_BACK",
    "ReceiverHabits",
]

#: An ack this many segments past a repaired one shows the peer kept them.
KEPT_JUMP_SEGMENTS = 8
#: In-order segments acked, with at most 3 acks per 4 of them, that show a
#: receiver coalescing its acks, as ours do and the references never do.
HABIT_SEGMENTS = 32
#: Repairs in a row whose ack stopped exactly at their end although later
#: segments were reported arrived, before the sender stops believing those
#: reports and goes back N: a receiver that discards out-of-order segments
#: does this on every repair; one that keeps them only after a burst of
#: four losses, or after dropping data for lack of room.
STOPS_BEFORE_GOING_BACK = 3


class ReceiverHabits:
    """Whether the peer keeps out-of-order segments, as its acks tell it."""

    __slots__ = ("_in_order_acks", "_in_order_segments", "keeps_out_of_order", "stops_in_a_row")

    def __init__(self) -> None:
        #: Proven: the peer acked past a repaired segment, or acks like ours.
        self.keeps_out_of_order = False
        #: Repairs in a row whose ack stopped at their end (see the module).
        self.stops_in_a_row = 0
        self._in_order_acks = self._in_order_segments = 0

    @property
    def discards_out_of_order(self) -> bool:
        """Acks stopped at repairs often enough, and nothing showed otherwise."""
        return not self.keeps_out_of_order and self.stops_in_a_row >= STOPS_BEFORE_GOING_BACK

    def in_order_ack(self, newly: int, mss: int) -> None:
        """An ack outside recovery newly acknowledged ``newly`` bytes.

        A reference receiver acks every segment; ours ack in-order data
        every second segment, and keep out-of-order data.  So a peer that
        sent far fewer acks than segments in order is one that keeps them,
        before any loss had to show it (a burst lost at the start would look
        like a discarding receiver).  Lost acks cannot fake this: a tenth of
        them lost still leaves nine acks for ten segments.
        """
        if self.keeps_out_of_order:
            return
        self._in_order_acks += 1
        self._in_order_segments += -(-newly // mss)
        if (
            self._in_order_segments >= HABIT_SEGMENTS
            and self._in_order_acks * 4 <= self._in_order_segments * 3
        ):
            self.keeps_out_of_order = True

    def repair_answered(self, ack: int, end: int, reported_beyond: bool, mss: int) -> None:
        """The ack of a repair ending at ``end`` (not one of a go-back pass) came."""
        if ack >= end + KEPT_JUMP_SEGMENTS * mss:
            # The repair released many segments at once: they had been kept.
            # (A few can be in-order data that came after the repair, which
            # even a discarding receiver accepts, acked out of order.)
            self.keeps_out_of_order = True
            self.stops_in_a_row = 0
        elif ack == end and reported_beyond:
            # Later segments arrived (their duplicate acks came), yet the ack
            # stopped at the repair: a burst of losses, or they were not kept.
            self.stops_in_a_row += 1

    def burst_after_stop(self) -> int:
        """Segments to resend behind a repair whose ack stopped: 0, or 2, 4, 8 …"""
        if self.stops_in_a_row < 2:
            return 0
        return 1 << (self.stops_in_a_row - 1)
