"""
Early data (``SessionConfig.early_data``): a connector established at the
COOKIE, its first DATA right behind the COOKIE-ECHO.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from simnet import (
    Link,
    SessionRecord,
    SimNet,
    drop_all,
    drop_packets,
    echo_round,
    pair,
    payload,
)
from test_demux_bad_input import Driver

from mnet_twisted import wire
from mnet_twisted.config import ListenerLimits, SessionConfig
from mnet_twisted.events import Closed, CloseReason, DataReceived, Established
from mnet_twisted.session import SessionState

EARLY = SessionConfig(early_data=True)
ONE_WAY = 0.01


def test_early_data_is_established_in_one_round_trip() -> None:
    """Established at the COOKIE; the message follows the echo, nothing is refused."""
    net, client, server = pair(seed=1, link=Link(delay=ONE_WAY), config=EARLY)
    net.trace = True
    server.echo_new_sessions = True
    conn = client.connect(server)
    took = net.run_until(lambda: conn.established, max_time=5)
    assert took < 2 * ONE_WAY * 1.5, "one round trip, not two"
    assert conn.state is SessionState.COOKIE_ECHOED
    message = payload(3000, seed=1)
    client.write(conn, message)
    net.run_until(lambda: bytes(conn.received) == message, max_time=5)
    types = [data[0] for _, _, _, data in net.sent_log]
    assert types[:4] == [1, 2, 3, 0], types  # INIT, COOKIE, COOKIE-ECHO, then DATA
    assert net.stats.by_type["ABORT"] == 0
    assert conn.state is SessionState.ESTABLISHED
    assert conn.event_types().count(Established) == 1
    assert server.only_session().event_types()[0] is Established


def test_early_data_survives_a_lost_echo() -> None:
    """The DATA arrives without its echo: the ABORT it draws only holds it back."""
    net, client, server = pair(seed=2, link=Link(delay=ONE_WAY), config=EARLY)
    net.drop = drop_packets("COOKIE_ECHO", [1])
    server.echo_new_sessions = True
    conn = client.connect(server)
    net.run_until(lambda: conn.established, max_time=5)
    message = payload(5000, seed=2)
    client.write(conn, message)
    took = net.run_until(lambda: bytes(conn.received) == message, max_time=5)
    assert net.stats.by_type["ABORT"] >= 1, "the lone DATA was answered with ABORT"
    # Resent as soon as the echo is answered, not after a probe timeout each:
    # the echo's round trip again, then the message's.
    assert took < 3 * 2 * ONE_WAY * 1.2, took
    assert conn.session.stats().retransmissions == 4  # the four early segments, once
    assert not conn.closed
    assert conn.event_types().count(Established) == 1
    assert len(server.demux) == 1


def test_early_data_gives_up_at_the_connect_timeout_when_no_echo_arrives() -> None:
    """With data sent under the cookie the connector does not start over: it times out."""
    config = dataclasses.replace(EARLY, connect_timeout=3.0)
    net, client, server = pair(seed=3, link=Link(delay=ONE_WAY), config=config)
    net.drop = drop_all("COOKIE_ECHO")
    conn = client.connect(server)
    net.run_until(lambda: conn.established, max_time=5)
    client.write(conn, b"hello")
    net.run_until(lambda: conn.closed, max_time=10)
    assert conn.close_reason is CloseReason.CONNECT_TIMEOUT
    assert net.stats.by_type["INIT"] == 1, "no fresh INIT once the stream began"
    assert len(server.demux) == 0


def test_listener_takes_an_echo_and_the_data_behind_it_in_one_batch() -> None:
    """Handshakes wait for the end of a read batch; early DATA must not overtake its echo."""
    driver = Driver()
    cookie = driver.cookie_for(b"abc")
    listener_tag = cookie[1:4]
    driver.demux.receive_datagram(b"\x03" + cookie[1:], ("192.0.2.10", 40000), 1.0)
    data = wire.encode_data(b"abc", 5, 0, b"hello")
    driver.demux.receive_datagram(data, ("192.0.2.10", 40000), 1.0)
    out = [d for d, _ in driver.drain(1.0)]
    assert b"\x04" + listener_tag in out
    assert not any(d[0] == wire.PacketType.ABORT for d in out), out
    events = [e for _, e in driver.events]
    assert [type(e) for e in events] == [Established, DataReceived]
    assert events[1].data == b"hello"  # type: ignore[attr-defined]


def test_early_data_to_a_reference_listener() -> None:
    """A reference listener ignores DATA before the echo; ours gets everything across."""
    from test_interop_reference import THEIRS, Harness

    for seed, loss in [(11, 0.0), (12, 0.05)]:
        harness = Harness(seed, loss, accepting=False)
        data = random.Random(seed).randbytes(20_000)
        session = harness.ours.connect(THEIRS, harness.now, config=EARLY)
        harness.theirs.peer = None

        def established(s: object, data: bytes = data) -> None:
            s.send(data)  # type: ignore[attr-defined]

        def received(s: object, _: bytes, data: bytes = data, h: Harness = harness) -> None:
            if len(h.received[s]) == len(data):  # type: ignore[index]
                s.close(h.now)  # type: ignore[attr-defined]

        harness.on_established = established
        harness.on_data = received
        harness.run_until(lambda h=harness, s=session: s in h.closed and h.theirs.done)
        assert bytes(harness.theirs.received) == data
        assert bytes(harness.received[session]) == data
        assert harness.closed[session].reason is CloseReason.CLEAN


def test_a_full_listener_refuses_early_data_at_the_init() -> None:
    """A listener at its cap answers the INIT with ABORT: connect() fails, as without."""
    net = SimNet(seed=4, link=Link(delay=ONE_WAY))
    client = net.add_host("10.0.0.1", 4000, config=EARLY, name="client")
    server = net.add_host(
        "10.0.0.2", 5000, accepting=True, name="server", limits=ListenerLimits(max_sessions=1)
    )
    first = net.add_host("10.0.0.3", 4000, name="first").connect(server)
    net.run_until(lambda: first.state is SessionState.ESTABLISHED, max_time=5)
    conn = client.connect(server)
    took = net.run_until(lambda: conn.closed, max_time=5)
    assert conn.close_reason is CloseReason.REFUSED
    assert Established not in conn.event_types()
    assert took < 2 * ONE_WAY * 1.5, "refused at the INIT, one round trip"
    assert net.stats.by_type["COOKIE"] == 1  # the first session's only


def test_a_listener_filled_after_the_cookie_ends_an_early_session() -> None:
    """The price of early data: room taken between COOKIE and echo ends the
    session after Established, as a close rather than a failed connect()."""
    net = SimNet(seed=5, link=Link(delay=ONE_WAY))
    client = net.add_host("10.0.0.1", 4000, config=EARLY, name="client")
    other = net.add_host("10.0.0.3", 4000, name="other")
    server = net.add_host(
        "10.0.0.2", 5000, accepting=True, name="server", limits=ListenerLimits(max_sessions=1)
    )
    net.drop = drop_packets("COOKIE_ECHO", [1], src=client)

    def write_when_established(record: SessionRecord, event: object) -> None:
        if isinstance(event, Established):
            record.session.send(b"early")

    client.on_event = write_when_established
    conn = client.connect(server)
    net.run_for(0.002)
    rival = other.connect(server)  # its echo arrives before ours is sent again
    net.run_until(lambda: conn.closed, max_time=5)
    assert rival.state is SessionState.ESTABLISHED
    assert conn.close_reason is CloseReason.REFUSED
    assert conn.event_types() == [Established, Closed]
    assert len(server.demux) == 1


def test_listener_takes_an_echo_before_the_abort_behind_it_in_one_batch() -> None:
    """An early session aborted at once: its ABORT follows the echo in one batch
    and must end the session the echo makes, not reach a stranger's ear."""
    driver = Driver()
    cookie = driver.cookie_for(b"abc")
    driver.demux.receive_datagram(b"\x03" + cookie[1:], ("192.0.2.10", 40000), 1.0)
    driver.demux.receive_datagram(b"\x08abc", ("192.0.2.10", 40000), 1.0)
    driver.drain(1.0)
    events = [e for _, e in driver.events]
    assert [type(e) for e in events] == [Established, Closed]
    assert events[1].reason is CloseReason.ABORTED_BY_PEER  # type: ignore[attr-defined]
    assert driver.demux.open_sessions == 0


