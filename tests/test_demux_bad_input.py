"""A demultiplexer's answers to strangers and hand-made datagrams, per the spec and the trace."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from simnet import EPOCH, trace_probes, trace_session

from mnet_twisted import wire
from mnet_twisted.config import SessionConfig
from mnet_twisted.cookie import CookieMinter
from mnet_twisted.demux import Demultiplexer
from mnet_twisted.events import Closed, CloseReason, DataReceived, Established, Event
from mnet_twisted.session import SessionState

PEER = ("192.0.2.10", 40000)
OTHER = ("192.0.2.11", 40001)
LISTEN_PORT = 5000
T0 = EPOCH + 0.25


class Driver:
    """Feeds one demultiplexer by hand and drains it in the documented order."""

    def __init__(self, *, accepting: bool = True, echo: bool = False, seed: int = 1) -> None:
        self.config = SessionConfig()
        self.demux = Demultiplexer(
            local_port=LISTEN_PORT,
            cookies=CookieMinter(b"fixed secret for the listener"),
            config=self.config,
            accepting=accepting,
            random_bytes=random.Random(seed).randbytes,
        )
        self.events: list[tuple[Any, Event]] = []
        self.echo = echo

    def drain(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        for _ in range(10_000):
            item = self.demux.next_event()
            if item is None:
                break
            self.events.append(item)
            session, event = item
            if self.echo and isinstance(event, DataReceived):
                session.send(event.data)
        out = [(bytes(d), (a[0], a[1])) for d, a in self.demux.datagrams_to_send(now)]
        self.demux.next_deadline()
        return out

    def feed(self, data: bytes, addr: tuple[str, int] = PEER, now: float = T0) -> list[bytes]:
        """Deliver one datagram; return the datagrams sent back to ``addr`` (all must go there)."""
        self.demux.receive_datagram(data, addr, now)
        out = self.drain(now)
        assert all(a == addr for _, a in out), out
        return [d for d, _ in out]

    def cookie_for(self, tag: bytes, addr: tuple[str, int] = PEER, now: float = T0) -> bytes:
        [cookie] = self.feed(wire.Init(tag).to_bytes(), addr, now)
        return cookie


# -- the spec's table, probe by probe --------------------------------------------


@pytest.mark.parametrize(
    "request_,reply",
    [(req, rep) for _, req, rep in trace_probes() if not rep.startswith("02")],
    ids=[d.split("(")[-1].rstrip(")") for d, _, rep in trace_probes() if not rep.startswith("02")],
)
def test_reference_probe(request_: bytes, reply: str) -> None:
    """Our listener answers each hand-made probe exactly as the reference listener did."""
    driver = Driver()
    answers = driver.feed(request_)
    expected = [] if reply == "(nothing)" else [bytes.fromhex(reply)]
    assert answers == expected
    assert len(driver.demux) == 0
    assert driver.events == []


def test_valid_init_gets_cookie() -> None:
    """A valid INIT gets a 32-byte COOKIE: connector tag at 4..6, version 1, expiry ~now+5 LE."""
    driver = Driver()
    cookie = driver.cookie_for(b"\xaa\xbb\xcc")
    assert len(cookie) == 32
    assert cookie[0] == 2
    assert cookie[4:7] == b"\xaa\xbb\xcc"
    assert cookie[7] == 1
    (expiration,) = struct.unpack("<I", cookie[8:12])
    assert abs(expiration - (T0 + driver.config.cookie_lifetime)) <= 1
    assert cookie[1:4] != b"\xaa\xbb\xcc"
    assert len(driver.demux) == 0, "a listener is stateless until the echo"


def test_repeated_init_gets_same_listener_tag() -> None:
    """Two INITs with the same tag from the same address yield the same listener tag."""
    driver = Driver()
    first = driver.cookie_for(b"abc")
    second = driver.cookie_for(b"abc", now=T0 + 0.3)
    assert first[1:4] == second[1:4]
    assert len(driver.demux) == 0


def test_not_accepting_answers_init_with_abort() -> None:
    """A listener that is not accepting answers INIT with ABORT carrying the INIT's tag."""
    driver = Driver(accepting=False)
    assert driver.feed(wire.Init(b"xyz").to_bytes()) == [b"\x08xyz"]
    assert len(driver.demux) == 0


def test_valid_echo_creates_session_and_acks() -> None:
    """A valid COOKIE-ECHO creates one session, emits Established and gets COOKIE-ACK."""
    driver = Driver()
    cookie = driver.cookie_for(b"abc")
    answers = driver.feed(b"\x03" + cookie[1:], now=T0 + 0.01)
    assert answers == [b"\x04" + cookie[1:4]]
    assert len(driver.demux) == 1
    [(session, event)] = driver.events
    assert isinstance(event, Established)
    assert session.peer_address == PEER
    assert session.peer_tag == b"abc"
    assert session.local_tag == cookie[1:4]
    assert not session.is_connector


