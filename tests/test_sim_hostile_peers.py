"""
Peers that talk without making progress: bounded time and memory for us.

A hostile (or broken) peer may keep sending packets while acknowledging
nothing; only progress may keep a session alive, as TCP gives up once its
retransmissions go unanswered however chatty the other end is.
"""

from __future__ import annotations

from simnet import Host, SimNet, connected_pair, payload

from mnet_twisted import wire
from mnet_twisted.config import ListenerLimits
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


# -- limits of a listener ------------------------------------------------------------


def _listener(net: SimNet, **limits: int | None) -> Host:
    return net.add_host(
        "10.0.0.2", 5000, accepting=True, name="server", limits=ListenerLimits(**limits)
    )


def test_a_listener_refuses_sessions_beyond_its_cap_and_takes_them_again_later() -> None:
    """Past max_sessions a handshake is answered ABORT (a refusal); a freed place is reused."""
    net = SimNet(seed=74)
    server = _listener(net, max_sessions=3)
    clients = [net.add_host("10.0.1.1", 4000 + n, name=f"c{n}") for n in range(5)]
    conns = [clients[n].connect(server) for n in range(4)]
    net.run_until(lambda: all(c.established or c.closed for c in conns), max_time=10)
    assert [c.established for c in conns] == [True, True, True, False]
    assert conns[3].close_reason is CloseReason.REFUSED
    assert server.demux.sessions_refused == 1 and server.demux.open_sessions == 3
    clients[0].close(conns[0])
    net.run_until(lambda: conns[0].closed, max_time=10)
    late = clients[4].connect(server)
    net.run_until(lambda: late.established or late.closed, max_time=10)
    assert late.established


def test_a_listener_limits_sessions_per_source_address() -> None:
    """One IP gets max_sessions_per_source sessions whatever its ports; other IPs still get in."""
    net = SimNet(seed=75)
    server = _listener(net, max_sessions_per_source=2)
    same_ip = [net.add_host("10.0.1.1", 4000 + n, name=f"c{n}") for n in range(3)]
    other = net.add_host("10.0.1.2", 4000, name="other")
    conns = [host.connect(server) for host in [*same_ip, other]]
    net.run_until(lambda: all(c.established or c.closed for c in conns), max_time=10)
    assert [c.established for c in conns] == [True, True, False, True]


def test_out_of_order_bytes_of_all_sessions_stay_within_the_listener_budget() -> None:
    """Many sessions each filling their own limit with far-ahead data add up to the budget only."""
    budget = 300_000
    net = SimNet(seed=76)
    server = _listener(net, out_of_order_budget=budget)
    clients = [net.add_host("10.0.1.1", 4000 + n, name=f"c{n}") for n in range(8)]
    conns = [host.connect(server) for host in clients]
    net.run_until(lambda: all(c.established for c in conns), max_time=10)
    segment = bytes(60_000)
    for host, conn in zip(clients, conns, strict=True):
        tag = conn.session.local_tag
        for index in range(16):  # far ahead of anything sent: never deliverable
            end = 10_000_000 + (index + 1) * len(segment)
            net.inject(wire.encode_data(tag, wrap(end), wrap(0), segment), host.addr, server)
    net.run_for(0.5)
    held = sum(record.session.receive_buffer_size for record in server.sessions())
    assert server.demux.out_of_order.used == held
    assert 0 < held <= budget
    for host, conn in zip(clients, conns, strict=True):
        host.abort(conn)
    net.run_for(0.5)
    assert server.demux.out_of_order.used == 0  # ended sessions hand their charge back
