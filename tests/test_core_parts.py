"""Unit tests of the small sans-IO parts: serial numbers, RTT, NewReno, buffers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnet_twisted.config import SessionConfig
from mnet_twisted.congestion import NewReno
from mnet_twisted.receiver import Ack, StreamReceiver
from mnet_twisted.recvbuf import SEGMENT_OVERHEAD, ReassemblyBuffer
from mnet_twisted.rtt import RttEstimator
from mnet_twisted.sendbuf import SendBuffer
from mnet_twisted.sender import StreamSender
from mnet_twisted.seqnum import MODULUS, unwrap, wrap

MSS = 1000


@given(
    reference=st.integers(min_value=0, max_value=1 << 40),
    distance=st.integers(min_value=-(1 << 31) + 1, max_value=(1 << 31) - 1),
)
def test_unwrap_recovers_any_offset_within_half_the_space(reference: int, distance: int) -> None:
    """A wire value maps back to the true offset whenever it lies within 2**31 of the reference."""
    offset = max(0, reference + distance)
    assert unwrap(wrap(offset), reference) == offset


def test_unwrap_across_the_32_bit_boundary() -> None:
    """Offsets just past 2**32 are recognised as ahead of offsets just before it."""
    assert unwrap(5, MODULUS - 10) == MODULUS + 5
    assert unwrap(MODULUS - 10, MODULUS + 5) == MODULUS - 10
    assert wrap(MODULUS + 5) == 5


def test_rtt_estimator_follows_rfc_6298() -> None:
    """The first sample sets SRTT and RTTVAR = R/2; later ones smooth with 1/8 and 1/4."""
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.01, max_rto=60.0)
    assert rtt.rto == 1.0
    rtt.add_sample(0.1)
    assert rtt.smoothed == pytest.approx(0.1)
    assert rtt.variance == pytest.approx(0.05)
    assert rtt.rto == pytest.approx(0.1 + 4 * 0.05)
    rtt.add_sample(0.2)
    assert rtt.variance == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_rtt_backoff_doubles_and_is_clamped() -> None:
    """Each timeout doubles the RTO up to max_rto; a new sample clears the backoff."""
    rtt = RttEstimator(initial_rto=0.5, min_rto=0.2, max_rto=2.0)
    values = []
    for _ in range(5):
        rtt.back_off()
        values.append(rtt.rto)
    assert values == [1.0, 2.0, 2.0, 2.0, 2.0]
    rtt.add_sample(0.01)
    assert rtt.rto == 0.2  # clamped to min_rto


def test_newreno_slow_start_then_avoidance() -> None:
    """cwnd grows by the bytes acked below ssthresh and by about one MSS per window above."""
    cc = NewReno(MSS, initial_window_segments=2, max_window=10**9)
    cc.on_new_ack(MSS, MSS)
    assert cc.cwnd == 3 * MSS
    cc.ssthresh = cc.cwnd
    for _ in range(3):
        cc.on_new_ack(MSS, 0)
    assert cc.cwnd == 4 * MSS


def test_newreno_fast_retransmit_and_partial_acks() -> None:
    """Three duplicate acks halve the window and retransmit once; a partial ack asks again."""
    cc = NewReno(MSS, initial_window_segments=10, max_window=10**9)
    flight = 10 * MSS
    assert not cc.on_duplicate_ack(flight, 0, flight)
    assert not cc.on_duplicate_ack(flight, 0, flight)
    assert cc.on_duplicate_ack(flight, 0, flight)
    assert cc.in_recovery
    assert cc.ssthresh == 5 * MSS
    assert cc.cwnd == 8 * MSS
    assert not cc.on_duplicate_ack(flight, 0, flight)  # inflation only
    assert cc.on_new_ack(MSS, MSS)  # partial: retransmit the next hole
    assert not cc.on_new_ack(9 * MSS, flight)  # covers `recover`: recovery ends
    assert not cc.in_recovery
    assert cc.cwnd == cc.ssthresh


def test_newreno_timeout_restarts_from_one_segment() -> None:
    """An RTO sets cwnd to one MSS and ssthresh to half the flight (at least two MSS)."""
    cc = NewReno(MSS, initial_window_segments=10, max_window=10**9)
    cc.on_timeout(flight=3 * MSS, snd_max=3 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 2 * MSS)


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(st.binary(min_size=0, max_size=70_000), max_size=8), data=st.data())
def test_send_buffer_serves_any_range_and_releases(
    writes: list[bytes], data: st.DataObject
) -> None:
    """Any held byte range reads back exactly, before and after releasing a prefix."""
    origin = 12345
    buffer = SendBuffer(origin)
    for chunk in writes:
        buffer.append(chunk)
    stream = b"".join(writes)
    assert len(buffer) == len(stream)
    released = data.draw(st.integers(0, len(stream)))
    buffer.release_until(origin + released)
    start = data.draw(st.integers(released, len(stream)))
    length = data.draw(st.integers(0, len(stream) - start))
    assert buffer.get(origin + start, length) == stream[start : start + length]
    with pytest.raises(IndexError):
        buffer.get(origin + len(stream), 1)  # past what was written
    if released:
        with pytest.raises(IndexError):
            buffer.get(origin + released - 1, 1)  # already released


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), duplicates=st.booleans())
def test_receiver_delivers_any_segmentation_exactly_once(seed: int, duplicates: bool) -> None:
    """Overlapping, duplicated, reordered segments come out as the original stream, once."""
    rng = random.Random(seed)
    stream = rng.randbytes(rng.randint(1, 20_000))
    segments = []
    position = 0
    while position < len(stream):
        # Overlapping pieces of random size, as re-segmenting retransmissions make.
        start = max(0, position - rng.randint(0, 300))
        end = min(len(stream), position + rng.randint(1, 1500))
        segments.append((start, end))
        position = end
    if duplicates:
        segments += rng.sample(segments, k=len(segments) // 2)
    rng.shuffle(segments)
    receiver = StreamReceiver(origin=MODULUS - 5_000, limit=1 << 30)
    out = bytearray()
    for start, end in segments:
        offset = MODULUS - 5_000 + end
        delivered, _ = receiver.on_segment(wrap(offset), stream[start:end], unread=0)
        for piece in delivered:
            out += piece
    assert bytes(out) == stream
    assert receiver.held_out_of_order == 0


def test_receiver_ack_policy_and_limit() -> None:
    """In-order data is acked later; gaps, duplicates and overflow are acked now and not kept."""
    receiver = StreamReceiver(origin=0, limit=3000)
    assert receiver.on_segment(1000, bytes(1000), unread=0) == ([bytes(1000)], Ack.LATER)
    assert receiver.on_segment(1000, bytes(1000), unread=0) == ([], Ack.NOW)  # duplicate
    assert receiver.on_segment(3000, bytes(1000), unread=0) == ([], Ack.NOW)  # gap
    assert receiver.held_out_of_order == 1000 + SEGMENT_OVERHEAD
    # Unread data fills the limit: the in-order segment is dropped, unacknowledged.
    assert receiver.on_segment(2000, bytes(1000), unread=2500) == ([], Ack.NOW)
    assert receiver.rcv_nxt == 1000
    delivered, ack = receiver.on_segment(2000, bytes(1000), unread=0)
    assert [len(piece) for piece in delivered] == [1000, 1000]  # the hole filled
    assert ack is Ack.NOW
    assert receiver.rcv_nxt == 3000


def test_reassembly_charges_overhead_per_segment() -> None:
    """A swarm of tiny segments is charged per segment, so the limit bounds their count."""
    buffer = ReassemblyBuffer()
    for offset in range(10, 1010, 2):
        buffer.add(offset, b"x", expected=0)
    assert len(buffer) == 500
    assert buffer.cost == 500 * (1 + SEGMENT_OVERHEAD)


def test_sender_respects_the_window_and_goes_back_on_timeout() -> None:
    """New data leaves within cwnd; an RTO resends from the first unacknowledged byte."""
    config = SessionConfig(max_datagram_size=14 + MSS, initial_window_segments=4)
    sender = StreamSender(config)
    sender.write(bytes(10 * MSS))
    first = sender.transmit(now=0.0)
    assert [end for end, _ in first] == [MSS, 2 * MSS, 3 * MSS, 4 * MSS]
    assert sender.transmit(now=0.0) == []  # window full
    assert sender.rto_deadline == pytest.approx(config.initial_rto)
    resent = sender.on_timeout(now=1.0)
    assert [end for end, _ in resent] == [MSS]
    assert sender.congestion.cwnd == MSS
    newly, _ = sender.on_ack(wrap(MSS), now=1.1, pure=True)
    assert newly == MSS
    # Karn: the ack of a retransmitted segment gave no RTT sample.
    assert sender.rtt.smoothed is None


def test_hole_filler_evicts_farthest_out_of_order_data() -> None:
    """When out-of-order data fills the limit, the segment filling the hole still gets in."""
    receiver = StreamReceiver(origin=0, limit=3 * (1000 + SEGMENT_OVERHEAD))
    for end in (2000, 3000, 4000):  # offsets 1000..4000 arrive, 0..1000 is lost
        assert receiver.on_segment(end, bytes(1000), unread=0) == ([], Ack.NOW)
    assert receiver.held_out_of_order == 3 * (1000 + SEGMENT_OVERHEAD)
    delivered, _ = receiver.on_segment(1000, bytes(1000), unread=0)
    # The farthest segment (3000..4000) made room; the rest is contiguous now.
    assert sum(len(piece) for piece in delivered) == 3000
    assert receiver.rcv_nxt == 3000
    assert receiver.held_out_of_order == 0


def test_sender_detects_a_receiver_that_discards_out_of_order_data() -> None:
    """Acks stopping at each repaired segment's end switch the sender to go-back-N."""
    config = SessionConfig(max_datagram_size=14 + MSS, initial_window_segments=10)
    sender = StreamSender(config)
    sender.write(bytes(40 * MSS))
    sender.transmit(now=0.0)  # 10 segments; the first is lost, the rest discarded
    for _ in range(3):
        sender.on_ack(wrap(0), now=0.1, pure=True)
    assert sender.retransmissions == 1  # fast retransmit of [0, MSS)
    sender.on_ack(wrap(MSS), now=0.2, pure=True)  # stops at the repair: evidence 1
    assert not sender.peer_discards_out_of_order
    sender.on_ack(wrap(2 * MSS), now=0.3, pure=True)  # partial ack, same again
    assert sender.peer_discards_out_of_order
    # From now on a partial ack resends everything after the hole, window allowing.
    sender.on_ack(wrap(3 * MSS), now=0.4, pure=True)
    assert sender.snd_nxt == 4 * MSS
    resent = sender.transmit(now=0.4)
    assert resent and resent[0][0] == 5 * MSS


def test_sender_unlearns_discarding_when_a_repair_releases_more() -> None:
    """An ack jumping past a repaired segment shows the receiver kept later data."""
    config = SessionConfig(max_datagram_size=14 + MSS, initial_window_segments=10)
    sender = StreamSender(config)
    sender.peer_discards_out_of_order = True
    sender.write(bytes(20 * MSS))
    sender.transmit(now=0.0)
    for _ in range(3):
        sender.on_ack(wrap(0), now=0.1, pure=True)
    sender.on_ack(wrap(10 * MSS), now=0.2, pure=True)  # everything after the hole was kept
    assert not sender.peer_discards_out_of_order
