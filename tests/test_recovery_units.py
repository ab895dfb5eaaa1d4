"""Unit tests of loss recovery: the RTT estimator, the controllers, the sender, the ack policy.

Each test drives one part by hand with made-up acknowledgements, so a rule
of the recovery engine is checked on its own; the simulated network
(``test_sim_loss_recovery.py``) checks how the rules add up.
"""

from __future__ import annotations

import itertools
import random

import pytest
from simnet import connected_pair, payload
from test_interop_reference import THEIRS, Harness

from mnet_twisted.config import SessionConfig
from mnet_twisted.congestion import Adaptive, NewReno, make_controller
from mnet_twisted.habits import STOPS_BEFORE_GOING_BACK
from mnet_twisted.receiver import Ack, StreamReceiver
from mnet_twisted.rtt import GRANULARITY, RttEstimator
from mnet_twisted.sender import StreamSender
from mnet_twisted.seqnum import wrap

MSS = 1000


def _sender(window: int = 10, controller: str = "newreno", **options: object) -> StreamSender:
    """A sender without pacing or size probes unless asked: these tests are about recovery."""
    options.setdefault("pacing", False)
    options.setdefault("path_mtu_discovery", False)
    config = SessionConfig(
        max_datagram_size=14 + MSS,
        initial_window_segments=window,
        congestion_control=controller,
        **options,  # type: ignore[arg-type]
    )
    return StreamSender(config)


def _ends(segments: list[tuple[int, bytes]]) -> list[int]:
    return [end for end, _ in segments]


def _dup(sender: StreamSender, now: float, times: int = 1) -> list[int]:
    out: list[int] = []
    for _ in range(times):
        out += _ends(sender.on_ack(wrap(sender.acked), now, pure=True)[1])
    return out


def _sampled(sender: StreamSender, rtt: float) -> None:
    """Give the sender an RTT estimate, as the handshake does."""
    sender.rtt.add_sample(rtt)


def _first_flight(window: int, segments: int) -> StreamSender:
    """A sender with a 10 ms RTT estimate that sent its first window of ``segments`` at 0."""
    sender = _sender(window=window)
    _sampled(sender, 0.010)
    sender.write(bytes(segments * MSS))
    sender.transmit(now=0.0)
    return sender


# -- RTT and the probe timeout ---------------------------------------------------


def test_rtt_estimator_follows_rfc_6298_smoothing() -> None:
    """The first sample sets SRTT and RTTVAR = R/2; later ones smooth with 1/8 and 1/4."""
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.001, max_rto=60.0)
    assert rtt.rto == 1.0
    rtt.add_sample(0.1)
    assert (rtt.smoothed, rtt.variance) == (pytest.approx(0.1), pytest.approx(0.05))
    rtt.add_sample(0.2)
    assert rtt.variance == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    assert rtt.minimum == pytest.approx(0.1)


def test_probe_timeout_has_no_fixed_floor() -> None:
    """PTO = srtt + max(4 rttvar, 1 ms) + the peer's ack delay: about 1 ms on a 0.1 ms path."""
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.001, max_rto=2.0, peer_ack_delay=0.0005)
    for _ in range(50):
        rtt.add_sample(0.0001)
    assert rtt.rto == pytest.approx(0.0001 + GRANULARITY + 0.0005, rel=0.01)
    slow = RttEstimator(initial_rto=1.0, min_rto=0.001, max_rto=2.0)
    slow.add_sample(0.1)
    assert slow.rto == pytest.approx(0.1 + 4 * 0.05)


def test_probe_timeout_backs_off_and_is_clamped() -> None:
    """Each expiry doubles the timeout up to max_rto; a new sample clears the backoff."""
    rtt = RttEstimator(initial_rto=0.5, min_rto=0.2, max_rto=2.0)
    values = []
    for _ in range(4):
        rtt.back_off()
        values.append(rtt.rto)
    assert values == [1.0, 2.0, 2.0, 2.0]
    rtt.add_sample(0.01)
    assert rtt.rto == 0.2 and rtt.backoff_count == 0


def test_a_lower_bound_raises_a_stale_estimate_but_never_lowers_it() -> None:
    """An ack of data last sent R ago proves the round trip is at least R.

    It moves the estimate only upwards (a repair's ack during a long
    recovery, when no clean sample comes), and keeps the backoff.
    """
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.001, max_rto=60.0)
    rtt.add_lower_bound(0.5)
    assert rtt.smoothed is None  # nothing to correct yet: the first sample decides
    rtt.add_sample(0.001)
    before = (rtt.smoothed, rtt.variance, rtt.rto, rtt.latest)
    rtt.add_lower_bound(0.0005)
    assert (rtt.smoothed, rtt.variance, rtt.rto, rtt.latest) == before
    rtt.back_off()
    backed_off = rtt.rto
    for _ in range(30):
        rtt.add_lower_bound(0.020)
    assert rtt.smoothed == pytest.approx(0.020, rel=0.05)
    assert rtt.latest == 0.020 and rtt.minimum == 0.001
    assert rtt.backoff_count == 1 and rtt.rto > backed_off


