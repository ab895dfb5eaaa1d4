"""Bulk transfer over a simulated lossy, duplicating, reordering network."""

from __future__ import annotations

import dataclasses

import pytest
from simnet import Link, SessionRecord, connected_pair, drop_packets, payload

from mnet_twisted.config import SessionConfig
from mnet_twisted.events import CloseReason, DataReceived, SendBufferLow

#: (loss rate, bytes to send): higher loss gets a smaller transfer so the
#: whole matrix stays fast; MNET without SACK is slow at 30 % loss, as TCP is.
LOSS_MATRIX = [
    (0.0, 2_000_000),
    (0.05, 1_000_000),
    (0.10, 500_000),
    (0.20, 250_000),
    (0.30, 200_000),
]
SEEDS = [1, 2, 3, 4, 5]


def _impaired(loss: float) -> Link:
    return Link(
        delay=0.01, jitter=0.002, loss=loss, duplicate=0.05, reorder=0.05, reorder_delay=0.03
    )


def _assert_stream(record: SessionRecord, expected: bytes) -> None:
    got = bytes(record.received)
    assert len(got) == len(expected), f"received {len(got)} of {len(expected)} bytes"
    if got != expected:
        first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        raise AssertionError(f"stream differs first at byte {first}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "loss,size", LOSS_MATRIX, ids=[f"loss{int(x * 100)}" for x, _ in LOSS_MATRIX]
)
def test_one_way_transfer_exact(loss: float, size: int, seed: int) -> None:
    """Every byte arrives exactly once and in order, whatever the loss, duplication, reordering."""
    net, client, _server, conn, peer = connected_pair(seed=seed, link=_impaired(loss))
    data = payload(size, seed=seed)
    client.write(conn, data)
    net.run_until(
        lambda: len(peer.received) >= size, max_time=600, max_steps=300_000, what="transfer"
    )
    net.run_until(lambda: conn.session.send_buffer_size == 0, max_time=60)
    _assert_stream(peer, data)
    assert conn.close_reason is None and peer.close_reason is None
    if loss:
        assert net.stats.lost > 0 and conn.session.retransmissions > 0
    assert all(isinstance(e, DataReceived) for _, e in peer.events[1:])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("loss", [0.0, 0.1, 0.2])
def test_both_directions_at_once(loss: float, seed: int) -> None:
    """Both ends send at the same time; both streams arrive exact (piggybacked acks)."""
    size = {0.0: 1_000_000, 0.1: 300_000, 0.2: 150_000}[loss]
    net, client, server, conn, peer = connected_pair(seed=seed, link=_impaired(loss))
    up, down = payload(size, seed=seed), payload(size, seed=seed + 100)
    client.write(conn, up)
    server.write(peer, down)
    net.run_until(
        lambda: len(peer.received) >= size and len(conn.received) >= size,
        max_time=600,
        max_steps=300_000,
    )
    _assert_stream(peer, up)
    _assert_stream(conn, down)


@pytest.mark.parametrize("seed", SEEDS)
def test_echo_round_trip(seed: int) -> None:
    """A listener echoing what it receives returns the exact stream under 10 % loss."""
    net, client, _server, conn, peer = connected_pair(seed=seed, link=_impaired(0.1))
    peer.echo = True
    data = payload(200_000, seed=seed)
    client.write(conn, data)
    net.run_until(lambda: len(conn.received) >= len(data), max_time=600)
    _assert_stream(conn, data)
    _assert_stream(peer, data)


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_sequence_numbers_wrap(loss: float) -> None:
    """With both streams starting 100 000 bytes below 2**32, 1 MB crosses the wrap intact."""
    config = SessionConfig(stream_origin=2**32 - 100_000)
    net, client, server, conn, peer = connected_pair(seed=5, link=_impaired(loss), config=config)
    net.trace = True
    up, down = payload(1_000_000, seed=1), payload(300_000, seed=2)
    client.write(conn, up)
    server.write(peer, down)
    net.run_until(
        lambda: len(peer.received) >= len(up) and len(conn.received) >= len(down),
        max_time=600,
        max_steps=300_000,
    )
    _assert_stream(peer, up)
    _assert_stream(conn, down)
    # The wire really wrapped: some DATA carried a seq below the origin.
    seqs = [int.from_bytes(d[4:8], "little") for _, _, _, d in net.sent_log if d[0] == 0]
    assert any(s < 1_000_000 for s in seqs) and any(s > 2**32 - 100_000 for s in seqs)


