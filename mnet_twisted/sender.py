"""
The sending half of a session: what to (re)transmit, and when.

Segments are described as ``(end offset, payload)``; the session wraps them
into DATA packets with its tag and current acknowledgement.

MNET has cumulative acknowledgements only, but every MNET receiver acks each
out-of-order segment at once, so the acks still say a lot:

- a *duplicate ack* (a pure ack that moves nothing) is one segment beyond the
  first hole that reached the peer: it left the network, so it no longer
  counts as in flight (the *pipe*), and it lets a new segment out (limited
  transmit, RFC 3042, and the RFC 6675 pipe without SACK);
- three of them (fewer when little is outstanding: early retransmit,
  RFC 5827) mean the hole's segment is lost — unless reordering was seen on
  this path, in which case the hole must also be older than an RTT plus a
  reordering window (RACK, RFC 8985);
- in recovery, an ack that advances but stays short of what was sent when
  the loss was found (a *partial ack*, RFC 6582) ends at the next hole:
  repair it at once; an ack past that point that stops at a segment sent
  before the repair it answers, when nothing new could go to draw
  duplicates, starts the next episode at once (RACK's rule again);
- more duplicate acks after a repair than the segments sent before it can
  explain, or duplicates arriving after the repair's own ack was due (RACK's
  rule: something sent later got there first), mean the repair itself was
  lost: send it again;
- an ack of a repaired segment sooner than any round trip could bring it
  answers the original, so the loss was not one: take back the window cut
  (Eifel, RFC 3522, from ack timing) and widen the reordering window;
- silence: the probe timeout (RFC 9002) resends the first unacknowledged
  segment, with one window reduction, and backs off — unless the peer
  answered nothing sent since that segment and another session's copy to
  the same peer address is already out: then it waits for that copy's
  timeout (``peerprogress``: a stalled peer gets one copy, not one per
  session).

The controller hears of a loss when an episode starts and, since without
SACK one episode can last many round trips, again (at most once per RTT)
for each repair lost or timeout within it.

Some receivers (the reference peers among them) throw away every segment
that does not start exactly at their offset; ``habits.ReceiverHabits``
tells them from ours by their acks.  For them the sender goes back N
(resends everything after the hole), at most once per pass over the
outstanding data; for a peer that keeps out-of-order data, acks that stop
at repairs mean a burst of losses, answered by resending the segments right
behind.  Any peer gets one go-back pass after a repair when nothing at all
was heard of the data beyond the hole (a whole flight lost).

Bytes outstanding never exceed ``max_congestion_window``, whatever the pipe
estimate allows: MNET has no receive window on the wire, and a receiver
holding the out-of-order data must have room for it.

New segments are also paced (``pacing.Pacer``; a held segment shows as
``pacing_deadline``), and while the datagram size search runs
(``pmtud.PathSizeSearch``) one segment at a time may be a larger *size
probe*: sent only when the window has room for it and as the last of its
batch, proven when acknowledged, taken back if the local stack refuses it,
and, if it turns out to be the hole, resent at the proven size with no
congestion response.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SessionConfig
from .congestion import make_controller
from .habits import ReceiverHabits
from .pacing import Pacer
from .peerprogress import PeerProgress
from .pmtud import SizeProbes
from .rtt import RttEstimator
from .sendbuf import SendBuffer
from .seqnum import WIRE_MASK, unwrap, wrap
from .wire import DATA_HEADER_SIZE

__all__ = ["RecoveryStats", "Segment", "StreamSender"]


#: (stream offset of the end of the payload, payload)
Segment = tuple[int, bytes]

DUPLICATE_ACK_THRESHOLD = 3
#: Probe timeouts in a row after which the window collapses (RFC 9002 7.6).
PERSISTENT_CONGESTION_TIMEOUTS = 3
#: Duplicate acks that prove a repair lost: ones beyond what the segments
#: sent before it can draw, arriving after its ack was due (two, so that one
#: segment reordered past it does not).
LATE_DUPLICATES_FOR_LOST_REPAIR = 2
#: An ack of a repaired segment within this share of the least RTT ever seen
#: cannot answer the repair: it answers the original.
_SPURIOUS_SHARE = 0.8


@dataclass(slots=True)
class RecoveryStats:
    """Counters of the sender's loss recovery, for benchmarks and operators."""

    data_datagrams_sent: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    #: The longest a probe timeout waited, from when it was armed to firing,
    #: and the waits of all of them summed: how long the sender sat waiting
    #: for timers rather than acks.
    longest_timeout_wait: float = 0.0
    timeout_wait_total: float = 0.0
    #: Passes resending everything outstanding after a hole.
    go_back_passes: int = 0
    #: Bounded resends of the few segments behind a repair (burst losses).
    burst_resends: int = 0
    spurious_undos: int = 0
    #: Probe timeouts that sent nothing: the peer had answered nothing sent
    #: since our oldest segment, and another session's copy was out to it.
    deferred_timeouts: int = 0
    congestion_events: int = 0
    congestion_reductions: int = 0
    lost_repairs: int = 0
    #: Repairs of the first hole whose ack came, and the seconds from each
    #: repair's sending to that ack, summed: without SACK one hole is
    #: repaired per such wait, so it bounds goodput under random loss.
    repairs_answered: int = 0
    repair_wait_total: float = 0.0
    #: Seconds new data waited with room in the window but with
    #: ``max_congestion_window`` bytes already outstanding: behind a hole,
    #: the data the peer holds past it counts until the hole is repaired,
    #: so while repairs lag the stream stops there.
    outstanding_bound_wait: float = 0.0