# -- congestion controllers ---------------------------------------------------------


def test_newreno_slow_start_then_avoidance() -> None:
    """cwnd grows by the bytes acked below ssthresh and by about one MSS per window above."""
    cc = NewReno(MSS, initial_window_segments=2, max_window=10**9)
    cc.on_ack(MSS, None, None, round_start=False)
    assert cc.cwnd == 3 * MSS
    cc.ssthresh = cc.cwnd
    for _ in range(3):
        cc.on_ack(MSS, None, None, round_start=False)
    assert cc.cwnd == 4 * MSS


def test_newreno_halves_once_and_undo_restores() -> None:
    """A loss event halves cwnd (at least 2 MSS); undo takes it back; persistent loss: 2 MSS."""
    cc = NewReno(MSS, initial_window_segments=10, max_window=10**9)
    assert cc.on_congestion_event(min_rtt=0.01)
    assert (cc.cwnd, cc.ssthresh) == (5 * MSS, 5 * MSS)
    cc.undo()
    assert (cc.cwnd, cc.ssthresh) == (10 * MSS, 10**9)
    cc.on_congestion_event(min_rtt=None)
    cc.on_persistent_congestion()
    assert cc.cwnd == 2 * MSS


@pytest.mark.parametrize("controller", [NewReno, Adaptive])
def test_undo_takes_back_every_reduction_since_the_window_last_grew(
    controller: type[NewReno],
) -> None:
    """Timeouts through one long stall reduce again and again; one undo takes all back."""
    cc = controller(MSS, initial_window_segments=16, max_window=10**9)
    for _ in range(3):
        assert cc.on_congestion_event(min_rtt=None)  # no RTT known: always a reduction
    cc.on_persistent_congestion()
    cc.undo()
    assert (cc.cwnd, cc.ssthresh) == (16 * MSS, 10**9)
    # Once the window grew after a reduction, that one stands.
    cc.on_congestion_event(min_rtt=None)
    cc.on_ack(MSS, None, None, round_start=False)
    cc.on_congestion_event(min_rtt=None)
    cc.undo()
    assert (cc.cwnd, cc.ssthresh) == (8 * MSS, 8 * MSS)  # not (16, 10**9)


def _feed_round(cc: Adaptive, rtt: float, samples: int = 10) -> None:
    cc.on_ack(MSS, rtt, 0.010, round_start=True)
    for _ in range(samples - 1):
        cc.on_ack(MSS, rtt, 0.010, round_start=False)