def test_wrap_first_data_seq_is_origin_plus_length() -> None:
    """The first DATA after the handshake carries seq = stream_origin + its length mod 2**32."""
    config = SessionConfig(stream_origin=2**32 - 10)
    net, client, _server, conn, peer = connected_pair(seed=6, config=config)
    net.trace = True
    client.write(conn, b"x" * 30)
    net.run_until(lambda: len(peer.received) == 30, max_time=5)
    first = next(d for _, src, _, d in net.sent_log if d[0] == 0 and src == client.addr)
    assert int.from_bytes(first[4:8], "little") == 20
    assert int.from_bytes(first[8:12], "little") == 2**32 - 10
    assert int.from_bytes(first[12:14], "little") == 30


def test_paused_receiver_bounds_buffer_and_resumes() -> None:
    """A paused reader gets nothing, holds at most receive_buffer_limit, and gets all on resume."""
    config = SessionConfig(
        receive_buffer_limit=200_000, send_buffer_high_water=400_000, send_buffer_low_water=100_000
    )
    net, client, server, conn, peer = connected_pair(seed=7, link=_impaired(0.02), config=config)
    server.pause(peer)
    data = payload(2_000_000, seed=7)
    client.write(conn, data)
    # Most of peer_timeout: a reader paused that long keeps its session.  (MNET
    # has no receive window on the wire, so one paused for longer is taken
    # for a peer that stopped acknowledging: see the next test.)
    net.run_for(config.peer_timeout - 2)
    assert len(peer.received) == 0
    assert peer.session.receive_buffer_size <= config.receive_buffer_limit
    acked = conn.written - conn.session.send_buffer_size
    assert acked <= config.receive_buffer_limit, "peer acknowledged more than it can hold"
    assert conn.written <= config.send_buffer_high_water + 64 * 1024, "writer was not paused"
    assert conn.close_reason is None and peer.close_reason is None
    server.resume(peer)
    net.run_until(lambda: len(peer.received) >= len(data), max_time=300)
    _assert_stream(peer, data)
    assert conn.send_buffer_low_events >= 1
    assert SendBufferLow in conn.event_types()


def test_a_reader_paused_past_the_dead_peer_rule_loses_its_session() -> None:
    """Acks that stop advancing look the same whether the peer is paused or hostile.

    The sender ends the session (PEER_TIMEOUT) once the dead-peer rule runs
    out, as the reference peers do after 3 s; ``peer_timeout`` sets how long.
    """
    config = SessionConfig(receive_buffer_limit=200_000, peer_timeout=5.0)
    net, client, server, conn, peer = connected_pair(seed=9, config=config)
    server.pause(peer)
    client.write(conn, payload(2_000_000, seed=9))
    bound = config.peer_timeout + (config.dead_peer_retransmissions + 1) * config.max_rto
    net.run_until(lambda: conn.closed, max_time=bound + 5)
    assert conn.close_reason is CloseReason.PEER_TIMEOUT


def test_pause_and_resume_repeatedly() -> None:
    """Alternating pause/resume every 50 ms still delivers the stream exactly."""
    config = SessionConfig(receive_buffer_limit=100_000)
    net, client, server, conn, peer = connected_pair(seed=8, link=_impaired(0.05), config=config)
    data = payload(600_000, seed=8)
    client.write(conn, data)
    for _ in range(2000):
        if len(peer.received) >= len(data):
            break
        server.pause(peer)
        net.run_for(0.05)
        server.resume(peer)
        net.run_for(0.05)
    _assert_stream(peer, data)


def test_throughput_far_beyond_stop_and_wait() -> None:
    """1 MB at 0 % loss over a 10 ms RTT takes well under stop-and-wait's time, many in flight."""
    net, client, server, conn, peer = connected_pair(seed=9, link=Link(delay=0.005))
    data = payload(1_000_000, seed=9)
    client.write(conn, data)
    took = net.run_until(lambda: len(peer.received) >= len(data), max_time=60)
    _assert_stream(peer, data)
    mss = client.config.max_segment_size
    stop_and_wait = len(data) / mss * 0.010
    assert took < stop_and_wait / 10, (took, stop_and_wait)
    assert net.max_data_in_flight[(client.addr, server.addr)] >= 10 * 4
    assert conn.session.retransmissions == 0


