"""Graceful close, abort, dead peers and lingering, over a simulated network."""

from __future__ import annotations

import itertools

import pytest
from simnet import (
    Host,
    Link,
    SessionRecord,
    SimNet,
    connected_pair,
    drop_all,
    drop_packets,
    pair,
    payload,
)

from mnet_twisted.config import SessionConfig
from mnet_twisted.errors import SessionClosedError
from mnet_twisted.events import Closed, CloseReason, DataReceived
from mnet_twisted.session import SessionState


def _impaired(loss: float) -> Link:
    return Link(delay=0.01, jitter=0.002, loss=loss, duplicate=0.05, reorder=0.05)


def _dead_peer_bound(config: SessionConfig) -> float:
    """An upper bound on how long a sender takes to give up on a silent peer."""
    retransmissions = getattr(config, "dead_peer_retransmissions", 0)
    return config.peer_timeout + (retransmissions + 1) * config.max_rto


def _closed_both(a: SessionRecord, b: SessionRecord) -> bool:
    return a.closed and b.closed


def _assert_closed_last(record: SessionRecord, reason: CloseReason) -> None:
    assert record.close_reason is reason, record
    assert isinstance(record.events[-1][1], Closed)
    assert sum(isinstance(e, Closed) for _, e in record.events) == 1
    assert record.session.closed and record.state is SessionState.CLOSED


def _settle(net: SimNet, *hosts: Host) -> None:
    """Run until every host's session table is empty (lingering included)."""
    net.run_until(
        lambda: all(len(h.demux) == 0 for h in hosts), max_time=60, what="session tables empty"
    )


@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize("loss,seed", [(0.0, 1), (0.1, 2), (0.1, 3), (0.2, 4)])
def test_close_after_big_write_delivers_everything(closer: str, loss: float, seed: int) -> None:
    """Closing right after a big write delivers every byte, then both sides close CLEAN."""
    net, client, server, conn, peer = connected_pair(seed=seed, link=_impaired(loss))
    host, record, other = (client, conn, peer) if closer == "client" else (server, peer, conn)
    data = payload(300_000 if loss else 1_000_000, seed=seed)
    record.session.send(data)
    host.close(record)
    assert not record.session.writable
    net.run_until(lambda: _closed_both(conn, peer), max_time=300, max_steps=300_000)
    assert bytes(other.received) == data
    _assert_closed_last(conn, CloseReason.CLEAN)
    _assert_closed_last(peer, CloseReason.CLEAN)
    # Every DataReceived came before Closed.
    assert all(isinstance(e, DataReceived) for _, e in other.events[1:-1])
    _settle(net, client, server)


@pytest.mark.parametrize("loss,seed", [(0.0, 5), (0.1, 6)])
def test_close_via_writer_helper(loss: float, seed: int) -> None:
    """A writer that honours the high-water mark and closes after its last chunk closes CLEAN."""
    net, client, _server, conn, peer = connected_pair(seed=seed, link=_impaired(loss))
    data = payload(2_500_000 if not loss else 400_000, seed=seed)
    client.write(conn, data, close=True)
    net.run_until(lambda: _closed_both(conn, peer), max_time=300, max_steps=300_000)
    assert bytes(peer.received) == data
    assert conn.close_reason is CloseReason.CLEAN and peer.close_reason is CloseReason.CLEAN


@pytest.mark.parametrize("loss,seed", [(0.0, 7), (0.1, 8), (0.2, 9)])
def test_simultaneous_close(loss: float, seed: int) -> None:
    """Both ends writing and closing at the same instant close CLEAN with both streams whole."""
    net, client, server, conn, peer = connected_pair(seed=seed, link=_impaired(loss))
    up, down = payload(100_000, seed=seed), payload(80_000, seed=seed + 50)
    conn.session.send(up)
    peer.session.send(down)
    conn.session.close(net.now)
    peer.session.close(net.now)
    net.flush()
    net.run_until(lambda: _closed_both(conn, peer), max_time=300)
    assert bytes(peer.received) == up and bytes(conn.received) == down
    _assert_closed_last(conn, CloseReason.CLEAN)
    _assert_closed_last(peer, CloseReason.CLEAN)
    _settle(net, client, server)