def test_adaptive_keeps_the_window_for_a_loss_without_a_queue() -> None:
    """At the path's minimum RTT a loss is random: no cut; with a standing queue it halves."""
    cc = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    cc.ssthresh = cc.cwnd  # congestion avoidance
    _feed_round(cc, 0.0101)
    _feed_round(cc, 0.0102)
    before = cc.cwnd
    assert not cc.on_congestion_event(min_rtt=0.010)
    assert cc.cwnd == before
    _feed_round(cc, 0.030)
    _feed_round(cc, 0.031)
    before = cc.cwnd
    assert cc.on_congestion_event(min_rtt=0.010)
    assert cc.cwnd == max(before // 2, 2 * MSS)


def test_adaptive_judges_the_queue_by_whole_rounds() -> None:
    """Acks that wait for a busy process within a round are no standing queue.

    On a host whose processes read in batches, each round's first ack comes
    at the path's minimum and the rest of the burst's acks wait their turn;
    the queue drained in that round, so a loss with it is random.  Only a
    queue that stood all round long (and the round before) makes one
    congestion.
    """
    cc = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    cc.ssthresh = cc.cwnd
    for _ in range(2):
        cc.on_ack(MSS, 0.0101, 0.010, round_start=True)
        for _ in range(9):
            cc.on_ack(MSS, 0.020, 0.010, round_start=False)
    before = cc.cwnd
    assert not cc.on_congestion_event(min_rtt=0.010)
    assert cc.cwnd == before
    for _ in range(2):
        _feed_round(cc, 0.020)
    assert cc.on_congestion_event(min_rtt=0.010)
    assert cc.cwnd < before


def test_adaptive_reopens_slow_start_after_a_round_without_a_queue() -> None:
    """What ended slow start (a receiver's slow first reads, say) is gone: grow fast again.

    Without this, a flow whose first acks came late grew by one segment a
    round from ten for the rest of a transfer (a quarter second of the
    namespace bench's 1 %-loss runs).
    """
    cc = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    cc.ssthresh = cc.cwnd  # slow start ended early
    _feed_round(cc, 0.0101)
    assert cc.cwnd == 11 * MSS  # avoidance: a segment a round
    _feed_round(cc, 0.0101)  # this round starts after a whole round with no queue
    assert cc.in_slow_start and cc.cwnd == 21 * MSS  # a segment an acked segment

    queued = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    queued.ssthresh = queued.cwnd
    for _ in range(3):
        _feed_round(queued, 0.012)  # 2 ms of queue: more than a quarter of the allowance
    assert not queued.in_slow_start

    competing = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    _feed_round(competing, 0.030)
    _feed_round(competing, 0.030)
    assert competing.on_congestion_event(min_rtt=0.010)
    for _ in range(3):
        _feed_round(competing, 0.0101)
    assert competing.competing and not competing.in_slow_start


def test_adaptive_competes_for_a_queue_it_did_not_build() -> None:
    """A queue far past its own allowance, round after round while it holds: someone else's.

    Waiting for it to drain would hand the link to a loss-based flow that
    never lets it (one that drops none of our packets gives no loss to
    learn that from), so growth stops waiting.
    """
    cc = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    cc.ssthresh = cc.cwnd
    _feed_round(cc, 0.0101)
    _feed_round(cc, 0.030)  # growth stops once this round has shown its queue
    held = cc.cwnd
    for _ in range(6):
        _feed_round(cc, 0.030)
    assert not cc.competing and cc.cwnd == held
    for _ in range(2):
        _feed_round(cc, 0.030)
    assert cc.competing
    _feed_round(cc, 0.030)
    assert cc.cwnd > held


def test_adaptive_leaves_slow_start_when_the_rtt_rises() -> None:
    """HyStart++: a round whose least RTT exceeds the last round's by eta ends slow start."""
    cc = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    _feed_round(cc, 0.010)
    assert cc.in_slow_start
    _feed_round(cc, 0.0105)  # +0.5 ms < 4 ms: still slow start
    assert cc.in_slow_start
    _feed_round(cc, 0.020)
    assert not cc.in_slow_start


def test_adaptive_takes_an_application_limited_sample_as_evidence_of_no_queue() -> None:
    """Such a sample grows nothing, yet excuses a later loss at the path's minimum RTT."""
    cc = Adaptive(MSS, initial_window_segments=10, max_window=10**9)
    before = (cc.cwnd, cc.ssthresh)
    cc.on_app_limited_sample(0.010)
    assert (cc.cwnd, cc.ssthresh) == before
    assert not cc.on_congestion_event(min_rtt=0.010)
    # Without a fresh sample since, the next loss is taken for congestion.
    assert cc.on_congestion_event(min_rtt=0.010)


@pytest.mark.parametrize("controller", ["newreno", "adaptive"])
def test_a_sender_the_application_holds_back_does_not_grow_its_window(controller: str) -> None:
    """RFC 9002 7.8: an echo's small messages, acked one by one, prove no larger window.

    The same sender with data waiting grows as before.
    """
    sender = _sender(window=10, controller=controller)
    initial = sender.congestion.cwnd
    now = 0.0
    for _ in range(2000):
        sender.write(bytes(64))
        (end, _), *_ = sender.transmit(now)
        now += 0.001
        sender.on_ack(wrap(end), now, pure=False)
    assert sender.congestion.cwnd == initial
    sender.write(bytes(40 * MSS))
    for _ in range(3):
        ends = _ends(sender.transmit(now))
        now += 0.001
        sender.on_ack(wrap(ends[-1]), now, pure=True)
    assert sender.congestion.cwnd > initial


def test_controllers_are_chosen_by_name() -> None:
    assert isinstance(make_controller("newreno", MSS, 10, 10**6), NewReno)
    assert isinstance(make_controller("adaptive", MSS, 10, 10**6), Adaptive)
    with pytest.raises(ValueError):
        SessionConfig(congestion_control="cubic-ish")


# -- the sender -----------------------------------------------------------------------


def test_the_sender_keeps_what_it_had_acknowledged_as_the_wire_carries_it() -> None:
    """Across the 2**32 wrap too: the session skips data packets that ack exactly that."""
    origin = 2**32 - 500
    sender = _sender(window=10, stream_origin=origin)
    assert sender.wire_acked == wrap(origin)
    sender.write(bytes(3 * MSS))
    sender.transmit(now=0.0)
    newly, _ = sender.on_ack(wrap(origin + MSS), now=0.01, pure=False)
    assert newly == MSS and sender.wire_acked == wrap(origin + MSS) == MSS - 500
    before = (sender.acked, sender.snd_nxt, sender.congestion.cwnd, sender.deadline)
    assert sender.on_ack(sender.wire_acked, now=0.02, pure=False) == (0, [])
    assert (sender.acked, sender.snd_nxt, sender.congestion.cwnd, sender.deadline) == before


def test_probe_timeout_resends_only_the_first_segment_with_one_reduction() -> None:
    """No collapse to one segment and no go-back-N: one segment, cwnd halved (NewReno)."""
    sender = _sender(window=4)
    sender.write(bytes(10 * MSS))
    assert _ends(sender.transmit(now=0.0)) == [MSS, 2 * MSS, 3 * MSS, 4 * MSS]
    assert sender.transmit(now=0.0) == []  # window full
    assert sender.deadline == pytest.approx(sender.rtt.rto)
    resent, timed_out = sender.on_timer(now=1.0)
    assert timed_out and _ends(resent) == [MSS]
    assert sender.congestion.cwnd == 2 * MSS
    assert sender.snd_nxt == 4 * MSS  # the rest stays in flight
    newly, _ = sender.on_ack(wrap(MSS), now=1.1, pure=True)
    assert newly == MSS
    assert sender.rtt.smoothed is None  # Karn: no sample from a retransmitted segment


def test_probe_timeouts_add_up_their_waits() -> None:
    """``timeout_wait_total`` sums each timeout's wait from arming to firing; the longest stays."""
    sender = _sender(window=4)
    sender.write(bytes(10 * MSS))
    sender.transmit(now=0.0)
    first = sender.pto_deadline
    assert first is not None
    sender.on_timer(now=first)
    second = sender.pto_deadline
    assert second is not None and second - first > first  # backed off
    sender.on_timer(now=second)
    stats = sender.stats
    assert stats.timeouts == 2
    assert stats.timeout_wait_total == pytest.approx(second)
    assert stats.longest_timeout_wait == pytest.approx(second - first)


def _timed_out_sender() -> StreamSender:
    """Four segments in flight, then a probe timeout resent the first and halved the window."""
    sender = _sender(window=4)
    sender.write(bytes(10 * MSS))
    sender.transmit(now=0.0)
    resent, timed_out = sender.on_timer(now=1.0)
    assert timed_out and _ends(resent) == [MSS] and sender.congestion.cwnd == 2 * MSS
    return sender


def test_an_ack_of_segments_sent_once_after_a_timeout_undoes_it() -> None:
    """F-RTO's test: the originals beyond the resent segment arrived, so none was lost.

    Had the first segment been lost, the later ones would have drawn
    duplicate acks (every MNET receiver sends them at once); an ack past
    the resent segment with none before it means the flight was only late.
    """
    sender = _timed_out_sender()
    _, resent = sender.on_ack(wrap(3 * MSS), now=1.001, pure=True)
    assert resent == []
    assert sender.stats.spurious_undos == 1
    assert not sender.in_recovery
    assert sender.congestion.cwnd >= 4 * MSS  # the cut is taken back (and the ack grows it)
    assert sender.reorder_window == 0  # a stall is no reordering


def test_a_late_flight_whose_first_ack_ends_at_the_resent_segment_is_undone() -> None:
    """F-RTO's two acks: the first may answer the copy, the second covers originals only."""
    sender = _timed_out_sender()
    assert sender.on_ack(wrap(MSS), now=1.001, pure=True)[1] == []
    assert sender.stats.spurious_undos == 0
    assert sender.on_ack(wrap(2 * MSS), now=1.0011, pure=True)[1] == []
    assert sender.stats.spurious_undos == 1
    assert not sender.in_recovery and sender.congestion.cwnd >= 4 * MSS
    assert sender.stats.retransmissions == 1


def test_a_duplicate_after_the_first_ack_after_a_timeout_repairs_the_next_hole() -> None:
    """The segment after the resent one is missing while a later one arrived: a real loss."""
    sender = _timed_out_sender()
    assert sender.on_ack(wrap(MSS), now=1.001, pure=True)[1] == []
    assert _dup(sender, 1.002) == [2 * MSS]
    assert sender.stats.spurious_undos == 0
    assert sender.congestion.cwnd == 2 * MSS


def test_an_ack_of_originals_beyond_a_pass_after_a_second_timeout_ends_it() -> None:
    """A peer stalled past two timeouts: the second one's pass stops at an ack past it.

    Before, the pass went on resending the whole flight, which the peer
    had, as fast as acks of the originals opened the window: tens to
    hundreds of needless copies per stall on a busy host.
    """
    sender = _sender(window=10)
    _sampled(sender, 0.010)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)
    assert _ends(sender.on_timer(now=sender.pto_deadline)[0]) == [MSS]
    sender.on_ack(wrap(MSS), now=sender.pto_deadline - 0.01, pure=True)  # the copy's, or late?
    now = sender.pto_deadline  # silence: the second timeout starts a pass
    assert _ends(sender.on_timer(now=now)[0]) == [2 * MSS]
    assert _ends(sender.transmit(now=now)) == [3 * MSS]
    # An ack of segments sent only once: the flight was on its way all along.
    assert sender.on_ack(wrap(5 * MSS), now=now + 0.001, pure=True)[1] == []
    assert sender.stats.spurious_undos == 1 and not sender.in_recovery
    sent = _ends(sender.transmit(now=now + 0.001))
    sender.on_ack(wrap(10 * MSS), now=now + 0.002, pure=True)
    sent += _ends(sender.transmit(now=now + 0.002))
    assert sent and min(sent) == 11 * MSS  # new data only, from the end of the flight on
    assert sender.stats.retransmissions == 3