def test_duplicate_echo_acks_again_without_new_session() -> None:
    """A second valid COOKIE-ECHO gets another COOKIE-ACK and creates nothing."""
    driver = Driver()
    cookie = driver.cookie_for(b"abc")
    echo = b"\x03" + cookie[1:]
    driver.feed(echo, now=T0 + 0.01)
    assert driver.feed(echo, now=T0 + 0.4) == [b"\x04" + cookie[1:4]]
    assert len(driver.demux) == 1
    assert len(driver.events) == 1


def test_echo_of_a_repeated_handshake_finds_the_session() -> None:
    """An echo of a fresh COOKIE for the same connector tag is a duplicate, not a new session."""
    driver = Driver()
    driver.feed(b"\x03" + driver.cookie_for(b"abc")[1:], now=T0 + 0.01)
    again = driver.cookie_for(b"abc", now=T0 + 1.0)
    assert driver.feed(b"\x03" + again[1:], now=T0 + 1.01) == [b"\x04" + again[1:4]]
    assert len(driver.demux) == 1


def test_expired_echo_is_aborted() -> None:
    """A genuine COOKIE-ECHO past its expiration gets ABORT and creates no session."""
    driver = Driver()
    cookie = driver.cookie_for(b"abc")
    late = T0 + driver.config.cookie_lifetime + 2
    answers = driver.feed(b"\x03" + cookie[1:], now=late)
    assert len(answers) == 1
    assert answers[0][0] == 8 and len(answers[0]) == 4
    assert answers[0][1:4] in (cookie[1:4], b"abc")
    assert len(driver.demux) == 0
    assert driver.events == []


def test_echo_from_another_address_is_ignored() -> None:
    """A genuine COOKIE-ECHO sent from an address other than the INIT's is dropped silently."""
    driver = Driver()
    cookie = driver.cookie_for(b"abc")
    assert driver.feed(b"\x03" + cookie[1:], addr=OTHER, now=T0 + 0.01) == []
    assert len(driver.demux) == 0


@pytest.mark.parametrize("position", [1, 4, 7, 8, 12, 31])
def test_tampered_echo_is_ignored(position: int) -> None:
    """Changing any byte of a genuine COOKIE-ECHO makes it a silent drop."""
    driver = Driver()
    echo = bytearray(b"\x03" + driver.cookie_for(b"abc")[1:])
    echo[position] ^= 0x40
    assert driver.feed(bytes(echo), now=T0 + 0.01) == []
    assert len(driver.demux) == 0


@pytest.mark.parametrize("length", [31, 33])
def test_wrong_length_echo_is_ignored(length: int) -> None:
    """A COOKIE-ECHO of the wrong length is dropped silently, even with a genuine prefix."""
    driver = Driver()
    echo = b"\x03" + driver.cookie_for(b"abc")[1:]
    bad = (echo + b"\x00")[:length]
    assert driver.feed(bad, now=T0 + 0.01) == []
    assert len(driver.demux) == 0


def test_abort_for_unknown_tag_is_not_answered() -> None:
    """ABORT for a session that does not exist is never answered."""
    driver = Driver()
    assert driver.feed(b"\x08abc") == []


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x04xyz",
        b"\x05xyz\x00\x00\x00\x00",
        b"\x06xyz",
        b"\x07xyz",
        b"\x00xyz" + bytes(10),
        b"\x00xyz" + struct.pack("<IIH", 10, 0, 3) + b"abc",
        b"\x0axyz",
        b"\xffxyz",
    ],
    ids=[
        "cookie-ack",
        "shutdown",
        "shutdown-ack",
        "shutdown-complete",
        "ack",
        "data",
        "type10",
        "type255",
    ],
)
def test_unknown_session_gets_abort_with_its_tag(datagram: bytes) -> None:
    """Any non-handshake packet with a tag of no session is answered ABORT with that tag."""
    driver = Driver()
    assert driver.feed(datagram) == [b"\x08xyz"]
    assert len(driver.demux) == 0


def test_stray_cookie_is_answered_at_most_with_abort() -> None:
    """A COOKIE sent to a listener creates nothing and is answered at most by one ABORT."""
    driver = Driver()
    answers = driver.feed(b"\x02" + bytes(31))
    assert all(a[0] == 8 and len(a) == 4 for a in answers)
    assert len(answers) <= 1
    assert len(driver.demux) == 0


def test_empty_datagram_is_ignored() -> None:
    """A zero-length datagram is dropped silently."""
    driver = Driver()
    assert driver.feed(b"") == []