@pytest.mark.parametrize(
    "rate,limit",
    [(1_000_000, 1.5 * 2.0), (10_000_000, 3.0)],
    ids=["1MBps", "10MBps"],
)
def test_throughput_through_a_bottleneck(rate: float, limit: float) -> None:
    """Through a drop-tail bottleneck 2 MB arrives exact, within a bound on the time taken.

    At 1 MB/s the link is kept mostly busy; at 10 MB/s slow start overshoots
    the 20 ms queue and NewReno without SACK repairs one hole per round trip,
    so the bound is loose (still ~25x the reference's stop-and-wait).
    """
    link = Link(delay=0.005, rate=rate, queue_limit=0.02)
    net, client, _server, conn, peer = connected_pair(seed=10, link=link)
    data = payload(2_000_000, seed=10)
    client.write(conn, data)
    took = net.run_until(lambda: len(peer.received) >= len(data), max_time=120)
    _assert_stream(peer, data)
    assert took < limit, f"{took:.3f}s for 2 MB at {rate / 1e6:g} MB/s"


def test_small_writes_are_coalesced() -> None:
    """A thousand 10-byte writes in one turn leave as a few full segments, not a thousand."""
    net, _client, _server, conn, peer = connected_pair(seed=11)
    before = net.stats.by_type["DATA"]
    for i in range(1000):
        conn.session.send(bytes([i % 256]) * 10)
    net.flush()
    net.run_until(lambda: len(peer.received) >= 10_000, max_time=5)
    sent_by_client = net.stats.by_type["DATA"] - before
    assert sent_by_client < 40, sent_by_client
    assert bytes(peer.received) == b"".join(bytes([i % 256]) * 10 for i in range(1000))


def test_segments_respect_max_datagram_size() -> None:
    """No datagram exceeds max_datagram_size; a small size still transfers exactly."""
    config = SessionConfig(max_datagram_size=200)
    net, client, _server, conn, peer = connected_pair(seed=12, link=_impaired(0.05), config=config)
    net.trace = True
    data = payload(100_000, seed=12)
    client.write(conn, data)
    net.run_until(lambda: len(peer.received) >= len(data), max_time=300)
    _assert_stream(peer, data)
    assert max(len(d) for _, _, _, d in net.sent_log) <= 200


def test_receiver_accepts_reference_sized_segments() -> None:
    """A stop-and-wait-like peer with 512-byte datagrams interoperates with default settings."""
    small = SessionConfig(
        max_datagram_size=512, initial_window_segments=1, max_congestion_window=498
    )
    net, client, _server, conn, peer = connected_pair(
        seed=13, link=_impaired(0.05), config=small, server_config=SessionConfig()
    )
    data = payload(50_000, seed=13)
    peer.echo = True
    client.write(conn, data)
    net.run_until(lambda: len(conn.received) >= len(data), max_time=300)
    _assert_stream(conn, data)


def test_asymmetric_loss_on_acks_only() -> None:
    """Losing 30 % of the acknowledgements (reverse path only) still delivers exactly."""
    net, client, server, conn, peer = connected_pair(seed=14, link=Link(delay=0.01))
    net.set_link(server, client, dataclasses.replace(_impaired(0.3)))
    data = payload(500_000, seed=14)
    client.write(conn, data)
    net.run_until(lambda: len(peer.received) >= len(data), max_time=300)
    net.run_until(lambda: conn.session.send_buffer_size == 0, max_time=120)
    _assert_stream(peer, data)


def test_deterministic_given_seed() -> None:
    """The same seed gives the same run: identical statistics and timings."""

    def run() -> tuple[object, float]:
        net, client, _server, conn, peer = connected_pair(seed=15, link=_impaired(0.1))
        client.write(conn, payload(100_000, seed=15))
        took = net.run_until(lambda: len(peer.received) >= 100_000, max_time=300)
        return net.stats, took

    assert run() == run()


@pytest.mark.parametrize("seed", [1, 2])
def test_spurious_and_late_timers(seed: int) -> None:
    """Timer calls that come early (spuriously) or 50 ms late do not break delivery."""
    net, client, _server, conn, peer = connected_pair(seed=seed, link=_impaired(0.1))
    net.spurious_timers = 0.3
    net.timer_lag = 0.05
    data = payload(200_000, seed=seed)
    client.write(conn, data)
    net.run_until(lambda: len(peer.received) >= len(data), max_time=600)
    _assert_stream(peer, data)


def test_send_buffer_low_when_already_low() -> None:
    """notify_when_send_buffer_low() with an empty buffer yields one SendBufferLow at once."""
    net, _client, _server, conn, _peer = connected_pair(seed=16)
    conn.session.notify_when_send_buffer_low()
    net.flush()
    assert conn.event_types().count(SendBufferLow) == 1
    net.run_for(1)
    assert conn.event_types().count(SendBufferLow) == 1, "one event per request"