def test_a_timeout_after_duplicate_acks_is_not_undone() -> None:
    """A duplicate ack before the ack says a segment beyond the hole arrived first: a loss."""
    sender = _timed_out_sender()
    _dup(sender, 1.001)
    sender.on_ack(wrap(3 * MSS), now=1.002, pure=True)
    assert sender.stats.spurious_undos == 0
    assert sender.congestion.cwnd == 2 * MSS


def test_an_ack_of_only_the_resent_segment_after_a_timeout_is_not_undone() -> None:
    """An ack that ends where the resent segment ends may answer the copy: no proof."""
    sender = _timed_out_sender()
    sender.on_ack(wrap(MSS), now=1.001, pure=True)
    assert sender.stats.spurious_undos == 0
    assert sender.congestion.cwnd == 2 * MSS


def test_duplicate_acks_let_new_segments_out() -> None:
    """Limited transmit: each duplicate ack is a segment that left the network."""
    sender = _sender(window=4)
    sender.write(bytes(20 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.1) == []
    assert _ends(sender.transmit(now=0.1)) == [5 * MSS]
    assert _dup(sender, 0.1) == []
    assert _ends(sender.transmit(now=0.1)) == [6 * MSS]


def test_three_duplicates_fast_retransmit_and_partial_acks_repair_the_next_hole() -> None:
    sender = _sender(window=20)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.1, times=3) == [MSS]
    assert sender.in_recovery and sender.stats.congestion_events == 1
    # A partial ack up to the next hole: repaired at once, no second reduction.
    _, resent = sender.on_ack(wrap(5 * MSS), now=0.2, pure=True)
    assert _ends(resent) == [6 * MSS]
    assert not sender.peer_keeps_out_of_order  # 4 segments: could be reordered acks
    _, resent = sender.on_ack(wrap(14 * MSS), now=0.3, pure=True)
    assert _ends(resent) == [15 * MSS]
    assert sender.peer_keeps_out_of_order  # 8 past the repair at once: they were kept
    assert sender.stats.congestion_reductions == 1


