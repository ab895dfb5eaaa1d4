"""
Peers that talk without making progress: bounded time and memory for us.

A hostile (or broken) peer may keep sending packets while acknowledging
nothing; only progress may keep a session alive, as TCP gives up once its
retransmissions go unanswered however chatty the other end is.
"""

from __future__ import annotations

from simnet import connected_pair, payload

from mnet_twisted import wire
from mnet_twisted.events import CloseReason
from mnet_twisted.seqnum import wrap


def _stale_ack_from(record, ack: int) -> bytes:  # type: ignore[no-untyped-def]
    """A pure ack from ``record``'s session that acknowledges only up to ``ack``."""
    session = record.session
    return wire.encode_data(session.local_tag, wrap(session._sender.snd_max), wrap(ack), b"")


def _dead_bound(config) -> float:  # type: ignore[no-untyped-def]
    return config.peer_timeout + (config.dead_peer_retransmissions + 1) * config.max_rto


def test_a_peer_that_keeps_talking_but_never_acknowledges_is_declared_dead() -> None:
    """Pure acks that acknowledge nothing, twice a second, do not keep a stalled session alive."""
    net, client, server, conn, peer = connected_pair(seed=71)
    origin = client.config.stream_origin
    client.write(conn, payload(50_000, seed=71))
    # The peer takes none of it (its datagrams never arrive there) ...
    net.drop = lambda data, src, dst: src == client.addr
    # ... yet keeps answering with acks of nothing.
    started = net.now
    while not conn.closed and net.now - started < 3 * _dead_bound(client.config):
        net.inject(_stale_ack_from(peer, origin), server.addr, client)
        net.run_for(0.5)
    assert conn.closed, "a peer that never acknowledged kept the session alive"
    assert conn.close_reason is CloseReason.PEER_TIMEOUT
    assert conn.closed_at - started <= _dead_bound(client.config) + 1  # type: ignore[operator]


def test_an_idle_session_takes_any_answer_as_life() -> None:
    """Nothing of ours outstanding: a keep-alive's answer acknowledges nothing, and counts."""
    net, client, _server, conn, peer = connected_pair(seed=73)
    message = payload(1_000, seed=73)
    client.write(conn, message)
    net.run_until(lambda: bytes(peer.received) == message, max_time=5)
    assert client.config.keepalive_interval is not None
    net.run_for(10 * client.config.keepalive_interval)
    assert not conn.closed and not peer.closed
