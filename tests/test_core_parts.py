"""Unit tests of the small sans-IO parts: serial numbers and buffers.

The RTT estimator, congestion controllers and the sender's loss recovery
are tested in ``test_recovery_units.py``.
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnet_twisted.receiver import Ack, StreamReceiver
from mnet_twisted.recvbuf import SEGMENT_OVERHEAD, ReassemblyBuffer
from mnet_twisted.sendbuf import SendBuffer
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
    """In-order data is acked later; gaps, duplicates and overflow are acked now and not
    kept; a segment that fills a hole is acked ahead of the rest of the read."""
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
    assert ack is Ack.FILLED  # acked before the rest of the batch is read
    assert receiver.rcv_nxt == 3000


def test_reassembly_charges_overhead_per_segment() -> None:
    """A swarm of tiny segments is charged per segment, so the limit bounds their count."""
    buffer = ReassemblyBuffer()
    for offset in range(10, 1010, 2):
        buffer.add(offset, b"x", expected=0)
    assert len(buffer) == 500
    assert buffer.cost == 500 * (1 + SEGMENT_OVERHEAD)


def test_out_of_order_memory_never_exceeds_the_limit_whatever_the_overlaps() -> None:
    """One-byte segments at 2, 4, 6, ..., then one covering them all: what is held is charged.

    (Cutting the covering segment into one piece per gap while charging it
    once held about twice the limit.)
    """
    limit = 1 << 20
    receiver = StreamReceiver(origin=0, limit=limit)
    stream = bytes(range(256)) * 130  # 33,280 bytes
    for offset in range(2, 31202, 2):
        receiver.on_segment(wrap(offset + 1), stream[offset : offset + 1], unread=0)
        assert receiver.held_out_of_order <= limit
    receiver.on_segment(wrap(31202), stream[1:31202], unread=0)
    assert receiver.held_out_of_order <= limit
    out = bytearray()
    for start, end in ((0, 1), (1, 31202), (31202, len(stream))):
        delivered, _ = receiver.on_segment(wrap(end), stream[start:end], unread=0)
        for piece in delivered:
            out += piece
    assert bytes(out) == stream
    assert receiver.held_out_of_order == 0


def _hold_and_deliver(count: int) -> float:
    """Seconds to hold ``count`` one-byte segments, farthest first, then deliver them."""
    best = float("inf")
    for _ in range(3):
        buffer = ReassemblyBuffer()
        started = time.perf_counter()
        for offset in range(2 * count, 0, -2):
            buffer.add(offset, b"x", expected=0)
        buffer.add(1, bytes(2 * count), expected=0)
        delivered = buffer.pop_contiguous(1)
        best = min(best, time.perf_counter() - started)
        assert sum(map(len, delivered)) == 2 * count and buffer.cost == 0
    return best


def test_holding_and_delivering_scale_as_n_log_n() -> None:
    """16 times the segments cost about 16 times as long, not 256 times (as a sorted list did)."""
    small, large = _hold_and_deliver(2_000), _hold_and_deliver(32_000)
    assert large / small < 60, (small, large)


def _hold_and_evict(count: int) -> float:
    """Seconds to hold ``count`` one-byte segments, then evict them one at a time."""
    best = float("inf")
    for _ in range(3):
        buffer = ReassemblyBuffer()
        started = time.perf_counter()
        for offset in range(2, 2 * count + 2, 2):
            buffer.add(offset, b"x", expected=0)
        for _ in range(count):
            buffer.evict_farthest(1)
        best = min(best, time.perf_counter() - started)
        assert len(buffer) == 0 and buffer.cost == 0
    return best


def test_evicting_one_segment_at_a_time_scales_as_n_log_n() -> None:
    """The farthest-first index, built at the first eviction, is kept, not rebuilt each time."""
    small, large = _hold_and_evict(2_000), _hold_and_evict(32_000)
    assert large / small < 60, (small, large)


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
