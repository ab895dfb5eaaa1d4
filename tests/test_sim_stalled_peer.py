"""
Many sessions with one peer whose process stalls (``mnet_twisted.peerprogress``).

Every session's probe timeout expires during the stall; one copy per
backoff step goes out to the silent peer, not one per session, and every
message still arrives once the peer reads again.
"""

from __future__ import annotations

from simnet import Link, pair

from mnet_twisted.config import SessionConfig
from mnet_twisted.events import CloseReason
from mnet_twisted.peerprogress import PeerProgress
from mnet_twisted.sender import StreamSender
from mnet_twisted.seqnum import wrap

SESSIONS = 40
STALL = 0.05


def _echo_sessions(sessions: int) -> tuple[object, object, list[object]]:
    net, client, server = pair(seed=5, link=Link(delay=0.0001, rate=100e6))
    records = [client.connect(server) for _ in range(sessions)]
    net.run_until(
        lambda: all(r.established for r in records) and len(server.order) == sessions,
        max_time=5,
        what="handshakes",
    )
    for record in server.order:
        record.echo = True
    for record in records:  # one exchange each: every session has an RTT estimate
        client.write(record, b"a" * 64)
    net.run_until(lambda: all(len(r.received) == 64 for r in records), what="first echoes")
    return net, server, records


def test_a_stalled_peer_gets_a_copy_per_backoff_step_not_one_per_session() -> None:
    net, server, records = _echo_sessions(SESSIONS)
    net.hold_arrivals(server, net.now, STALL)  # the peer's process stops reading
    for record in records:
        record.host.write(record, b"b" * 64)
    net.run_until(lambda: all(len(r.received) == 128 for r in records), max_time=5, what="echoes")
    assert all(bytes(r.received) == b"a" * 64 + b"b" * 64 for r in records)
    stats = [r.session.recovery_stats() for r in records]
    resent = sum(s["retransmissions"] for s in stats)
    deferred = sum(s["deferred_timeouts"] for s in stats)
    # A probe timeout of about a millisecond, doubled per expiry: some six
    # steps in 50 ms.  Each session on its own resent at every step.
    assert resent <= 10, resent
    assert deferred >= SESSIONS - 1


def test_a_session_alone_with_its_peer_never_waits_for_itself() -> None:
    """One session per peer address: timeouts behave exactly as without the shared record."""
    net, server, (record,) = _echo_sessions(1)
    net.hold_arrivals(server, net.now, STALL)
    record.host.write(record, b"b" * 64)
    net.run_until(lambda: len(record.received) == 128, max_time=5, what="echo")
    stats = record.session.recovery_stats()
    assert stats["deferred_timeouts"] == 0 and stats["retransmissions"] >= 3


def _sender(peer: PeerProgress) -> StreamSender:
    sender = StreamSender(SessionConfig(pacing=False, path_mtu_discovery=False), peer)
    sender.rtt.add_sample(0.001)
    return sender


def test_the_rule_waits_only_for_another_sessions_copy_to_a_silent_peer() -> None:
    peer = PeerProgress()
    first, second = _sender(peer), _sender(peer)
    for sender, now in ((first, 0.0), (second, 0.0001)):
        sender.write(b"x" * 100)
        assert sender.transmit(now)
    expiry = first.pto_deadline or 0.0
    resent, timed_out = first.on_timer(expiry)
    assert timed_out and resent  # the first to expire probes the silent peer
    now = second.pto_deadline or 0.0
    assert now < peer.probing_until
    assert second.on_timer(now) == ([], True)  # counted, for the dead-peer rule
    assert second.pto_deadline == peer.probing_until
    assert second.stats.deferred_timeouts == 1 and second.stats.retransmissions == 0
    # A session never waits for its own copy: the prober goes on backing off.
    assert first.on_timer(first.pto_deadline or 0.0)[0]
    # The peer answered something sent after the waiting session's data: that
    # data is taken for lost when its timeout comes, whoever probes.
    peer.answered(0.0002)
    assert second.on_timer(second.pto_deadline or 0.0)[0]
    assert second.stats.retransmissions == 1


def test_duplicate_acks_show_a_peer_reading_on_and_nobody_waits() -> None:
    peer = PeerProgress()
    first, second = _sender(peer), _sender(peer)
    first.write(b"x" * 100)
    first.transmit(0.0)
    second.write(b"y" * 5000)
    second.transmit(0.0001)
    first.on_timer(first.pto_deadline or 0.0)
    second.on_ack(wrap(0), 0.0002, pure=True)  # a segment past second's hole arrived
    now = second.pto_deadline or 0.0
    assert now < peer.probing_until
    resent, _ = second.on_timer(now)
    assert resent and second.stats.deferred_timeouts == 0


def _dead_peer(sessions: int) -> tuple[float, int]:
    """Seconds until every session gave up on a peer that vanished, and copies resent."""
    net, server, records = _echo_sessions(sessions)
    server.stopped = True
    stopped_at = net.now
    for record in records:
        record.host.write(record, b"b" * 64)
    net.run_until(lambda: all(r.closed for r in records), max_time=60, what="deaths")
    assert {r.close_reason for r in records} == {CloseReason.PEER_TIMEOUT}
    took = max(r.closed_at for r in records) - stopped_at
    return took, sum(r.session.recovery_stats()["retransmissions"] for r in records)


def test_sessions_waiting_for_a_dead_peer_are_declared_dead_as_one_would_be() -> None:
    """The waits count as unanswered timeouts: all close when a lone session would."""
    alone, alone_resent = _dead_peer(1)
    together, together_resent = _dead_peer(20)
    assert together <= alone + 0.5, (together, alone)
    assert together_resent <= alone_resent  # one session's copies in all, not twenty's


def test_a_prober_whose_timeout_comes_sooner_than_its_copys_never_waits_for_it() -> None:
    """An ack past its copy resets the backoff: the next timeout is due before the
    copy's, and the peer is still silent about the rest; it resends all the same."""
    peer = PeerProgress()
    sender = _sender(peer)
    sender.write(b"x" * 2000)
    assert len(sender.transmit(0.0)) == 2
    sender.write(b"y" * 1000)
    assert len(sender.transmit(0.0001)) == 1  # sent later than the rest
    expiry = sender.pto_deadline or 0.0
    assert sender.on_timer(expiry)[0]  # the copy of the first segment
    assert peer.prober == id(sender)
    copy_due = peer.probing_until
    sender.on_ack(wrap(2000), expiry + 0.0001, pure=False)  # past the copy: backoff reset
    now = sender.pto_deadline or 0.0
    assert now < copy_due and peer.silent_since(0.0001)
    resent, timed_out = sender.on_timer(now)
    assert timed_out and resent and sender.stats.deferred_timeouts == 0