def test_early_retransmit_with_little_in_flight() -> None:
    """Three segments outstanding and nothing more to send: two duplicates are enough."""
    sender = _sender()
    sender.write(bytes(3 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.1) == []
    assert _dup(sender, 0.1) == [MSS]


def test_a_lost_repair_is_sent_again_without_waiting_for_a_timeout() -> None:
    """More duplicates than the segments sent before the repair can explain: it was lost."""
    sender = _sender(window=4)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.1, times=3) == [MSS]
    sender.transmit(now=0.1)
    # Every segment sent before the repair has reported: three more can only
    # come from segments sent after it, which overtook the repair.
    assert _dup(sender, 0.2, times=3) == []
    assert _dup(sender, 0.2) == [MSS]
    assert sender.stats.lost_repairs == 1 and sender.stats.timeouts == 0


def test_late_duplicates_of_the_flight_before_a_repair_do_not_prove_it_lost() -> None:
    """Duplicates of segments sent before a repair say nothing of it, however late.

    On a busy host the rest of the old flight may wait in the receiver's
    queue past the time the repair's ack was due; only duplicates beyond
    what that flight can draw come from segments sent after the repair.
    """
    sender = _sender(window=10)
    _sampled(sender, 0.010)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.020, times=3) == [MSS]
    # Long after the repair's ack was due, the six left of the old flight report.
    assert _dup(sender, 0.050, times=6) == []
    assert sender.stats.lost_repairs == 0 and sender.stats.retransmissions == 1
    # Two more, late, can only come from segments sent after the repair.
    assert _dup(sender, 0.050, times=2) == [MSS]
    assert sender.stats.lost_repairs == 1