def _established(driver: Driver) -> tuple[Any, bytes]:
    cookie = driver.cookie_for(b"abc")
    driver.feed(b"\x03" + cookie[1:], now=T0 + 0.01)
    [(session, _)] = driver.events
    return session, cookie[1:4]


def test_known_tag_from_another_address_is_a_stranger() -> None:
    """A session's tag from another address is answered ABORT there and leaves the session be."""
    driver = Driver()
    session, _ = _established(driver)
    data = wire.Data(b"abc", 5, 0, b"hello").to_bytes()
    assert driver.feed(data, addr=OTHER, now=T0 + 0.02) == [b"\x08abc"]
    assert driver.feed(b"\x08abc", addr=OTHER, now=T0 + 0.03) == []
    assert not session.closed
    assert len(driver.events) == 1
    assert len(driver.demux) == 1


def test_abort_from_the_peer_closes_session() -> None:
    """ABORT with the peer's tag from the peer's address closes the session, unanswered."""
    driver = Driver()
    session, _ = _established(driver)
    assert driver.feed(b"\x08abc", now=T0 + 0.02) == []
    assert session.closed
    closed = driver.events[-1][1]
    assert isinstance(closed, Closed) and closed.reason is CloseReason.ABORTED_BY_PEER


def test_shutdown_ack_on_open_session_is_protocol_error() -> None:
    """SHUTDOWN-ACK on an established session is answered with ABORT and closes it."""
    driver = Driver()
    _session, ltag = _established(driver)
    assert driver.feed(b"\x06abc", now=T0 + 0.02) == [b"\x08" + ltag]
    closed = driver.events[-1][1]
    assert isinstance(closed, Closed) and closed.reason is CloseReason.PROTOCOL_ERROR


def test_malformed_packets_with_session_tag_do_not_kill_it() -> None:
    """Wrong-length packets carrying a live session's tag leave the session open."""
    driver = Driver()
    session, _ = _established(driver)
    for bad in (
        b"\x08abc\x00",
        b"\x07abc\x00",
        b"\x05abc",
        b"\x00abc" + bytes(9),
        b"\x00abc" + struct.pack("<IIH", 5, 0, 9) + b"short",
    ):
        answers = driver.feed(bad, now=T0 + 0.02)
        assert all(a[0] == 8 for a in answers)
    assert not session.closed, driver.events


def test_data_before_any_handshake_creates_nothing() -> None:
    """A DATA flood with distinct unknown tags creates no sessions and only ABORTs.

    From one source network, at most ``abort_rate_per_source`` of them a
    second (after a burst of a tenth of that): the rest get no answer.
    """
    driver = Driver()
    limits = driver.demux.limits
    assert limits.abort_rate_per_source is not None
    aborts = 0
    for i in range(2000):
        tag = i.to_bytes(3, "little")
        answers = driver.feed(wire.Data(tag, 10, 0, b"x" * 10).to_bytes(), now=T0 + i * 1e-3)
        assert answers in ([], [b"\x08" + tag])
        aborts += len(answers)
    assert len(driver.demux) == 0
    seconds = 2.0
    allowed = limits.abort_rate_per_source * (seconds + 0.1)
    assert 0.9 * limits.abort_rate_per_source * seconds <= aborts <= allowed + 1
    assert driver.demux.replies_limited == 2000 - aborts


# -- the reference session replayed ----------------------------------------------