def test_close_with_nothing_sent_is_three_packets() -> None:
    """An idle session closes with exactly SHUTDOWN, SHUTDOWN-ACK, SHUTDOWN-COMPLETE."""
    net, client, _server, conn, peer = connected_pair(seed=10)
    net.trace = True
    client.close(conn)
    net.run_until(lambda: _closed_both(conn, peer), max_time=10)
    kinds = [d[0] for _, _, _, d in net.sent_log]
    assert kinds == [5, 6, 7]
    shutdown = net.sent_log[0][3]
    assert shutdown[1:4] == conn.session.local_tag
    assert int.from_bytes(shutdown[4:8], "little") == 0
    _assert_closed_last(conn, CloseReason.CLEAN)
    _assert_closed_last(peer, CloseReason.CLEAN)


def test_shutdown_carries_receive_total() -> None:
    """SHUTDOWN's acknowledgement field is the closer's receive total."""
    net, client, server, conn, peer = connected_pair(seed=11)
    server.write(peer, b"z" * 777)
    net.run_until(lambda: len(conn.received) == 777, max_time=5)
    net.trace = True
    client.close(conn)
    net.run_until(lambda: _closed_both(conn, peer), max_time=10)
    shutdown = next(d for _, _, _, d in net.sent_log if d[0] == 5)
    assert int.from_bytes(shutdown[4:8], "little") == 777


def test_data_queued_before_peer_shutdown_is_delivered() -> None:
    """Data the peer queued before our SHUTDOWN arrived is delivered before the close completes."""
    net, _client, _server, conn, peer = connected_pair(seed=13, link=_impaired(0.05))
    data = payload(500_000, seed=13)
    peer.session.send(data)
    conn.session.close(net.now)
    net.flush()
    net.run_until(lambda: _closed_both(conn, peer), max_time=300)
    assert bytes(conn.received) == data
    assert conn.close_reason is CloseReason.CLEAN and peer.close_reason is CloseReason.CLEAN


@pytest.mark.parametrize("which", [[1], [1, 2, 3]], ids=["first", "three"])
@pytest.mark.parametrize("kind", ["SHUTDOWN", "SHUTDOWN_ACK", "SHUTDOWN_COMPLETE"])
def test_lost_shutdown_packets_still_clean(kind: str, which: list[int]) -> None:
    """Losing SHUTDOWN, SHUTDOWN-ACK or SHUTDOWN-COMPLETE still ends CLEAN on both sides."""
    net, client, server, conn, peer = connected_pair(seed=14)
    net.drop = drop_packets(kind, which)
    client.write(conn, payload(50_000, seed=14), close=True)
    net.run_until(lambda: _closed_both(conn, peer), max_time=60)
    assert bytes(peer.received) == payload(50_000, seed=14)
    assert conn.close_reason is CloseReason.CLEAN
    assert peer.close_reason is CloseReason.CLEAN
    # Every wanted loss happened, unless the exchange ended before that many were sent.
    assert 1 <= net.stats.filtered <= len(which)
    assert net.stats.by_type[kind] >= net.stats.filtered
    _settle(net, client, server)


def test_every_shutdown_complete_lost_still_clean() -> None:
    """If no SHUTDOWN-COMPLETE ever arrives the SHUTDOWN-ACK sender still ends CLEAN."""
    net, client, server, conn, peer = connected_pair(seed=15)
    net.drop = drop_all("SHUTDOWN_COMPLETE")
    client.close(conn)
    net.run_until(lambda: _closed_both(conn, peer), max_time=120)
    assert conn.close_reason is CloseReason.CLEAN
    assert peer.close_reason is CloseReason.CLEAN
    _settle(net, client, server)