@dataclass(slots=True)
class _Repair:
    """The outstanding retransmission of the segment at the first hole."""

    end: int
    sent_at: float
    #: Duplicate acks the segments sent before the repair may still produce.
    allowance: int
    duplicates: int = 0
    #: Duplicates beyond the allowance that came when the repair's own ack
    #: was already due.  (The allowance's own may come any time later: on a
    #: busy host the old flight waits in the receiver's queue.)
    late_duplicates: int = 0
    #: Whether it was sent as part of a go-back pass rather than on its own.
    in_pass: bool = False
    #: Whether the same segment had been repaired before (so an ack of it
    #: may answer the earlier copy and tells nothing of the round trip).
    resent: bool = False
    #: Whether a probe timeout sent it: the original may only be late, so
    #: its ack may come sooner than a round trip and is no sample of one.
    probe: bool = False


class StreamSender:
    """Invariant: ``acked <= snd_nxt <= snd_max <= written``."""

    __slots__ = (
        "_bound_since",
        "_buffer",
        "_delivered_beyond",
        "_echoes_due",
        "_echoes_until",
        "_episode_duplicates",
        "_episode_reduced",
        "_episode_resends",
        "_episode_started_at",
        "_episode_went_back",
        "_first_sent",
        "_go_back_until",
        "_habits",
        "_last_loss_event",
        "_max_outstanding",
        "_mss",
        "_pass_from",
        "_pass_trusted_until",
        "_probes",
        "_pto_armed_at",
        "_recover",
        "_reorder_steps",
        "_repair",
        "_retransmitted_until",
        "_round_end",
        "_second_ack_due",
        "_timeouts_in_a_row",
        "congestion",
        "in_recovery",
        "loss_deadline",
        "pacer",
        "pacing_deadline",
        "path_size",
        "peer",
        "pto_deadline",
        "rtt",
        "snd_max",
        "snd_nxt",
        "stats",
        "wire_acked",
    )

    def __init__(self, config: SessionConfig, peer: PeerProgress | None = None) -> None:
        #: Shared with the other sessions to the same peer address, if any.
        self.peer = peer if peer is not None else PeerProgress()
        self._mss = config.max_segment_size
        self._max_outstanding = max(config.max_congestion_window, self._mss)
        self._buffer = SendBuffer(config.stream_origin)
        self.snd_nxt = config.stream_origin
        #: Highest offset ever sent: the "total bytes sent" of the wire.
        self.snd_max = config.stream_origin
        #: ``acked`` as the wire carries it: a packet acknowledging exactly
        #: this, with data, asks nothing of the sender (only a pure ack can
        #: be a duplicate).
        self.wire_acked = wrap(config.stream_origin)
        self.rtt = RttEstimator(
            config.initial_rto, config.min_rto, config.max_rto, config.peer_ack_delay
        )
        self.congestion = make_controller(
            config.congestion_control,
            self._mss,
            config.initial_window_segments,
            config.max_congestion_window,
        )
        self.stats = RecoveryStats()
        self.pacer = Pacer(self._mss) if config.pacing else None
        self._probes = SizeProbes(
            config.max_datagram_size,
            config.max_probe_datagram_size,
            config.path_mtu_discovery,
            DATA_HEADER_SIZE,
        )
        self.path_size = self._probes.search
        #: When the pacer lets the next segment out (None: not held by it).
        self.pacing_deadline: float | None = None
        #: (end offset, time) of each first transmission still unacknowledged
        #: (a list: emptied, it costs an idle session 56 bytes, a deque 760).
        self._first_sent: list[tuple[int, float]] = []
        #: Retransmitted bytes end here at most: acks below it give no RTT sample.
        self._retransmitted_until = config.stream_origin
        #: Bytes estimated to have reached the peer beyond the first hole.
        self._delivered_beyond = 0
        self.in_recovery = False
        self._recover = config.stream_origin
        self._repair: _Repair | None = None
        #: When this recovery episode began with its first repair (for undo).
        self._episode_started_at: float | None = None
        self._episode_reduced = False
        self._last_loss_event: float | None = None
        self._round_end = config.stream_origin
        self._reorder_steps = 0
        self._pto_armed_at = 0.0
        #: Since when new data has waited on ``_max_outstanding`` alone.
        self._bound_since: float | None = None
        self._timeouts_in_a_row = 0
        self.pto_deadline: float | None = None
        #: When to look again at a hole that reordering may still fill.
        self.loss_deadline: float | None = None
        self._habits = ReceiverHabits()
        #: A go-back pass resends [from, until), then new data follows; its
        #: copies stand in for repairs up to ``trusted_until``.
        self._pass_from = config.stream_origin
        self._go_back_until = self._pass_trusted_until = config.stream_origin
        self._episode_duplicates = 0
        self._episode_went_back = False
        #: Retransmissions counted when the episode began.
        self._episode_resends = 0
        #: Duplicate acks that copies resent in the last episode may still
        #: draw from the peer (until ``_echoes_until``): no news of a loss.
        self._echoes_due = 0
        self._echoes_until = 0.0
        #: After a timeout, the first ack ended at the resent segment: the
        #: next one tells a late flight from a lost one (F-RTO).
        self._second_ack_due = False

    # ------------------------------------------------------------------
    # Queries

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

    @property
    def has_unsent(self) -> bool:
        """Written bytes that have never been sent."""
        return self.snd_max < self._buffer.end

    @property
    def retransmissions(self) -> int:
        return self.stats.retransmissions

    @property
    def deadline(self) -> float | None:
        earliest = self.loss_deadline
        pto, pacing = self.pto_deadline, self.pacing_deadline
        if pto is not None and (earliest is None or pto < earliest):
            earliest = pto
        if pacing is not None and (earliest is None or pacing < earliest):
            earliest = pacing
        return earliest

    @property
    def peer_discards_out_of_order(self) -> bool:
        """Whether the peer behaves like the reference receivers."""
        return self._habits.discards_out_of_order

    @property
    def peer_keeps_out_of_order(self) -> bool:
        """Whether the peer proved that it keeps out-of-order segments."""
        return self._habits.keeps_out_of_order

    @property
    def reorder_window(self) -> float:
        """How long a hole may wait for a late segment before it counts as lost."""
        if not self._reorder_steps or self.rtt.minimum is None:
            return 0.0
        window = self.rtt.minimum / 4 * self._reorder_steps
        return min(window, self.rtt.smoothed or window)

    # ------------------------------------------------------------------
    # Application side

    def keepalive_probe(self) -> Segment:
        """A one-byte segment the peer already has, to make it answer."""
        return self.snd_max, self._buffer.last_byte

    def write(self, data: bytes) -> None:
        self._buffer.append(data, self.snd_max)

    def resend_unheard(self) -> None:
        """Send everything unacknowledged again, without a congestion signal.

        For early data that reached a listener before the session it belongs
        to (it answered ABORT): nothing of it was kept, so waiting for a probe
        timeout to learn so one segment at a time would only cost time.  A
        go-back pass over all of it; copies of what the peer did keep are
        duplicates it acknowledges, and none of it gives an RTT sample.
        """
        start = self._buffer.start
        if self.snd_max <= start:
            return
        self._begin_pass(start, self.snd_max)
        self._delivered_beyond = 0
        self.pto_deadline = None  # armed again as the pass goes out

    def _begin_pass(self, start: int, until: int) -> None:
        """Send [start, until) again before new data; its copies are trusted."""
        self.snd_nxt = self._pass_from = start
        self._go_back_until = self._pass_trusted_until = until

    def discard(self) -> None:
        """Drop everything: the session is over."""
        self._buffer.release_until(self._buffer.end)
        self.wire_acked = wrap(self._buffer.end)
        self.pto_deadline = self.loss_deadline = self.pacing_deadline = None

    # ------------------------------------------------------------------
    # Sending

    def transmit(self, now: float) -> list[Segment]:
        """Segments the window lets us send now: new ones, or a go-back pass."""
        out: list[Segment] = []
        if self._bound_since is not None:
            self.stats.outstanding_bound_wait += now - self._bound_since
            self._bound_since = None
        buffer = self._buffer
        written = buffer.end
        self.pacing_deadline = None
        if self.snd_nxt >= written:
            return out  # nothing to send: most calls, on an interactive session
        cwnd = self.congestion.cwnd
        pacer = self.pacer
        if pacer is not None and pacer.tokens < written - self.snd_nxt:
            pacer.refill(now, cwnd, self.rtt.smoothed, self.congestion.ssthresh > cwnd)
        mss, limit = self._mss, self._max_outstanding
        # At most one size probe per call: it ends the batch.  A probe is
        # larger than a full segment, so a small write never makes one.
        probe_wanted = self._probes.payload_wanted() if written - self.snd_nxt > mss else 0
        # Bytes in the network: new data adds its size as it goes; only
        # within or right after a go-back pass is it worked out again.
        pipe, recompute = 0, True
        while (start := self.snd_nxt) < written:
            if self._go_back_until <= start < self.snd_max:
                self.snd_nxt = self.snd_max  # the pass is over: on with new data
                recompute = True
                continue
            size = mss if written - start > mss else written - start
            outstanding = start - buffer.start
            probe = False
            if probe_wanted and self._size_probe_may_go(probe_wanted, written, outstanding):
                # A probe waits until the window has room for it: on a path
                # too slow to open the window that far, larger datagrams
                # would gain little.  Once the window could hold it, new
                # segments wait for the acks to make that room, which a
                # flow that keeps its pipe full would never leave.
                if self._pipe() + probe_wanted <= cwnd:
                    probe = True
                elif probe_wanted + mss <= cwnd:
                    break
            if probe:
                size = probe_wanted
            elif outstanding:
                if recompute or start < self.snd_max:
                    pipe = self._pipe()
                if pipe + size > cwnd:
                    break  # the window is full
                if outstanding + size > limit:
                    self._bound_since = now
                    break
            if pacer is not None:
                if probe:
                    pacer.spend(size)
                elif not pacer.take(size):
                    self.pacing_deadline = pacer.ready_at(now, size)
                    break
            end = start + size
            pipe += size
            recompute = start < self.snd_max  # a resent segment: the pass's rest changed
            out.append((end, buffer.get(start, size)))
            if start >= self.snd_max:
                self._first_sent.append((end, now))
                self.snd_max = end
            else:
                self.stats.retransmissions += 1
                if end > self._retransmitted_until:
                    self._retransmitted_until = end
            self.snd_nxt = end
            if probe:
                # Last of this batch, so that a local refusal can take it back.
                self._probes.sent(start, end)
                break
        if out:
            self.stats.data_datagrams_sent += len(out)
            if self.pto_deadline is None:
                self._arm_pto(now)
        return out

    def _pipe(self) -> int:
        """Bytes believed in the network (RFC 6675's pipe, from duplicate acks).

        What was sent up to ``snd_nxt``, plus the originals beyond a go-back
        pass that are still out there, less what was reported arrived.
        """
        beyond_pass = max(0, self.snd_max - max(self.snd_nxt, self._go_back_until))
        return max(0, self.snd_nxt - self._buffer.start + beyond_pass - self._delivered_beyond)

    # ------------------------------------------------------------------
    # Datagram size search

    @property
    def size_probe_end(self) -> int | None:
        """End offset of the size probe in flight (its datagram must not fragment)."""
        probe = self._probes.in_flight
        return probe[1] if probe is not None else None

    @property
    def segment_size(self) -> int:
        """Payload bytes of a full segment at the datagram size proven so far."""
        return self._mss

    def _size_probe_may_go(self, payload: int, written: int, outstanding: int) -> bool:
        """Whether a size probe of ``payload`` bytes may be the next segment, the window aside."""
        return (
            not self.in_recovery
            and self.snd_nxt == self.snd_max
            and written - self.snd_nxt >= payload
            and outstanding + payload <= self._max_outstanding
        )

    def size_probe_refused(self) -> bool:
        """The local stack would not send the size probe (too big): take it back.

        It was the last segment sent, and nothing else went since, so the
        stream simply resumes from its start at the proven size.
        """
        probe = self._probes.refused(self.snd_max)
        if probe is None:
            return False
        start, end, _ = probe
        if self._first_sent and self._first_sent[-1][0] == end:
            self._first_sent.pop()
        if self.pacer is not None:
            # Each refusal is followed by a smaller probe at once: the pacing
            # of a whole search's refused probes, charged, held the stream
            # back for milliseconds and tripped the probe timeout.
            self.pacer.refund(end - start)
        self.snd_nxt = self.snd_max = start
        self.stats.data_datagrams_sent -= 1
        if self.snd_max <= self._buffer.start:
            self.pto_deadline = None
        return True

    def _size_probe_lost_at_hole(self) -> tuple[int, int] | None:
        """If the first hole is the size probe: count it lost; its range, to resend."""
        probe = self._probes.lost_at(self._buffer.start)
        return None if probe is None else (probe[0], probe[1])

    def _grow_segments(self) -> None:
        mss = self.path_size.proven - DATA_HEADER_SIZE
        if mss > self._mss:
            self._mss = mss
            self.congestion.set_segment_size(mss)
            if self.pacer is not None:
                self.pacer.set_segment_size(mss)

    # ------------------------------------------------------------------
    # Acknowledgements

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
            if pure and self.snd_max > acked:
                return 0, self._on_duplicate_ack(now)
            return 0, []
        return ack - acked, self._on_new_ack(acked, ack, now)

    def on_repeated_acks(self, wire_ack: int, copies: int, now: float) -> list[Segment]:
        """``copies`` more of the pure ack ``on_ack`` just took; returns what to resend.

        Each is a duplicate if that one acknowledged everything before the
        hole (or was one itself): the same as ``copies`` calls of ``on_ack``,
        with the checks made once.
        """
        acked = self._buffer.start
        if unwrap(wire_ack, acked) != acked or self.snd_max <= acked:
            return []
        out: list[Segment] = []
        for _ in range(copies):
            resend = self._on_duplicate_ack(now)
            if resend:
                out += resend
        return out

    def ack_may_wait(self) -> bool:
        """Whether an ack of new data may wait until the answer just received is sent.

        True while no loss is suspected or being repaired: then such an ack
        only releases data and grows the window, which can only let more go
        later, and a transmit before it resends nothing.
        """
        return not (
            self.in_recovery
            or self._repair is not None
            or self._second_ack_due
            or self._delivered_beyond
            or self.snd_nxt != self.snd_max
        )

    def _on_duplicate_ack(self, now: float) -> list[Segment]:
        repair = self._repair
        if repair is None and self._echoes_due and now < self._echoes_until:
            # A copy of what the peer already had: it answers with the ack
            # it has, which looks like a report of a later segment.
            self._echoes_due -= 1
            return []
        self._episode_duplicates += 1
        outstanding = self.snd_max - self._buffer.start
        self._delivered_beyond = min(self._delivered_beyond + self._mss, outstanding)
        if repair is None:
            if self._second_ack_due:
                # A segment beyond the hole arrived and the hole did not:
                # after all, the flight was lost, not late.
                self._second_ack_due = False
                return self._retransmit_first(now)
            return self._detect_loss(now)
        repair.duplicates += 1
        if (
            repair.duplicates > repair.allowance
            and now >= repair.sent_at + self._repair_answer_time()
        ):
            # The repair would have moved this ack by now (acks are cumulative,
            # so even a lost ack of it would show here).
            repair.late_duplicates += 1
        if (
            repair.duplicates > repair.allowance + DUPLICATE_ACK_THRESHOLD
            or repair.late_duplicates >= LATE_DUPLICATES_FOR_LOST_REPAIR
        ):
            # Segments sent after the repair arrived, the repair did not.
            self.stats.lost_repairs += 1
            self._loss_event(now)
            return self._retransmit_first(now)
        return []

    def _repair_answer_time(self) -> float:
        """How long after a repair its ack is due, reordering allowed for."""
        if self.rtt.latest is None or self.rtt.smoothed is None:
            return float("inf")
        return max(self.rtt.latest, self.rtt.smoothed) * 5 / 4 + self.reorder_window

    def _on_new_ack(self, old: int, ack: int, now: float) -> list[Segment]:
        newly = ack - old
        if self._second_ack_due:
            # (Set only within an episode; its end clears it.)
            self._second_ack_due = False
            if ack > self._retransmitted_until:
                # F-RTO's second ack covers segments sent only once: the
                # flight the timeout gave up on was only late.
                self._undo_episode(ack, now, reordering=False)
        repair = self._repair
        if repair is not None and ack >= repair.end:
            self._repair = None
            waited = now - repair.sent_at
            self.stats.repairs_answered += 1
            self.stats.repair_wait_total += waited
            self.rtt.add_lower_bound(waited)
            if self._answers_original(now):
                self._undo_episode(ack, now)
                repair = None
            elif ack > self._retransmitted_until and self._after_timeout_in_silence(repair):
                # The ack covers segments sent once: the flight was late (even
                # if a pass after a second timeout resent part of it).
                self._undo_episode(ack, now, reordering=False)
                repair = None
            elif not (repair.in_pass or repair.resent or repair.probe):
                # Too ambiguous for the timeout (Karn), but the round trip of
                # a repair is the controller's only fresh view of the queue
                # during a long recovery, when no other ack gives a sample.
                self.congestion.on_ack(0, now - repair.sent_at, self.rtt.minimum, False)
        sample = self._release(ack, now)
        if self._probes.in_flight is not None and self._probes.acknowledged(
            ack, self._retransmitted_until
        ):
            self._grow_segments()
        if self._delivered_beyond:
            # The segment that filled the hole sent no duplicate ack; the rest did.
            credited = newly - min(newly, self._mss)
            self._delivered_beyond = max(
                0, min(self._delivered_beyond - credited, self.snd_max - ack)
            )
        # The timeout stays backed off (Karn) until an ack covers data that
        # was never retransmitted: one that only covers retransmissions says
        # nothing of how long the path takes now, and resetting on it keeps
        # a stale, short timeout firing again and again once another flow
        # fills the queue.
        if sample is None and ack > self._retransmitted_until:  # (a sample did it already)
            self.rtt.reset_backoff()
        self._timeouts_in_a_row = 0
        self.loss_deadline = None
        self.pto_deadline = None
        if self.snd_max > ack:
            self._arm_pto(now)
        if repair is not None and ack >= repair.end and not repair.in_pass:
            self._habits.repair_answered(ack, repair.end, bool(self._delivered_beyond), self._mss)
        if not self.in_recovery:
            round_start = ack >= self._round_end
            if round_start:
                self._round_end = self.snd_max
            if self._buffer.end > self.snd_max or 2 * (self.snd_max - old) >= self.congestion.cwnd:
                self.congestion.on_ack(newly, sample, self.rtt.minimum, round_start)
            elif sample is not None:
                # Less than half the window was out and nothing waits: the
                # application, not the window, set the pace, so the window
                # has proven nothing and must not grow (RFC 9002, 7.8).  An
                # echo session would otherwise reach the largest window one
                # small message at a time, and then burst it all at once.
                self.congestion.on_app_limited_sample(sample)
            self._habits.in_order_ack(newly, self._mss)
            return self._detect_loss(now)
        if ack >= self._recover:
            self._end_episode(now)
            if (
                repair is not None
                and self._hole_sent_before(repair, ack)
                and self._nothing_new_can_go()
            ):
                resend = self._enter_recovery(now)
                if self._repair is not None:
                    # The episode just ended, so all its copies of segments
                    # the peer had are still to draw their duplicates, sent
                    # before this repair as they were.  (Only here: an
                    # episode found by duplicate acks starts once they used
                    # the echoes up; folding them into every new episode,
                    # timeouts' too, moved the simulated shallow-bottleneck
                    # shares from 53/46 % to 62/36 %.)
                    self._repair.allowance += self._echoes_due
                    self._echoes_due = 0
                return resend
            return self._detect_loss(now)
        if not self._episode_reduced:
            # The loss was not taken for congestion: keep probing for room.
            self.congestion.on_ack(newly, None, self.rtt.minimum, False)
        # A partial ack: it ends at the next hole.
        if self._pass_from <= ack < min(self.snd_nxt, self._pass_trusted_until):
            # A go-back pass already resent the segment there: that copy is
            # the repair, and acks walking through the pass are no stops.
            end = min(ack + self._mss, self.snd_max)
            self._repair = _Repair(end, now, self._unreported_beyond(end), in_pass=True)
            return []
        if (
            repair is not None
            and ack == repair.end
            and not self._episode_went_back
            and self._after_timeout_in_silence(repair)
        ):
            # The ack may answer the resent segment alone, the flight beyond
            # it lost, or be the first of that flight, only late: the next
            # ack (or duplicate, or timeout) tells which.
            self._second_ack_due = True
            return []
        lost_probe = self._size_probe_lost_at_hole()
        if lost_probe is not None:
            return self._retransmit_first(now, pass_end=lost_probe[1], size_probe=True)
        return self._retransmit_first(now, pass_end=self._pass_end(ack, repair, now))

    def _release(self, ack: int, now: float) -> float | None:
        """Forget acknowledged bytes; returns an RTT sample if the ack gives one."""
        sent_at = None
        first_sent = self._first_sent
        count, acked = len(first_sent), 0
        while acked < count and first_sent[acked][0] <= ack:
            acked += 1
        if acked:
            sent_at = first_sent[acked - 1][1]
            del first_sent[:acked]
            self.peer.answered(sent_at)
        # Karn: nothing retransmitted may be covered, and an ack held back by
        # a hole measures the repair, not the path.
        clean = self._buffer.start >= self._retransmitted_until and not self.in_recovery
        self._buffer.release_until(ack)
        self.wire_acked = ack & WIRE_MASK  # wrap(), on the hot path
        if ack > self.snd_nxt:
            self.snd_nxt = ack
        if sent_at is None or not clean:
            return None
        sample = now - sent_at
        self.rtt.add_sample(sample)
        return sample

    # ------------------------------------------------------------------
    # Loss detection and recovery

    def _detect_loss(self, now: float) -> list[Segment]:
        """Whether the segment at the first hole is lost by the duplicate acks seen."""
        reported = self._delivered_beyond // self._mss  # duplicates beyond this hole
        if not reported:
            return []  # the usual case: no duplicate ack since the last advance
        outstanding = self.snd_max - self._buffer.start
        if not outstanding or reported < self._duplicate_threshold(outstanding):
            return []
        window = self.reorder_window
        if window:
            lost_at = self._hole_sent_at(now) + (self.rtt.latest or 0.0) + window
            if now < lost_at:
                self.loss_deadline = lost_at
                return []
        return self._enter_recovery(now)

    def _duplicate_threshold(self, outstanding: int) -> int:
        segments = -(-outstanding // self._mss)
        if 2 <= segments <= DUPLICATE_ACK_THRESHOLD and self._buffer.end == self.snd_max:
            # Early retransmit: too little in flight for three duplicates.
            return segments - 1
        return DUPLICATE_ACK_THRESHOLD

    def _hole_sent_before(self, repair: _Repair, ack: int) -> bool:
        """Whether the segment at the hole ``ack`` stops at went out well before ``repair``.

        The repair's ack shows the repair arrived; a segment sent earlier,
        and only once, that did not has been lost, reordering allowed for
        (RACK's rule, RFC 8985).
        """
        return (
            repair.end <= ack < self.snd_max
            and ack >= self._retransmitted_until
            and bool(self._first_sent)
            and self._first_sent[0][1] < repair.sent_at - self.reorder_window
        )

    def _nothing_new_can_go(self) -> bool:
        """Whether no new segment can be sent now: all written sent, or the window or cap full.

        Past an episode's recovery point no partial ack repairs a hole, and
        then no new segment draws the duplicates that would: the hole would
        wait for the timeout.  Where new segments can go, their duplicates
        decide, as for any hole: starting the next episode at once would
        leave the window fewer acks to grow on.
        """
        mss = self._mss
        return (
            self._buffer.end <= self.snd_max
            or self._pipe() + mss > self.congestion.cwnd
            or self.snd_max + mss - self._buffer.start > self._max_outstanding
        )

    def _hole_sent_at(self, now: float) -> float:
        # Acknowledged entries are dropped, so the oldest left is the hole's.
        return self._first_sent[0][1] if self._first_sent else now

    def _enter_recovery(self, now: float, *, probe: bool = False) -> list[Segment]:
        self.in_recovery = True
        self._recover = self.snd_max
        self._episode_started_at = now
        self._episode_duplicates = self._delivered_beyond // self._mss
        self._episode_went_back = False
        self._episode_reduced = False
        self._episode_resends = self.stats.retransmissions
        last = self._last_loss_event
        if last is not None and self._hole_sent_at(now) > last:
            # Only a hole in data sent after the last loss event is news: one
            # in the flight before it is part of the loss that event answered
            # (RFC 9002's recovery period), however the episodes split it.
            self._last_loss_event = None
        return self._repair_lost_hole(now, probe=probe)

    def _repair_lost_hole(self, now: float, *, probe: bool) -> list[Segment]:
        """The first hole is lost: tell the controller once per RTT, and repair it."""
        lost_probe = self._size_probe_lost_at_hole()
        if lost_probe is None:
            self._loss_event(now)
            return self._retransmit_first(now, probe=probe)
        # A lost size probe says the datagram was too big, not that the path
        # is congested: no reduction, and its range goes again at once in
        # segments of the proven size.
        return self._retransmit_first(now, probe=probe, pass_end=lost_probe[1], size_probe=True)

    def _loss_event(self, now: float) -> None:
        """Ask the controller to answer a loss: once per episode, and once per RTT after.

        NewReno's one reduction per episode assumes an episode lasts about a
        round trip; without SACK one can last many, and a repair lost in it
        or a timeout during it is new news about the queue.
        """
        last = self._last_loss_event
        if last is not None and now - last < (self.rtt.smoothed or 0.0):
            return
        self._last_loss_event = now
        self.stats.congestion_events += 1
        if self.congestion.on_congestion_event(self.rtt.minimum):
            self._episode_reduced = True
            self.stats.congestion_reductions += 1

    def _end_episode(self, now: float) -> None:
        self._second_ack_due = False
        # Copies of segments whose originals had arrived are still on their
        # way; each will draw a duplicate ack within a round trip.  (Not for
        # a peer that discards out-of-order data: it had thrown the
        # originals away and needed every copy.)
        self._echoes_due = (
            0
            if self.peer_discards_out_of_order
            else self.stats.retransmissions - self._episode_resends
        )
        self._echoes_until = now + self._repair_answer_time()
        self._probes.lost = None
        self.in_recovery = False
        self._repair = None
        self._episode_started_at = None
        self._round_end = self.snd_max

    def _answers_original(self, now: float) -> bool:
        repaired_at, minimum = self._episode_started_at, self.rtt.minimum
        return (
            repaired_at is not None
            and minimum is not None
            and now - repaired_at < _SPURIOUS_SHARE * minimum
        )

    def _after_timeout_in_silence(self, repair: _Repair) -> bool:
        """Whether a timeout sent ``repair`` and nothing was heard of the flight beyond.

        Then an ack past the repair tells a late flight from a lost one
        (F-RTO's test): had the segment at the hole been lost, the ones
        after it would have drawn duplicate acks, which every MNET receiver
        sends at once; an ack that covers segments sent only once, with no
        duplicate before it, answers the originals.  The path, or a peer's
        process, stalled for longer than the timeout, and nothing was lost.
        """
        return repair.probe and not repair.in_pass and not self._episode_duplicates

    def _undo_episode(self, ack: int, now: float, *, reordering: bool = True) -> None:
        """The episode's first repair was needless: the path reordered or stalled."""
        self.stats.spurious_undos += 1
        if reordering:
            self._reorder_steps += 1
        if self._episode_reduced:
            self.congestion.undo()
        # What a go-back pass has not resent yet arrived the first time.
        self._go_back_until = min(self._go_back_until, self.snd_nxt)
        if self._probes.arrived_late(ack, self._retransmitted_until):
            # The probe itself arrived, only late: its size is proven after all.
            self._grow_segments()
        self._end_episode(now)

    def _pass_end(self, ack: int, repair: _Repair | None, now: float) -> int | None:
        """Where a go-back pass after this partial ack should stop, if one is due."""
        if self.snd_nxt < self.snd_max or repair is None or ack != repair.end:
            return None  # a pass is under way, or the repair released more
        if self.peer_discards_out_of_order:
            return self.snd_max
        if not self._episode_duplicates and not self._episode_went_back:
            # Nothing at all was heard of the flight beyond: resend what of it
            # is old enough to have been heard of (a timeout may only mean
            # the flight sits in a queue that grew, and then it is on its way).
            return self._sent_before(now - self._repair_answer_time())
        burst = self._habits.burst_after_stop()
        if burst:
            # A burst of losses: resend the segments right behind the repair,
            # never more than are unreported and old enough to have been
            # reported by now (behind a deep queue most unreported segments
            # are simply still on their way).
            missing = self._unreported_beyond(ack) - self._sent_within(
                self._repair_answer_time(), now
            )
            burst = min(missing, burst)
            if burst:
                return min(self.snd_max, ack + self._mss * (burst + 1))
        return None

    def _retransmit_first(
        self,
        now: float,
        *,
        pass_end: int | None = None,
        probe: bool = False,
        size_probe: bool = False,
    ) -> list[Segment]:
        start = self._buffer.start
        end = min(start + self._mss, self.snd_max)
        if end <= start:
            return []
        self.stats.retransmissions += 1
        self.stats.data_datagrams_sent += 1
        self._retransmitted_until = max(self._retransmitted_until, end)
        # A segment resent on its own means the pass's copies cannot all be
        # relied on (a discarding peer threw away what followed the lost one).
        self._pass_trusted_until = self._pass_from
        if pass_end is not None and pass_end > end:
            # Resend what follows the hole, as the window allows, from right
            # after this segment; a whole pass means the reports of
            # segments beyond were of data the peer did not keep.
            whole = pass_end == self.snd_max
            if whole:
                self._delivered_beyond = 0
            # A lost size probe's own range is neither a pass nor a burst.
            if not size_probe:
                if whole:
                    self.stats.go_back_passes += 1
                else:
                    self.stats.burst_resends += 1
            self._episode_went_back = True
            self._begin_pass(end, pass_end)
        resent = self._repair is not None and self._repair.end == end
        self._repair = _Repair(end, now, self._unreported_beyond(end), resent=resent, probe=probe)
        self._arm_pto(now)
        # A repair leaves at once, but it uses up the pacer's room.
        if self.pacer is not None:
            self.pacer.spend(end - start)
        return [(end, self._buffer.get(start, end - start))]

    def _sent_before(self, moment: float) -> int:
        """The end of the last segment first sent before ``moment``."""
        end = self._buffer.start
        for segment_end, sent_at in self._first_sent:
            if sent_at > moment:
                break
            end = segment_end
        return end

    def _sent_within(self, age: float, now: float) -> int:
        """How many segments went out for the first time in the last ``age`` seconds."""
        count = 0
        for _end, sent_at in reversed(self._first_sent):
            if now - sent_at > age:
                break
            count += 1
        return count

    def _unreported_beyond(self, end: int) -> int:
        """Segments sent beyond ``end`` whose duplicate acks have not come yet."""
        beyond = -(-max(0, self.snd_nxt - end) // self._mss)
        return max(0, beyond - self._delivered_beyond // self._mss)

    # ------------------------------------------------------------------
    # Timers

    def _arm_pto(self, now: float) -> None:
        self._pto_armed_at = now
        self.pto_deadline = now + self.rtt.rto

    def on_timer(self, now: float) -> tuple[list[Segment], bool]:
        """Act on a passed deadline; returns segments to send and whether a probe timed out."""
        if self.loss_deadline is not None and now >= self.loss_deadline:
            self.loss_deadline = None
            if self._repair is None:
                return self._detect_loss(now), False
        if self.pto_deadline is None or now < self.pto_deadline:
            return [], False
        self._disarm_pto()
        if self.snd_max <= self._buffer.start:
            return [], False
        peer, oldest = self.peer, self._hole_sent_at(now)
        # Duplicate acks show the peer reading on past our hole: never wait then.
        if not self._delivered_beyond and peer.someone_else_probes(id(self), oldest, now):
            self.stats.deferred_timeouts += 1
            self.pto_deadline = peer.probing_until
            return [], True
        resent = self._on_probe_timeout(now)
        if peer.silent_since(oldest):
            peer.probing(id(self), self.pto_deadline or now)
        return resent, True

    def _disarm_pto(self) -> None:
        # A call rather than an assignment in on_timer: after one, mypy takes
        # pto_deadline for None even once _on_probe_timeout re-armed it, and
        # the compiled build (setup.py) would act on that belief.
        self.pto_deadline = None

    def _on_probe_timeout(self, now: float) -> list[Segment]:
        """The probe timeout expired with data outstanding: resend, and back off."""
        stats = self.stats
        stats.timeouts += 1
        waited = now - self._pto_armed_at
        stats.timeout_wait_total += waited
        if waited > stats.longest_timeout_wait:
            stats.longest_timeout_wait = waited
        self.rtt.back_off()
        self._timeouts_in_a_row += 1
        if self._timeouts_in_a_row >= PERSISTENT_CONGESTION_TIMEOUTS:
            self.congestion.on_persistent_congestion()
        if not self.in_recovery:
            return self._enter_recovery(now, probe=True)
        if self._second_ack_due:
            # Silence after the first ack: the flight beyond the resent
            # segment was lost, or the peer stalled again.  Resend what of
            # it is old enough, from a window of two segments as TCP does
            # after its timeout: if the flight was only late, its acks cut
            # the pass short before much of it went.
            self._second_ack_due = False
            self._loss_event(now)
            self.congestion.on_persistent_congestion()
            old_enough = self._sent_before(now - self._repair_answer_time())
            return self._retransmit_first(now, probe=True, pass_end=old_enough)
        return self._repair_lost_hole(now, probe=True)
