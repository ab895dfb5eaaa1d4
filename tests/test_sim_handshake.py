"""The four-way handshake over a simulated network: loss, timeouts, refusal."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from simnet import (
    EPOCH,
    Link,
    SessionRecord,
    drop_all,
    drop_packets,
    pair,
    payload,
)

from mnet_twisted.config import SessionConfig
from mnet_twisted.events import Closed, CloseReason, DataReceived, Established
from mnet_twisted.session import SessionState

HANDSHAKE = ["INIT", "COOKIE", "COOKIE_ECHO", "COOKIE_ACK"]


def _both_established(client_rec: SessionRecord, server: object) -> bool:
    """Both ends past the handshake (a connector announces itself established
    at the COOKIE already, with early data: its state says when the
    listener's answer came)."""
    return client_rec.state is SessionState.ESTABLISHED and any(
        r.established
        for r in server.order  # type: ignore[attr-defined]
    )


def test_clean_handshake_is_four_packets() -> None:
    """Without loss the handshake is exactly INIT, COOKIE, COOKIE-ECHO, COOKIE-ACK."""
    net, client, server = pair(seed=1)
    net.trace = True
    conn = client.connect(server)
    took = net.run_until(lambda: _both_established(conn, server), max_time=5)
    kinds = [d[3][0] for d in net.sent_log]
    assert kinds == [1, 2, 3, 4]
    assert took < 0.05
    assert conn.event_types() == [Established]
    peer = server.only_session()
    assert peer.event_types() == [Established]
    assert conn.session.peer_tag == peer.session.local_tag
    assert peer.session.peer_tag == conn.session.local_tag
    assert conn.session.is_connector and not peer.session.is_connector
    assert len(client.demux) == 1 and len(server.demux) == 1


@pytest.mark.parametrize("lost", [[1], [1, 2], [1, 2, 3]], ids=["once", "twice", "thrice"])
@pytest.mark.parametrize("kind", HANDSHAKE)
def test_handshake_survives_loss_of_each_packet(kind: str, lost: list[int]) -> None:
    """Losing INIT, COOKIE, COOKIE-ECHO or COOKIE-ACK (once or repeatedly) still connects."""
    net, client, server = pair(seed=2)
    net.drop = drop_packets(kind, lost)
    conn = client.connect(server)
    took = net.run_until(
        lambda: _both_established(conn, server), max_time=client.config.connect_timeout
    )
    assert took < client.config.connect_timeout
    assert net.stats.filtered == len(lost)
    assert net.stats.by_type[kind] >= len(lost) + 1, "the lost packet was re-sent"
    peer = server.only_session()
    assert conn.event_types() == [Established]
    assert peer.event_types() == [Established]
    assert len(server.demux) == 1, "a retransmitted echo must not create a second session"
    # The session works: a message crosses it.
    message = payload(5000, seed=3)
    client.write(conn, message)
    net.run_until(lambda: bytes(peer.received) == message, max_time=5)


def test_echo_lost_past_its_tries_starts_over_with_init() -> None:
    """When every COOKIE-ECHO try is lost the connector starts over with INIT and connects."""
    net, client, server = pair(seed=3)
    tries = client.config.cookie_echo_tries
    net.drop = drop_packets("COOKIE_ECHO", range(1, tries + 1))
    conn = client.connect(server)
    net.run_until(lambda: _both_established(conn, server), max_time=client.config.connect_timeout)
    assert net.stats.by_type["INIT"] >= 2
    assert net.stats.by_type["COOKIE_ECHO"] == tries + 1
    assert len(server.demux) == 1


@pytest.mark.parametrize("seed", range(8))
def test_handshake_under_random_loss(seed: int) -> None:
    """With 20 % loss, duplication and reordering both ways the handshake completes once."""
    link = Link(loss=0.2, duplicate=0.2, reorder=0.3, jitter=0.003)
    net, client, server = pair(seed=seed, link=link)
    conn = client.connect(server)
    net.run_until(lambda: _both_established(conn, server), max_time=client.config.connect_timeout)
    peer = server.only_session()
    assert peer.event_types() == [Established]
    assert conn.event_types() == [Established]


def test_nothing_answers_connect_timeout() -> None:
    """INIT into the void ends in Closed(CONNECT_TIMEOUT) after about connect_timeout."""
    net, client, _ = pair(seed=4)
    conn = client.connect(("10.0.0.99", 9))
    start = net.now
    net.run_until(lambda: conn.closed, max_time=client.config.connect_timeout + 5)
    assert conn.close_reason is CloseReason.CONNECT_TIMEOUT
    elapsed = conn.closed_at - start  # type: ignore[operator]
    timeout = client.config.connect_timeout
    assert timeout - 0.01 <= elapsed <= timeout + 0.5
    assert net.stats.by_type["INIT"] >= 4, "INIT is retried"
    assert conn.event_types() == [Closed]
    net.run_until_idle(max_time=30)
    assert len(client.demux) == 0


def test_connect_timeout_is_configurable() -> None:
    """A shorter connect_timeout in the session's config is honoured."""
    config = SessionConfig(connect_timeout=2.5)
    net, client, _ = pair(seed=5, config=config)
    conn = client.connect(("10.0.0.99", 9))
    start = net.now
    net.run_until(lambda: conn.closed, max_time=10)
    assert conn.close_reason is CloseReason.CONNECT_TIMEOUT
    assert 2.5 - 0.01 <= conn.closed_at - start <= 3.0  # type: ignore[operator]


def test_init_retries_back_off() -> None:
    """INIT retries start at handshake_retry_interval and grow, capped at the maximum."""
    net, client, _ = pair(seed=6)
    net.trace = True
    client.connect(("10.0.0.99", 9))
    net.run_for(client.config.connect_timeout + 1)
    times = [t - EPOCH for t, _, _, d in net.sent_log if d[0] == 1]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps, times
    assert abs(gaps[0] - client.config.handshake_retry_interval) < 1e-6
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(gaps)), gaps
    assert max(gaps) <= client.config.handshake_max_retry_interval + 1e-6