def test_replay_reference_connector_against_our_listener() -> None:
    """The trace's connector side, replayed, gets structurally identical answers from us."""
    trace = trace_session()
    connector_side = [d for d in trace if d.direction == "C->S"]
    reference_answers = [wire.parse(d.data) for d in trace if d.direction == "S->C"]
    driver = Driver(echo=True)
    ctag = bytes.fromhex("ba969d")
    base = T0
    ours: list[wire.Packet] = []
    cookie = b""
    for d in connector_side:
        now = base + d.time
        deadline = driver.demux.next_deadline()
        if deadline is not None and deadline <= now:
            driver.demux.handle_timers(now)
            ours += [wire.parse(x) for x, _ in driver.drain(now)]
        data = d.data
        if data[0] == 3:
            data = b"\x03" + cookie[1:]  # our MAC differs: echo ours, as a connector does
        answers = driver.feed(data, now=now)
        if data[0] == 1:
            cookie = answers[0]
        ours += [wire.parse(a) for a in answers]
    # Handshake: COOKIE then COOKIE-ACK with our tag in the same places.
    assert isinstance(ours[0], wire.Cookie)
    ltag = ours[0].listener_tag
    assert ours[0].connector_tag == ctag and ours[0].version == 1
    assert ours[1] == wire.CookieAck(ltag)
    assert type(reference_answers[0]) is type(ours[0])
    assert type(reference_answers[1]) is type(ours[1])
    # Data: every answer carries our tag; the echo equals the reference echo byte for byte.
    rest = ours[2:]
    assert all(getattr(p, "tag", None) == ltag for p in rest)
    data_packets = [p for p in rest if isinstance(p, wire.Data)]
    echoed = b"".join(p.payload for p in data_packets)
    reference_echo = b"".join(p.payload for p in reference_answers if isinstance(p, wire.Data))
    assert echoed == reference_echo and len(echoed) == 1200
    # seq is the end offset of each payload; acks only grow and end at 1200.
    offset = 0
    acks = []
    for p in data_packets:
        offset += len(p.payload)
        if p.payload:
            assert p.seq == offset
        acks.append(p.ack)
    assert acks == sorted(acks) and acks[-1] == 1200
    # Every payload-carrying DATA from the connector was acknowledged before its next one.
    assert data_packets[0].ack == 498
    # Shutdown: our answer to SHUTDOWN is SHUTDOWN-ACK with our tag, 4 bytes.
    assert wire.ShutdownAck(ltag) in rest
    assert rest[-1] == wire.ShutdownAck(ltag) or isinstance(rest[-1], wire.ShutdownAck)
    closed = [e for _, e in driver.events if isinstance(e, Closed)]
    assert [c.reason for c in closed] == [CloseReason.CLEAN]


def test_replay_reference_listener_against_our_connector() -> None:
    """Our connector completes a session against the trace's listener datagrams."""
    trace = trace_session()
    config = SessionConfig()
    demux = Demultiplexer(
        local_port=40000,
        cookies=None,
        config=config,
        accepting=False,
        random_bytes=random.Random(7).randbytes,
    )
    server = ("192.0.2.1", 5000)
    events: list[Event] = []

    def drain(now: float) -> list[bytes]:
        for _ in range(1000):
            item = demux.next_event()
            if item is None:
                break
            events.append(item[1])
        out = demux.datagrams_to_send(now)
        assert all(a == server for _, a in out)
        return [bytes(d) for d, _ in out]

    session = demux.connect(server, T0)
    [init] = drain(T0)
    assert init[:6] == b"\x01MNET\x01" and len(init) == 9
    our_tag = init[6:9]
    assert session.local_tag == our_tag
    # The reference COOKIE, re-addressed to our tag (the MAC is opaque to a connector).
    cookie = bytearray(trace[1].data)
    cookie[4:7] = our_tag
    demux.receive_datagram(bytes(cookie), server, T0 + 0.001)
    [echo] = drain(T0 + 0.001)
    assert echo == b"\x03" + bytes(cookie[1:])
    assert not events
    # A COOKIE-ACK with a tag other than the COOKIE's does not establish.
    demux.receive_datagram(b"\x04zzz", server, T0 + 0.002)
    drain(T0 + 0.002)
    assert session.state is SessionState.COOKIE_ECHOED
    demux.receive_datagram(trace[3].data, server, T0 + 0.003)
    drain(T0 + 0.003)
    assert session.state is SessionState.ESTABLISHED
    assert [type(e) for e in events] == [Established]
    # Send the trace's 1200 bytes.
    message = b"".join(
        wire.parse(d.data).payload  # type: ignore[union-attr]
        for d in trace
        if d.direction == "C->S" and d.data[0] == 0
    )
    assert len(message) == 1200
    session.send(message)
    sent = [wire.parse(d) for d in drain(T0 + 0.004)]
    assert all(isinstance(p, wire.Data) and p.tag == our_tag for p in sent)
    assert b"".join(p.payload for p in sent) == message  # type: ignore[union-attr]
    assert sent[-1].seq == 1200  # type: ignore[union-attr]
    # Feed the reference listener's acks and echo.
    now = T0 + 0.005
    for d in trace[4:]:
        if d.direction == "S->C" and d.data[0] == 0:
            now += 0.0001
            demux.receive_datagram(d.data, server, now)
            drain(now)
    received = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert received == message
    assert session.send_buffer_size == 0
    session.close(now)
    out = [wire.parse(d) for d in drain(now)]
    assert wire.Shutdown(our_tag, 1200) in out
    assert out[-1].to_bytes() == b"\x05" + our_tag + bytes.fromhex("b0040000")
    demux.receive_datagram(trace[-3].data, server, now + 0.001)  # SHUTDOWN-ACK 4b01fa
    out = drain(now + 0.001)
    assert out == [b"\x07" + our_tag]
    assert isinstance(events[-1], Closed) and events[-1].reason is CloseReason.CLEAN