def test_session_table_empty_after_linger() -> None:
    """The closer keeps its session for `linger` seconds, then forgets it; the peer at once."""
    net, client, server, conn, peer = connected_pair(seed=16)
    client.close(conn)
    net.run_until(lambda: _closed_both(conn, peer), max_time=10)
    closed_at = net.now
    assert len(server.demux) == 0
    net.run_for(client.config.linger * 0.5)
    assert len(client.demux) == 1, "a clean closer lingers"
    net.run_for(client.config.linger * 0.5 + 0.1)
    assert len(client.demux) == 0
    assert net.now - closed_at <= client.config.linger + 0.2
    assert net.next_time() is None, "nothing left to do"


def test_lingering_session_answers_retransmitted_shutdown_ack() -> None:
    """While lingering, a retransmitted SHUTDOWN-ACK is answered with SHUTDOWN-COMPLETE."""
    net, client, server, conn, peer = connected_pair(seed=17)
    client.close(conn)
    net.run_until(lambda: conn.closed, max_time=10)
    net.trace = True
    net.inject(b"\x06" + peer.session.local_tag, server.addr, client)
    net.run_for(0.1)
    replies = [d for _, src, _, d in net.sent_log if src == client.addr]
    assert replies == [b"\x07" + conn.session.local_tag]


@pytest.mark.parametrize("aborter", ["client", "server"])
def test_abort(aborter: str) -> None:
    """abort() closes this side ABORTED_LOCALLY at once and the peer ABORTED_BY_PEER."""
    net, client, server, conn, peer = connected_pair(seed=18, link=_impaired(0.0))
    client.write(conn, payload(500_000, seed=18))
    net.run_for(0.05)
    host, record, other = (client, conn, peer) if aborter == "client" else (server, peer, conn)
    host.abort(record)
    _assert_closed_last(record, CloseReason.ABORTED_LOCALLY)
    net.run_until(lambda: other.closed, max_time=5)
    _assert_closed_last(other, CloseReason.ABORTED_BY_PEER)
    _settle(net, client, server)


def test_abort_lost_then_peer_learns_from_abort_reply() -> None:
    """If our ABORT is lost, the peer's next packet is answered ABORT and it closes too."""
    net, client, server, conn, peer = connected_pair(seed=19)
    server.write(peer, payload(200_000, seed=19))
    net.drop = drop_packets("ABORT", [1])
    client.abort(conn)
    net.run_until(lambda: peer.closed, max_time=60)
    assert peer.close_reason is CloseReason.ABORTED_BY_PEER
    assert net.stats.by_type["ABORT"] >= 2


def test_close_is_idempotent_and_abort_after_close_aborts() -> None:
    """A second close() changes nothing; abort() during the shutdown aborts."""
    net, client, _server, conn, peer = connected_pair(seed=20)
    conn.session.send(payload(100_000, seed=20))
    conn.session.close(net.now)
    conn.session.close(net.now)
    net.flush()
    net.run_for(0.005)
    client.abort(conn)
    _assert_closed_last(conn, CloseReason.ABORTED_LOCALLY)
    net.run_until(lambda: peer.closed, max_time=10)
    assert peer.close_reason is CloseReason.ABORTED_BY_PEER


def test_send_after_close_raises() -> None:
    """send() after close() is local misuse: SessionClosedError."""

    _net, client, _server, conn, _peer = connected_pair(seed=21)
    client.close(conn)
    with pytest.raises(SessionClosedError):
        conn.session.send(b"too late")