def test_a_hole_in_the_flight_a_loss_event_answered_is_no_new_event() -> None:
    """RFC 9002's recovery period: losses of data sent before a reduction are that reduction's.

    A lost repair ends in a second reduction; the episode then ends, and a
    hole in data sent before that reduction starts a new episode, which
    repairs it without a third.
    """
    sender = _sender(window=10)
    _sampled(sender, 0.010)
    sender.write(bytes(60 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.020, times=3) == [MSS]  # the first segment was lost
    assert sender.stats.congestion_reductions == 1
    assert _dup(sender, 0.021, times=6) == []  # the rest of the flight arrived
    fresh = _ends(sender.transmit(now=0.021))
    assert fresh and fresh[0] == 11 * MSS
    # The repair was lost: the segments after it report, long after its ack was due.
    assert _dup(sender, 0.040) == []
    assert _dup(sender, 0.040) == [MSS]
    assert sender.stats.lost_repairs == 1 and sender.stats.congestion_reductions == 2
    # Its second copy fills the hole; the segment after the first new one
    # (sent before that copy, and before the second reduction) is missing:
    # the copy arrived and it did not, so the ack starts a new episode.
    assert _ends(sender.on_ack(wrap(11 * MSS), now=0.041, pure=True)[1]) == [12 * MSS]
    assert sender.in_recovery and sender.stats.congestion_reductions == 2
    # The later segments report (after the two duplicates the first
    # episode's copies draw): nothing more to resend yet.
    assert _dup(sender, 0.042, times=5) == []
    assert sender.stats.congestion_reductions == 2


def test_a_hole_sent_before_an_answered_repair_is_repaired_at_once() -> None:
    """Past the recovery point, the repair's ack stops at a segment sent before it: lost.

    Acks are cumulative, and the path keeps order: the segment at the hole
    went out before the repair, which arrived, so it did not.  No partial
    ack repairs a hole past the recovery point, and with nothing new to
    send no new segment draws the duplicates that would: it used to wait
    for the probe timeout.  With room for new segments, their duplicates
    decide, as for any hole.
    """
    for written in (12, 60):
        sender = _first_flight(window=10, segments=written)
        # The first and the fifth segment are lost: the others report.
        assert _dup(sender, 0.020, times=3) == [MSS]
        assert _dup(sender, 0.020, times=5) == []
        fresh = _ends(sender.transmit(now=0.021))
        assert fresh and fresh[0] == 11 * MSS  # past the recovery point (10)
        # The repair's ack stops at the fifth: a partial ack, repaired at once.
        assert _ends(sender.on_ack(wrap(4 * MSS), now=0.030, pure=True)[1]) == [5 * MSS]
        # Its ack covers the recovery point and stops at the eleventh, sent
        # before that repair.
        resent = _ends(sender.on_ack(wrap(10 * MSS), now=0.040, pure=True)[1])
        if written == 12:  # all of it sent: nothing new will draw duplicates
            assert resent == [11 * MSS]
            assert sender.in_recovery and sender.stats.retransmissions == 3
        else:
            assert resent == [] and not sender.in_recovery


def test_a_hole_sent_after_the_repair_is_not_taken_for_lost() -> None:
    """The segment at the hole went out after the repair: it is only in flight.

    Everything written has been sent, so no new segment could draw the
    duplicates: the send times alone must keep the sender from resending.
    """
    sender = _first_flight(window=10, segments=12)
    assert _dup(sender, 0.020, times=3) == [MSS]
    assert _dup(sender, 0.021, times=6) == []
    # New segments go out after the repair; the ack of the repair and the
    # rest of the first flight stops at the first of them: in flight.
    assert _ends(sender.transmit(now=0.025))[:1] == [11 * MSS]
    assert sender.snd_max == 12 * MSS  # all of it sent
    assert _ends(sender.on_ack(wrap(10 * MSS), now=0.030, pure=True)[1]) == []
    assert not sender.in_recovery and sender.stats.retransmissions == 1


@pytest.mark.parametrize("late", [False, True], ids=["echo", "later"])
def test_duplicates_drawn_by_a_needless_copy_start_no_new_episode(late: bool) -> None:
    """A copy of a segment the peer already had comes back as a duplicate ack.

    Within a round trip of the episode's end, as many duplicates as the
    episode sent copies are no report of a later segment (counted as such,
    they started the next needless episode, whose copies drew the next
    duplicates, for ever); later ones count again.
    """
    sender = _sender(window=8)
    _sampled(sender, 0.010)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.010, times=3) == [MSS]
    sender.on_ack(wrap(8 * MSS), now=0.030, pure=True)  # the original arrived after all
    assert not sender.in_recovery
    assert _ends(sender.transmit(now=0.030)) == [9 * MSS, 10 * MSS, 11 * MSS, 12 * MSS]
    now = 1.0 if late else 0.031
    if late:
        assert _dup(sender, now, times=3) == [9 * MSS]
    else:
        assert _dup(sender, now, times=3) == []  # the first is the copy's
        assert _dup(sender, now) == [9 * MSS]