def test_lost_echoes_until_timeout_leave_no_session() -> None:
    """If no COOKIE-ECHO ever arrives the connector times out and the listener holds nothing."""
    net, client, server = pair(seed=7)
    net.drop = drop_all("COOKIE_ECHO")
    conn = client.connect(server)
    net.run_until(lambda: conn.closed, max_time=client.config.connect_timeout + 2)
    assert conn.close_reason is CloseReason.CONNECT_TIMEOUT
    assert len(server.demux) == 0
    assert server.order == []


def test_lost_acks_until_timeout_release_the_listener_session() -> None:
    """If every COOKIE-ACK is lost and no data flows, both ends end up with no session."""
    net, client, server = pair(seed=8)
    net.drop = drop_all("COOKIE_ACK")
    conn = client.connect(server)
    net.run_until(lambda: conn.closed, max_time=client.config.connect_timeout + 2)
    assert conn.close_reason is CloseReason.CONNECT_TIMEOUT
    peer = server.only_session()
    net.run_until(lambda: peer.closed, max_time=server.config.peer_timeout + 5)
    assert peer.close_reason in (CloseReason.ABORTED_BY_PEER, CloseReason.PEER_TIMEOUT)
    net.run_until(lambda: len(server.demux) == 0 and len(client.demux) == 0, max_time=30)


def test_listener_not_accepting_refuses() -> None:
    """A listener that does not accept answers ABORT, and the connector closes REFUSED."""
    net, client, _ = pair(seed=9)
    closed_server = net.add_host("10.0.0.3", 6000, accepting=False, name="closed")
    conn = client.connect(closed_server)
    took = net.run_until(lambda: conn.closed, max_time=5)
    assert conn.close_reason is CloseReason.REFUSED
    assert took < 0.05, "refusal is one round trip, not a timeout"
    assert len(closed_server.demux) == 0
    assert conn.event_types() == [Closed]