@pytest.mark.parametrize("seed", [22, 23])
def test_dead_peer_mid_transfer(seed: int) -> None:
    """If the receiver vanishes mid-transfer the sender closes PEER_TIMEOUT within its bound."""
    net, client, server, conn, peer = connected_pair(seed=seed, link=_impaired(0.02))
    client.write(conn, payload(2_000_000, seed=seed))
    net.run_until(lambda: len(peer.received) > 200_000, max_time=60)
    server.stopped = True
    stopped_at = net.now
    net.run_until(
        lambda: conn.closed, max_time=_dead_peer_bound(client.config) + 5, max_steps=50_000
    )
    _assert_closed_last(conn, CloseReason.PEER_TIMEOUT)
    took = conn.closed_at - stopped_at  # type: ignore[operator]
    assert client.config.peer_timeout <= took <= _dead_peer_bound(client.config), took
    _settle(net, client)


def test_dead_peer_during_shutdown() -> None:
    """If the peer vanishes after our SHUTDOWN, we give up with a timeout reason, not CLEAN."""
    net, client, server, conn, _peer = connected_pair(seed=24)
    server.stopped = True
    client.close(conn)
    net.run_until(lambda: conn.closed, max_time=_dead_peer_bound(client.config) + 5)
    assert conn.close_reason in (CloseReason.SHUTDOWN_TIMEOUT, CloseReason.PEER_TIMEOUT)
    _settle(net, client)


def test_dead_peer_with_short_timeout() -> None:
    """A shorter peer_timeout is honoured (together with the retransmission count)."""
    config = SessionConfig(peer_timeout=2.0, max_rto=0.5, min_rto=0.1, initial_rto=0.2)
    net, client, server, conn, _peer = connected_pair(seed=25, config=config)
    client.write(conn, payload(100_000, seed=25))
    net.run_for(0.011)
    server.stopped = True
    stopped_at = net.now
    net.run_until(lambda: conn.closed, max_time=60)
    assert conn.close_reason is CloseReason.PEER_TIMEOUT
    assert conn.closed_at - stopped_at <= _dead_peer_bound(config)  # type: ignore[operator]


def test_idle_session_survives_silence() -> None:
    """An established session with nothing in flight is not timed out by silence."""
    net, client, _server, conn, peer = connected_pair(seed=26)
    net.run_for(120)
    assert not conn.closed and not peer.closed
    message = payload(10_000, seed=26)
    client.write(conn, message)
    net.run_until(lambda: bytes(peer.received) == message, max_time=5)


def test_abort_all() -> None:
    """abort_all() closes every session of a demultiplexer ABORTED_LOCALLY and tells peers."""
    net, client, server, conn, _peer = connected_pair(seed=27)
    other = client.connect(server)
    net.run_until(lambda: other.established and len(server.order) == 2, max_time=5)
    client.demux.abort_all(net.now)
    net.flush()
    assert conn.close_reason is CloseReason.ABORTED_LOCALLY
    assert other.close_reason is CloseReason.ABORTED_LOCALLY
    net.run_until(lambda: all(r.closed for r in server.order), max_time=5)
    assert {r.close_reason for r in server.order} == {CloseReason.ABORTED_BY_PEER}
    _settle(net, client, server)


def test_listener_restart_aborts_connector() -> None:
    """After the listener loses its state, the connector's next DATA draws ABORT and it closes."""
    net, client, server, conn, _peer = connected_pair(seed=28)
    net.hosts.pop(server.addr)
    reborn = net.add_host(
        server.addr[0],
        server.addr[1],
        accepting=True,
        name="reborn",
        secret=b"a brand new secret after restart",
    )
    client.write(conn, payload(10_000, seed=28))
    net.run_until(lambda: conn.closed, max_time=10)
    assert conn.close_reason is CloseReason.ABORTED_BY_PEER
    assert len(reborn.demux) == 0