def test_an_ack_faster_than_any_round_trip_undoes_the_cut() -> None:
    """Eifel by ack timing: the repair's ack came too soon to answer it, so nothing was lost."""
    sender = _sender(window=10)
    _sampled(sender, 0.010)
    sender.write(bytes(20 * MSS))
    sender.transmit(now=0.0)
    assert _dup(sender, 0.010, times=3) == [MSS]
    assert sender.congestion.cwnd == 5 * MSS
    sender.on_ack(wrap(10 * MSS), now=0.012, pure=True)  # 2 ms after the repair
    assert sender.stats.spurious_undos == 1
    assert not sender.in_recovery
    assert sender.congestion.cwnd >= 10 * MSS
    assert sender.reorder_window > 0


def test_after_reordering_a_hole_must_also_be_old_enough() -> None:
    """Once reordering was seen, three duplicates wait for the reordering window (RACK)."""
    sender = _sender(window=10)
    _sampled(sender, 0.010)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)
    _dup(sender, 0.010, times=3)
    sender.on_ack(wrap(10 * MSS), now=0.011, pure=True)  # spurious: the window opens
    sender.transmit(now=0.011)
    hole_sent = 0.011
    assert _dup(sender, 0.0115) == []  # the needless repair's echo
    assert _dup(sender, 0.012, times=3) == []
    assert sender.loss_deadline is not None
    assert sender.loss_deadline >= hole_sent + sender.reorder_window
    resent, timed_out = sender.on_timer(sender.loss_deadline)
    assert _ends(resent) == [11 * MSS] and not timed_out


def _stop_at_each_repair(sender: StreamSender, now: float) -> None:
    """A receiver that discards out-of-order data: acks stop at each repaired segment."""
    _, resent = sender.on_ack(wrap(sender.acked + MSS), now, pure=True)
    assert _ends(resent) == [sender.acked + MSS]


def test_goes_back_n_for_a_discarding_receiver_once_per_pass() -> None:
    sender = _sender(window=10)
    sender.write(bytes(60 * MSS))
    sender.transmit(now=0.0)  # the first is lost, the other nine reach the peer
    _dup(sender, 0.1, times=9)
    for step in range(STOPS_BEFORE_GOING_BACK):
        assert sender.snd_nxt == sender.snd_max, "no go-back before the evidence"
        _stop_at_each_repair(sender, 0.2 + step / 10)
    assert sender.peer_discards_out_of_order
    assert sender.stats.go_back_passes == 1
    assert sender.snd_nxt == sender.acked + MSS  # the pass resends everything after the hole
    # While the pass runs, acks walk through what it resent: nothing more is
    # resent for them and no new pass starts.
    sender.transmit(now=0.6)
    _, resent = sender.on_ack(wrap(sender.acked + MSS), 0.7, pure=True)
    assert resent == []
    assert sender.stats.go_back_passes == 1


def test_a_receiver_that_kept_data_is_never_taken_for_a_discarding_one() -> None:
    """After it acked past a repair, stops mean a burst: resend a few, doubling, not all."""
    sender = _sender(window=20)
    _sampled(sender, 0.010)
    sender.write(bytes(60 * MSS))
    sender.transmit(now=0.0)
    _dup(sender, 0.1, times=15)
    sender.on_ack(wrap(10 * MSS), now=0.2, pure=True)  # past the repair: data was kept
    assert sender.peer_keeps_out_of_order
    _stop_at_each_repair(sender, 0.3)
    assert sender.stats.burst_resends == 0  # one stop: an isolated second loss
    _stop_at_each_repair(sender, 0.4)  # two in a row: a burst
    assert not sender.peer_discards_out_of_order
    resent = _ends(sender.transmit(now=0.4))
    assert resent[:2] == [14 * MSS, 15 * MSS]  # the two behind the repair...
    assert all(end > 20 * MSS for end in resent[2:])  # ...then new data, not a whole pass
    assert (sender.stats.burst_resends, sender.stats.go_back_passes) == (1, 0)


def test_a_whole_lost_flight_is_resent_in_one_pass() -> None:
    """Timeout, repair, and an ack that stops at the repair with nothing heard beyond: go back."""
    sender = _sender(window=10)
    _sampled(sender, 0.1)
    sender.write(bytes(10 * MSS))
    sender.transmit(now=0.0)
    resent, _ = sender.on_timer(now=2.0)
    assert _ends(resent) == [MSS]
    _, resent = sender.on_ack(wrap(MSS), now=2.1, pure=True)
    assert resent == []  # it may be the first ack of a late flight: the next one tells
    deadline = sender.deadline
    assert deadline is not None
    resent, timed_out = sender.on_timer(now=deadline)
    assert timed_out and _ends(resent) == [2 * MSS]
    assert sender.stats.go_back_passes == 1
    # The pass goes from a window of two segments, as TCP's after a
    # timeout: had the flight only been late, its acks would end it early.
    assert sender.congestion.cwnd == 2 * MSS
    assert _ends(sender.transmit(now=deadline)) == [3 * MSS]


