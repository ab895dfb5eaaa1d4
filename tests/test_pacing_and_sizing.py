"""
Pacing, socket buffer sizing, the delay-bounded window and Karn's backoff.

Unit tests of the sans-IO pieces, plus real sockets for what the OS grants.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted.config import SessionConfig
from mnet_twisted.congestion import Adaptive
from mnet_twisted.pacing import AVOIDANCE_GAIN, MIN_BURST_SEGMENTS, QUANTUM, Pacer
from mnet_twisted.sender import StreamSender
from mnet_twisted.seqnum import wrap
from mnet_twisted.sockopts import size_socket_buffers

MSS = 1000


def _sender(window: int, **options: object) -> StreamSender:
    options.setdefault("path_mtu_discovery", False)
    config = SessionConfig(
        max_datagram_size=14 + MSS,
        initial_window_segments=window,
        **options,  # type: ignore[arg-type]
    )
    return StreamSender(config)


# -- the pacer ------------------------------------------------------------------


def test_pacer_is_unlimited_until_an_rtt_is_known() -> None:
    pacer = Pacer(MSS)
    assert pacer.refill(0.0, cwnd=100 * MSS, srtt=None, slow_start=True) is None
    assert pacer.ready_at(0.0, MSS) == 0.0


def test_pacer_refills_at_gain_times_window_per_rtt_up_to_its_depth() -> None:
    pacer = Pacer(MSS)
    cwnd, srtt = 100 * MSS, 0.1  # 1 MB/s: the depth is the 10-segment floor
    tokens = pacer.refill(0.0, cwnd, srtt, slow_start=False)
    assert tokens == MIN_BURST_SEGMENTS * MSS
    for _ in range(MIN_BURST_SEGMENTS):
        pacer.spend(MSS)
    rate = AVOIDANCE_GAIN * cwnd / srtt
    assert pacer.ready_at(0.0, MSS) == pytest.approx(MSS / rate)
    assert pacer.refill(0.004, cwnd, srtt, slow_start=False) == pytest.approx(0.004 * rate)
    # A long pause never stores more than the depth.
    assert pacer.refill(10.0, cwnd, srtt, slow_start=False) == MIN_BURST_SEGMENTS * MSS


def test_pacer_depth_covers_two_timer_ticks_at_high_rates() -> None:
    pacer = Pacer(MSS)
    cwnd, srtt = 1000 * MSS, 0.001  # 1.25 GB/s
    pacer.refill(0.0, cwnd, srtt, slow_start=False)
    assert pacer.refill(1.0, cwnd, srtt, slow_start=False) == pytest.approx(
        AVOIDANCE_GAIN * cwnd / srtt * QUANTUM
    )


def test_sender_spreads_a_window_and_resumes_at_the_pacing_deadline() -> None:
    sender = _sender(window=40)
    sender.rtt.add_sample(0.1)
    sender.write(bytes(100 * MSS))
    first = sender.transmit(now=0.0)
    assert len(first) == MIN_BURST_SEGMENTS  # not the whole 40-segment window
    deadline = sender.pacing_deadline
    assert deadline is not None and 0.0 < deadline < 0.01
    assert sender.deadline == deadline
    assert sender.transmit(now=deadline)  # more leaves once the bucket refilled
    later = sender.transmit(now=0.1)
    assert sender.snd_max - sender.acked <= 40 * MSS and later


def test_unpaced_sender_sends_the_whole_window_at_once() -> None:
    sender = _sender(window=40, pacing=False)
    sender.rtt.add_sample(0.1)
    sender.write(bytes(100 * MSS))
    assert len(sender.transmit(now=0.0)) == 40
    assert sender.pacing_deadline is None


# -- the adaptive window ----------------------------------------------------------


def _acks(cc: Adaptive, rtt: float, count: int = 10, min_rtt: float = 0.010) -> None:
    for index in range(count):
        cc.on_ack(MSS, rtt, min_rtt, round_start=index == 0)


def test_adaptive_growth_stops_at_its_own_short_queue() -> None:
    cc = Adaptive(MSS, initial_window_segments=40, max_window=10**9)
    cc.ssthresh = cc.cwnd
    _acks(cc, 0.0101, count=200)
    assert cc.cwnd > 40 * MSS
    # 10 ms above the minimum, more than half the allowance: once that queue
    # has stood for a whole round, growth stops.
    _acks(cc, 0.020, count=200)
    grown = cc.cwnd
    _acks(cc, 0.020, count=200)
    assert cc.cwnd == grown


def test_slow_start_ends_when_the_queue_builds() -> None:
    cc = Adaptive(MSS, initial_window_segments=40, max_window=10**9)
    assert cc.in_slow_start
    _acks(cc, 0.020, count=10)
    assert not cc.in_slow_start


def test_after_a_congestion_loss_growth_ignores_the_queue() -> None:
    """Another flow keeps the queue full: holding back would starve us beside it."""
    cc = Adaptive(MSS, initial_window_segments=40, max_window=10**9)
    cc.ssthresh = cc.cwnd
    _acks(cc, 0.030)
    assert cc.on_congestion_event(min_rtt=0.010)  # lost with a 20 ms queue: congestion
    assert cc.competing
    reduced = cc.cwnd
    _acks(cc, 0.030, count=400)
    assert cc.cwnd > reduced


def test_a_loss_is_excused_only_on_fresh_samples() -> None:
    cc = Adaptive(MSS, initial_window_segments=40, max_window=10**9)
    cc.ssthresh = cc.cwnd
    _acks(cc, 0.0101)
    assert not cc.on_congestion_event(min_rtt=0.010)  # fresh, no queue: random loss
    # No sample since: the old ones cannot vouch for the queue now.
    assert cc.on_congestion_event(min_rtt=0.010)


# -- Karn's backoff ---------------------------------------------------------------


def test_backoff_survives_acks_of_retransmitted_data_only() -> None:
    sender = _sender(window=4, pacing=False)
    sender.rtt.add_sample(0.001)
    sender.write(bytes(8 * MSS))
    sender.transmit(now=0.0)
    sender.on_timer(now=1.0)  # resends the first segment
    assert sender.rtt.backoff_count == 1
    sender.on_ack(wrap(MSS), now=1.1, pure=True)  # covers the retransmission only
    assert sender.rtt.backoff_count == 1
    sender.on_ack(wrap(3 * MSS), now=1.2, pure=True)  # originals, never resent
    assert sender.rtt.backoff_count == 0


# -- socket buffers -----------------------------------------------------------------


def _os_grants(size: int) -> bool:
    """Whether this process may have ``size``-byte buffers (root, or caps high enough)."""
    if os.geteuid() == 0:
        return True
    try:
        caps = [int(Path(f"/proc/sys/net/core/{n}").read_text()) for n in ("rmem_max", "wmem_max")]
    except OSError:
        return False
    return min(caps) >= size


def test_socket_buffers_grow_and_say_what_the_os_granted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        granted = size_socket_buffers(sock, 1024 * 1024)
        assert granted.receive >= min(1024 * 1024, default // 2)
        assert granted.capped == (min(granted.receive, granted.send) < 1024 * 1024)
        if _os_grants(1024 * 1024):
            assert granted.receive >= 1024 * 1024 and granted.send >= 1024 * 1024
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 == granted.receive
        # Never shrinks a buffer that is already larger.
        again = size_socket_buffers(sock, 4096)
        assert again.receive == granted.receive and not again.capped


@pytest_twisted.ensureDeferred
async def test_listener_and_client_ports_get_their_buffers(mnet) -> None:
    size = 2 * 1024 * 1024
    config = mnet.withConfig(socket_buffer_size=size)
    port = await mnet.listen(Factory.forProtocol(Protocol), config=config)
    client = await mnet.connect(port, Factory.forProtocol(Protocol), config=config)
    for protocol in (port.protocol, client.transport._mnet):
        buffers = protocol.socketBuffers
        assert buffers is not None and buffers.requested == size
        sock = protocol._port.socket
        actual = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert buffers.receive == actual // 2  # Linux reports twice the usable size
        if not buffers.capped:
            assert buffers.receive >= size
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_socket_buffer_size_none_leaves_the_os_default(mnet) -> None:
    port = await mnet.listen(
        Factory.forProtocol(Protocol), config=mnet.withConfig(socket_buffer_size=None)
    )
    assert port.protocol.socketBuffers is None
