"""Idle sessions: keep-alive probes find vanished peers and cost a live peer nothing visible."""

from __future__ import annotations

from simnet import connected_pair, drop_all, packet_name, payload

from mnet_twisted import wire
from mnet_twisted.config import SessionConfig
from mnet_twisted.events import CloseReason


def _idle_dead_bound(config: SessionConfig) -> float:
    """Silence before probing, then the dead-peer rule's worst case."""
    assert config.keepalive_interval is not None
    return (
        config.keepalive_interval
        + config.peer_timeout
        + (config.dead_peer_retransmissions + 1) * config.max_rto
    )


def test_idle_peer_that_vanishes_is_declared_dead() -> None:
    """An idle session whose peer disappears closes PEER_TIMEOUT within a bounded time."""
    net, client, server, conn, _peer = connected_pair(seed=41)
    config = client.config
    server.stopped = True
    stopped_at = net.now
    net.run_until(lambda: conn.closed, max_time=_idle_dead_bound(config) + 5)
    assert conn.close_reason is CloseReason.PEER_TIMEOUT
    assert config.keepalive_interval is not None
    took = conn.closed_at - stopped_at  # type: ignore[operator]
    assert config.keepalive_interval <= took <= _idle_dead_bound(config), took


def test_probes_keep_a_live_idle_session_without_duplicating_data() -> None:
    """Probes to a live peer are answered, deliver nothing twice, and cost a few packets."""
    net, client, _server, conn, peer = connected_pair(seed=42)
    message = payload(10_000, seed=42)
    client.write(conn, message)
    net.run_until(lambda: bytes(peer.received) == message, max_time=5)
    before = net.stats.by_type["DATA"]
    idle = 150.0
    net.run_for(idle)
    assert not conn.closed and not peer.closed
    assert bytes(peer.received) == message  # the probe's byte was a duplicate
    interval = client.config.keepalive_interval
    assert interval is not None
    probes_and_acks = net.stats.by_type["DATA"] - before
    rounds = idle / interval
    assert rounds <= probes_and_acks <= 4 * (rounds + 1), probes_and_acks
    # And the session still works afterwards, both ways.
    reply = payload(5_000, seed=43)
    _server.write(peer, reply)
    net.run_until(lambda: bytes(conn.received) == reply, max_time=5)


def test_probe_is_a_one_byte_duplicate_of_the_stream_end() -> None:
    """A probe is DATA carrying the last byte its sender sent, ending at its stream's end."""
    net, client, _server, conn, peer = connected_pair(seed=44)
    message = b"hello, idle world"
    client.write(conn, message)
    net.run_until(lambda: bytes(peer.received) == message, max_time=5)
    # What each side's probe must look like: (end of its stream, its last byte).
    expected = {client.addr: (len(message), message[-1:]), _server.addr: (0, b"\x00")}
    probes: list[tuple[tuple[str, int], wire.Data]] = []

    def record(data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        if packet_name(data) == "DATA":
            packet = wire.parse(data)
            assert isinstance(packet, wire.Data)
            if packet.payload:
                probes.append((src, packet))
        return False

    net.drop = record
    net.run_for(2 * client.config.keepalive_interval)  # type: ignore[operator]
    assert probes, "no probe was sent"
    for src, packet in probes:
        assert (packet.seq, packet.payload) == expected[src]
    assert bytes(peer.received) == message and not bytes(conn.received)


def test_keepalive_can_be_disabled() -> None:
    """With keepalive_interval=None an idle session sends nothing and is never timed out."""
    config = SessionConfig(keepalive_interval=None)
    net, _client, server, conn, _peer = connected_pair(seed=45, config=config)
    server.stopped = True
    before = net.stats.sent
    net.run_for(300)
    assert not conn.closed
    assert net.stats.sent == before


def test_listener_reclaims_a_session_its_connector_gave_up_on() -> None:
    """If every COOKIE-ACK and the connector's ABORT are lost, the listener still cleans up."""
    config = SessionConfig(connect_timeout=3.0)
    net, client, server, conn, _peer = connected_pair(seed=46, config=config)
    # Start over with a connection whose handshake cannot finish.
    net.drop = lambda data, src, dst: (
        packet_name(data) in ("COOKIE_ACK", "DATA")
        or drop_all("ABORT", src=client)(data, src, dst)
    )
    attempt = client.connect(server)
    net.run_until(lambda: attempt.closed, max_time=10)
    assert attempt.close_reason is CloseReason.CONNECT_TIMEOUT
    orphan = [
        record for record in server.order if record.session.peer_tag == attempt.session.local_tag
    ]
    assert orphan and orphan[0].established
    net.drop = drop_all("ABORT", src=client)
    net.run_until(lambda: orphan[0].closed, max_time=_idle_dead_bound(server.config) + 5)
    assert orphan[0].close_reason in (CloseReason.PEER_TIMEOUT, CloseReason.ABORTED_BY_PEER)
    assert not conn.closed  # the other session between the same hosts is untouched