def test_send_buffer_low_waits_for_acks() -> None:
    """SendBufferLow comes only after enough data was acknowledged to drop below low water."""
    config = SessionConfig(send_buffer_high_water=300_000, send_buffer_low_water=100_000)
    net, client, _server, conn, peer = connected_pair(
        seed=17, link=Link(delay=0.02), config=config
    )
    seen_at_event: list[tuple[int, int]] = []

    def on_event(record: SessionRecord, event: object) -> None:
        if isinstance(event, SendBufferLow):
            seen_at_event.append((len(peer.received), record.session.send_buffer_size))

    client.on_event = on_event
    conn.session.send(payload(500_000, seed=17))
    conn.session.notify_when_send_buffer_low()
    net.flush()
    assert SendBufferLow not in conn.event_types()
    net.run_until(lambda: SendBufferLow in conn.event_types(), max_time=30)
    [(received, buffered)] = seen_at_event
    # Below low water means more than 400 000 bytes acknowledged, hence delivered.
    assert buffered < 100_000
    assert received > 400_000


def test_wrap_under_heavy_loss() -> None:
    """Crossing 2**32 under 20 % loss with duplication and reordering keeps the stream exact."""
    config = SessionConfig(stream_origin=2**32 - 50_000)
    net, client, server, conn, peer = connected_pair(seed=18, link=_impaired(0.2), config=config)
    up, down = payload(150_000, seed=18), payload(150_000, seed=19)
    client.write(conn, up)
    server.write(peer, down)
    net.run_until(
        lambda: len(peer.received) >= len(up) and len(conn.received) >= len(down), max_time=600
    )
    _assert_stream(peer, up)
    _assert_stream(conn, down)


def test_same_tag_from_two_addresses_stays_separate() -> None:
    """Two connectors that pick the same tag are kept apart by their addresses."""
    from simnet import SimNet

    net = SimNet(seed=19)
    server = net.add_host("10.0.0.2", 5000, accepting=True, name="server")
    same = b"\x11\x22\x33" * 1000

    def fixed(n: int) -> bytes:
        return same[:n]

    a = net.add_host("10.0.0.1", 4000, random_bytes=fixed, name="a")
    b = net.add_host("10.0.0.3", 4000, random_bytes=fixed, name="b")
    ra, rb = a.connect(server), b.connect(server)
    net.run_until(lambda: ra.established and rb.established, max_time=10)
    assert ra.session.local_tag == rb.session.local_tag
    assert len(server.demux) == 2
    for record in server.order:
        record.echo = True
    ma, mb = payload(50_000, seed=1), payload(50_000, seed=2)
    a.write(ra, ma)
    b.write(rb, mb)
    net.run_until(lambda: len(ra.received) >= len(ma) and len(rb.received) >= len(mb), max_time=30)
    assert bytes(ra.received) == ma and bytes(rb.received) == mb


@pytest.mark.parametrize("limit", [2000, 5000, 20_000])
def test_out_of_order_data_cannot_lock_out_the_hole(limit: int) -> None:
    """When out-of-order segments fill receive_buffer_limit, the hole's retransmission still fits.

    The segment at the receiver's next offset drains the reassembly buffer, so
    refusing it for lack of room would stall the session forever (the sender
    retransmits, the receiver re-acknowledges, nobody times out).
    """
    config = SessionConfig(receive_buffer_limit=limit, max_datagram_size=100)
    net, client, _server, conn, peer = connected_pair(seed=1, config=config)
    net.drop = drop_packets("DATA", [1], src=client)
    data = payload(50_000, seed=20)
    conn.session.send(data)
    net.flush()
    net.run_until(lambda: len(peer.received) >= len(data), max_time=120)
    _assert_stream(peer, data)
    assert peer.session.receive_buffer_size <= limit


@pytest.mark.parametrize("nth", [700, 2000])
def test_single_loss_in_a_large_window_does_not_stall(nth: int) -> None:
    """With default settings, one lost DATA while more than receive_buffer_limit is in flight
    is repaired: the out-of-order backlog must not lock out the retransmitted hole."""
    net, client, _server, conn, peer = connected_pair(seed=1, link=Link(delay=0.01))
    net.drop = drop_packets("DATA", [nth], src=client)
    data = payload(12_000_000, seed=21)
    conn.session.send(data)  # one big write, as transport.write(big) would do
    net.flush()
    net.run_until(lambda: len(peer.received) >= len(data), max_time=60)
    _assert_stream(peer, data)