def test_paused_reader_gets_data_then_closed_on_resume() -> None:
    """A paused reader whose peer closes sees nothing until resume, then all data, then Closed."""
    net, client, server, conn, peer = connected_pair(seed=29, link=_impaired(0.05))
    server.pause(peer)
    data = payload(60_000, seed=29)
    client.write(conn, data, close=True)
    net.run_until(lambda: conn.closed, max_time=60)
    assert conn.close_reason is CloseReason.CLEAN
    assert len(peer.received) == 0 and not peer.closed
    server.resume(peer)
    net.run_until(lambda: peer.closed, max_time=10)
    assert bytes(peer.received) == data
    _assert_closed_last(peer, CloseReason.CLEAN)
    _settle(net, client, server)


def test_peer_shutdown_finishes_pending_data_but_takes_no_more() -> None:
    """After the peer's SHUTDOWN, what was written still arrives; new writes are refused."""
    net, client, server, conn, peer = connected_pair(seed=29, link=Link(delay=0.01))
    pending = payload(300_000, seed=29)
    server.write(peer, pending)
    client.close(conn)
    net.run_until(lambda: peer.state is SessionState.SHUTDOWN_RECEIVED, max_time=5)
    assert not peer.session.writable
    with pytest.raises(SessionClosedError):
        peer.session.send(b"too late")
    net.run_until(lambda: conn.closed and peer.closed, max_time=30)
    assert bytes(conn.received) == pending
    assert conn.close_reason is CloseReason.CLEAN and peer.close_reason is CloseReason.CLEAN


def test_close_after_an_echo_sends_no_ack_the_shutdown_carries() -> None:
    """Connect, one echo, close: nine datagrams, as few as the wire allows.

    The echo's ack would be due right when the SHUTDOWN leaves; the SHUTDOWN
    carries the same cumulative ack, so no pure ack goes with it.
    """
    net, client, server = pair(5, Link(delay=0.001))
    net.trace = True
    server.echo_new_sessions = True
    conn = client.connect(server)
    net.run_until(lambda: conn.established, max_time=5)

    def close_on_echo(record: SessionRecord, event: object) -> None:
        # As an application closing in dataReceived: in the same drain.
        if isinstance(event, DataReceived) and len(record.received) == 64:
            record.session.close(net.now)

    client.on_event = close_on_echo
    client.write(conn, b"m" * 64)
    net.run_until(lambda: bool(server.order) and _closed_both(conn, server.order[0]), max_time=5)
    peer = server.only_session()
    _assert_closed_last(conn, CloseReason.CLEAN)
    _assert_closed_last(peer, CloseReason.CLEAN)
    types = [data[0] for _, _, _, data in net.sent_log]
    assert types == [1, 2, 3, 4, 0, 0, 5, 6, 7], types


def test_shutdown_packets_wait_the_floor_before_going_again() -> None:
    """On a fast path a lost SHUTDOWN-COMPLETE draws SHUTDOWN-ACKs 0.2, 0.4, 0.8 s apart.

    The round trip's own timeout (about a millisecond here) would resend them
    by the dozen while a busy peer answers late (``session.CONTROL_RETRY_FLOOR``).
    """
    net, client, server, conn, peer = connected_pair(seed=16, link=Link(delay=0.0002))
    server.write(peer, b"z" * 100)  # an acked segment: the listener measures the path
    net.run_until(lambda: peer.session.smoothed_rtt is not None, max_time=5)
    assert peer.session.smoothed_rtt is not None and peer.session.smoothed_rtt < 0.01
    net.trace = True
    net.drop = drop_all("SHUTDOWN_COMPLETE")
    client.close(conn)
    net.run_until(lambda: _closed_both(conn, peer), max_time=120)
    acks = [when for when, _, _, data in net.sent_log if data[0] == 6]
    gaps = [later - earlier for earlier, later in itertools.pairwise(acks)]
    assert len(gaps) >= 3, acks
    # The figures themselves, not the constant: a floor of 0 must fail here.
    for gap, least in zip(gaps, (0.2, 0.4, 0.8), strict=False):
        assert gap >= least - 1e-6, gaps
    assert peer.close_reason is CloseReason.CLEAN
    _settle(net, client, server)