@pytest.mark.parametrize("seed", range(12))
def test_early_data_under_loss_duplication_and_reordering(seed: int) -> None:
    """Whatever happens to the handshake, every byte arrives once, in order,
    and both ends close cleanly with one session each."""
    link = Link(delay=0.005, jitter=0.003, loss=0.15, duplicate=0.1, reorder=0.2)
    net, conn, server = echo_round(seed, link, EARLY)
    message = payload(40_000, seed=seed)
    assert bytes(conn.received) == message
    assert conn.close_reason is CloseReason.CLEAN
    peer = server.only_session()
    net.run_until(lambda: peer.closed, max_time=30)
    assert peer.close_reason is CloseReason.CLEAN
    assert bytes(peer.received) == message


def test_early_data_the_pacer_holds_back_leaves_on_its_time() -> None:
    """With an initial window larger than the pacer's first burst, the rest of
    the first flight leaves as the pacer allows, before any COOKIE-ACK or ack
    (here every COOKIE-ACK is lost), not a round trip later."""
    config = dataclasses.replace(EARLY, initial_window_segments=32)
    net, client, server = pair(seed=1, link=Link(delay=ONE_WAY), config=config)
    net.drop = drop_all("COOKIE_ACK")
    conn = client.connect(server)
    net.run_until(lambda: conn.established, max_time=5)
    size = 32 * 1438
    client.write(conn, payload(size, seed=1))
    took = net.run_until(
        lambda: bool(server.order) and len(server.order[0].received) == size, max_time=5
    )
    # One way plus the pacer's spacing: 17 ms here.  Without the pacer's
    # deadline the held segments waited for the listener's first ack: 33 ms.
    assert took < 2.5 * ONE_WAY, took


def test_an_unreachable_report_after_the_cookie_does_not_refuse_early_data() -> None:
    """The COOKIE came from the port: an ICMP-style report after it (easy to
    spoof) must not end a connection the application already has."""
    net, client, server = pair(seed=6, link=Link(delay=ONE_WAY), config=EARLY)
    conn = client.connect(server)
    net.run_until(lambda: conn.established, max_time=5)
    assert conn.state is SessionState.COOKIE_ECHOED
    client.demux.destination_unreachable(server.addr, net.now)
    net.flush()
    assert not conn.closed
    net.run_until(lambda: conn.state is SessionState.ESTABLISHED, max_time=5)
