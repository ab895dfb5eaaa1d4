"""
What an operator sees: each transport's statistics snapshot, the listening
port's totals, and one structured log event per session end.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from conftest import Collector, EchoProtocol, within
from simnet import Link, connected_pair, payload
from twisted.internet.protocol import Factory
from twisted.logger import LogLevel, globalLogPublisher

from mnet_twisted import wire
from mnet_twisted.protocol import ListenerStats
from mnet_twisted.session import SessionStats


def test_receiver_counts_duplicate_and_out_of_order_segments() -> None:
    """On a lossy, duplicating path the receiving session counts what came early or twice."""
    link = Link(loss=0.05, duplicate=0.05)
    net, client, _server, conn, peer = connected_pair(seed=81, link=link)
    data = payload(300_000, seed=81)
    client.write(conn, data)
    net.run_until(lambda: bytes(peer.received) == data, max_time=60)
    stats = peer.session.stats()
    assert isinstance(stats, SessionStats)
    assert stats.out_of_order_segments > 0 and stats.duplicate_segments > 0
    assert stats.bytes_received == len(data)
    net.run_until(lambda: conn.session.send_buffer_size == 0, max_time=10)
    sent = conn.session.stats()
    assert sent.bytes_sent == sent.bytes_acknowledged == len(data)
    assert sent.retransmissions > 0 and sent.datagrams_sent > sent.retransmissions


@pytest_twisted.ensureDeferred
async def test_transport_and_port_statistics(mnet) -> None:
    port = await mnet.listen(Factory.forProtocol(EchoProtocol))
    client = await mnet.connect(port, Factory.forProtocol(Collector))
    client.transport.write(b"x" * 5000)
    await mnet.waitFor(lambda: client.received == b"x" * 5000)
    stats = client.transport.getStats()
    assert isinstance(stats, SessionStats)
    assert stats.state == "established"
    assert stats.bytes_sent == stats.bytes_acknowledged == stats.bytes_received == 5000
    assert stats.datagrams_sent >= 4 and stats.datagrams_received >= 4
    assert stats.smoothed_rtt is not None and stats.smoothed_rtt > 0
    assert stats.congestion_window > 0 and stats.datagram_size >= 1452
    assert stats.send_buffer == 0 and stats.retransmissions == 0

    # Strangers: a forged cookie echo, and DATA with a tag nobody owns.
    address = (port.getHost().host, port.getHost().port)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.sendto(bytes([wire.PacketType.COOKIE_ECHO]) + bytes(31), address)
        stranger.sendto(wire.encode_data(b"\x0f\x0e\x0d", 1, 0, b"?"), address)
        await mnet.waitFor(lambda: port.getStats().aborts_sent == 1)
    finally:
        stranger.close()
    totals = port.getStats()
    assert isinstance(totals, ListenerStats)
    assert totals.sessions_open == totals.sessions_accepted == 1
    assert totals.cookies_rejected == 1
    assert totals.datagrams_received > 4 and totals.datagrams_sent > 4
    assert totals.sessions_refused == totals.handshakes_dropped == totals.send_errors == 0
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_an_echo_session_keeps_its_initial_window(mnet) -> None:
    """Small messages one round trip apart prove no larger window (RFC 9002 7.8).

    Before, each ack of 64 bytes grew the window by 64 in slow start, until
    an interactive session held the largest window and could burst it all.
    """
    port = await mnet.listen(Factory.forProtocol(EchoProtocol))
    client = await mnet.connect(port, Factory.forProtocol(Collector))
    initial = client.transport.getStats().congestion_window
    for count in range(1, 201):
        client.transport.write(b"m" * 64)
        await mnet.waitFor(lambda count=count: len(client.received) == 64 * count)
    stats = client.transport.getStats()
    assert stats.bytes_acknowledged == 64 * 200
    assert stats.congestion_window == initial
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_each_session_end_is_one_structured_log_event(mnet) -> None:
    """Fields a JSON observer can use: who, why, and the session's statistics.

    With ``logSessions`` on both ends, the ordinary openings and ends are
    logged too, at debug level.
    """
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        port = await mnet.listen(Factory.forProtocol(EchoProtocol), logSessions=True)
        clean = await mnet.connect(port, Factory.forProtocol(Collector), logSessions=True)
        clean.transport.write(b"hello")
        await mnet.waitFor(lambda: clean.received == b"hello")
        clean.transport.loseConnection()
        aborted = await mnet.connect(port, Factory.forProtocol(Collector), logSessions=True)
        aborted.transport.abortConnection()

        def ends(reason: str) -> list[dict[str, Any]]:
            return [e for e in seen if e.get("reason") == reason and "stats" in e]

        await mnet.waitFor(lambda: len(ends("clean")) == 2 and ends("aborted by peer"))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    server_clean = [e for e in ends("clean") if e["stats"]["bytes_received"] == 5]
    assert server_clean and server_clean[0]["log_level"] is LogLevel.debug
    (by_peer,) = ends("aborted by peer")
    assert by_peer["log_level"] is LogLevel.info
    assert by_peer["why"] == "aborted by the peer" and by_peer["peerHost"] == "127.0.0.1"
    opened = [e for e in seen if e.get("how") in ("accepted", "connected")]
    assert len(opened) == 4  # both ends of both sessions
    await within(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_by_default_only_ends_that_went_wrong_are_logged(mnet) -> None:
    """As Twisted logs no event per TCP connection, no debug event per session
    unless asked; a peer's abort is still reported."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        port = await mnet.listen(Factory.forProtocol(EchoProtocol))
        clean = await mnet.connect(port, Factory.forProtocol(Collector))
        clean.transport.write(b"hello")
        await mnet.waitFor(lambda: clean.received == b"hello")
        clean.transport.loseConnection()
        await mnet.waitFor(lambda: port.getStats().sessions_open == 0)
        aborted = await mnet.connect(port, Factory.forProtocol(Collector))
        aborted.transport.abortConnection()
        await mnet.waitFor(lambda: any(e.get("reason") == "aborted by peer" for e in seen))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    sessions = [e for e in seen if "how" in e or "reason" in e]
    assert [(e["reason"], e["log_level"]) for e in sessions] == [
        ("aborted by peer", LogLevel.info)
    ]
    await within(port.stopListening())