def test_outstanding_bytes_never_exceed_the_peer_buffer_bound() -> None:
    """Duplicate acks shrink the pipe, but not beyond max_congestion_window outstanding."""
    sender = _sender(window=10, max_congestion_window=10 * MSS)
    sender.write(bytes(100 * MSS))
    sender.transmit(now=0.0)
    for _ in range(30):
        _dup(sender, 0.1)
        sender.transmit(now=0.1)
    assert sender.snd_max - sender.acked <= 10 * MSS


def test_waits_on_the_outstanding_bound_are_timed_apart_from_the_window() -> None:
    """``outstanding_bound_wait``: new data held by the bound alone, until the next transmit."""
    sender = _sender(window=10, max_congestion_window=10 * MSS)
    sender.write(bytes(100 * MSS))
    sender.transmit(now=0.0)
    _dup(sender, 0.1, times=3)  # a repair, and the window halved: the window holds data
    assert sender.transmit(now=0.1) == []
    assert sender.stats.outstanding_bound_wait == 0.0
    _dup(sender, 0.1, times=7)  # seven more arrived past the hole: room in the window
    assert sender.transmit(now=0.1) == []  # ...but ten segments are outstanding
    sender.on_ack(wrap(10 * MSS), now=0.35, pure=True)
    assert sender.transmit(now=0.35)
    assert sender.stats.outstanding_bound_wait == pytest.approx(0.25)


def test_dead_flight_probe_timeouts_back_off_and_collapse_the_window() -> None:
    sender = _sender(window=10)
    _sampled(sender, 0.001)
    sender.write(bytes(10 * MSS))
    sender.transmit(now=0.0)
    waits = []
    now = 0.0
    for _ in range(5):
        deadline = sender.deadline
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
        _, timed_out = sender.on_timer(now)
        assert timed_out
    assert all(b == pytest.approx(2 * a) for a, b in itertools.pairwise(waits[1:]))
    assert sender.congestion.cwnd == 2 * MSS
    assert sender.stats.timeouts == 5


# -- the ack policy -------------------------------------------------------------------


def test_in_order_data_is_acked_every_second_full_segment() -> None:
    receiver = StreamReceiver(origin=0, limit=10**6)
    assert receiver.on_segment(1000, bytes(1000), unread=0)[1] is Ack.LATER
    assert receiver.on_segment(2000, bytes(1000), unread=0)[1] is Ack.NOW
    receiver.on_ack_sent()
    assert receiver.on_segment(3000, bytes(1000), unread=0)[1] is Ack.LATER
    receiver.on_ack_sent()  # the ack rode on data going back
    assert receiver.on_segment(4000, bytes(1000), unread=0)[1] is Ack.LATER
    assert receiver.on_segment(4500, bytes(500), unread=0)[1] is Ack.LATER
    assert receiver.on_segment(5000, bytes(500), unread=0)[1] is Ack.NOW


# -- telling receivers apart ------------------------------------------------------------


def test_our_receiver_is_known_to_keep_data_before_any_loss() -> None:
    """Acks of every second segment mark a receiver that keeps out-of-order data."""
    net, client, _server, conn, peer = connected_pair(seed=3)
    data = payload(200_000, seed=3)
    client.write(conn, data)
    net.run_until(lambda: len(peer.received) >= len(data), max_time=10)
    assert conn.session.retransmissions == 0
    assert conn.session._sender.peer_keeps_out_of_order


def test_a_reference_receiver_is_never_taken_for_one_that_keeps_data() -> None:
    """A receiver acking every segment (the references) stays a candidate for go-back-N."""
    harness = Harness(4, 0.0, accepting=False)
    harness.theirs.echo = False
    data = random.Random(4).randbytes(200_000)
    session = harness.ours.connect(THEIRS, harness.now)
    harness.on_established = lambda established: established.send(data)
    harness.run_until(lambda: len(harness.theirs.received) == len(data))
    assert not session._sender.peer_keeps_out_of_order


def test_expiries_are_counted_past_the_timeout_cap() -> None:
    """A timeout already at max_rto still counts each expiry (persistent congestion needs it)."""
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.001, max_rto=2.0)
    for _ in range(5):
        rtt.back_off()
    assert rtt.backoff_count == 5 and rtt.rto == 2.0