def test_refusal_survives_lost_abort() -> None:
    """If the refusing ABORT is lost, the retried INIT is refused again."""
    net, client, _ = pair(seed=10)
    closed_server = net.add_host("10.0.0.3", 6000, accepting=False, name="closed")
    net.drop = drop_packets("ABORT", [1])
    conn = client.connect(closed_server)
    net.run_until(lambda: conn.closed, max_time=5)
    assert conn.close_reason is CloseReason.REFUSED
    assert net.stats.by_type["INIT"] == 2


def test_data_before_lost_cookie_ack_establishes() -> None:
    """DATA from the listener establishes the connector even if every COOKIE-ACK is lost."""
    net, client, server = pair(seed=11)
    greeting = payload(3000, seed=11)

    def greet(record: SessionRecord) -> None:
        record.pending += greeting

    server.on_new_session = greet
    net.drop = drop_all("COOKIE_ACK")
    conn = client.connect(server)
    net.run_until(lambda: bytes(conn.received) == greeting, max_time=5)
    assert net.stats.by_type["COOKIE_ACK"] >= 1 and net.stats.filtered >= 1
    types = conn.event_types()
    assert types[0] is Established and set(types[1:]) == {DataReceived}
    assert conn.state.name == "ESTABLISHED"
    # The other direction works too.
    reply = payload(2000, seed=12)
    client.write(conn, reply)
    peer = server.only_session()
    net.run_until(lambda: bytes(peer.received) == reply, max_time=5)


def test_two_connections_from_one_host_are_distinct() -> None:
    """Two sessions from the same connector port to one listener get distinct tags and data."""
    net, client, server = pair(seed=12)
    a = client.connect(server)
    b = client.connect(server)
    net.run_until(lambda: a.established and b.established and len(server.order) == 2, max_time=5)
    assert a.session.local_tag != b.session.local_tag
    server.order[0].echo = server.order[1].echo = True
    ma, mb = payload(10_000, seed=1), payload(10_000, seed=2)
    client.write(a, ma)
    client.write(b, mb)
    net.run_until(lambda: bytes(a.received) == ma and bytes(b.received) == mb, max_time=5)


def test_connect_with_per_session_config() -> None:
    """connect() honours a per-session config (here a short connect timeout)."""
    net, client, _ = pair(seed=13)
    conn = client.connect(
        ("10.0.0.99", 9), config=dataclasses.replace(client.config, connect_timeout=1.5)
    )
    start = net.now
    net.run_until(lambda: conn.closed, max_time=10)
    assert conn.close_reason is CloseReason.CONNECT_TIMEOUT
    assert conn.closed_at - start <= 2.0  # type: ignore[operator]


def test_close_before_established_still_closes() -> None:
    """close() during the handshake ends the session cleanly once established, no data lost."""
    net, client, server = pair(seed=14)
    server.echo_new_sessions = False
    conn = client.connect(server)
    conn.session.send(b"early bytes")
    client.close(conn)
    net.run_until(lambda: conn.closed, max_time=10)
    peer = server.only_session()
    net.run_until(lambda: peer.closed, max_time=10)
    assert conn.close_reason is CloseReason.CLEAN
    assert peer.close_reason is CloseReason.CLEAN
    assert bytes(peer.received) == b"early bytes"


def test_destination_unreachable_refuses_a_handshake_but_not_a_session() -> None:
    """An ICMP-style report refuses a connection attempt, and is ignored once established."""
    net, client, server = pair(seed=31)
    nowhere = client.connect(("10.0.0.77", 9))
    net.run_for(0.1)
    client.demux.destination_unreachable(("10.0.0.77", 9), net.now)
    net.flush()
    assert nowhere.close_reason is CloseReason.REFUSED
    live = client.connect(server)
    net.run_until(lambda: live.established, max_time=5)
    client.demux.destination_unreachable(server.addr, net.now)
    net.flush()
    assert not live.closed
