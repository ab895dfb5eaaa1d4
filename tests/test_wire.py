"""The wire codec against the spec's byte layout and the reference peers' datagrams."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simnet import REFERENCE_TRACE, trace_probes, trace_session

from mnet_twisted import wire

SHARED_TRACE = (
    Path(__file__).resolve().parents[2] / "shared" / "conformance" / "reference-trace.txt"
)

tags = st.binary(min_size=3, max_size=3)
u32 = st.integers(0, 2**32 - 1)
macs = st.binary(min_size=20, max_size=20)

packets = st.one_of(
    st.builds(wire.Init, tags, st.integers(0, 255)),
    st.builds(wire.Cookie, tags, tags, st.integers(0, 255), u32, macs),
    st.builds(wire.CookieEcho, tags, tags, st.integers(0, 255), u32, macs),
    st.builds(wire.CookieAck, tags),
    st.builds(wire.Data, tags, u32, u32, st.binary(max_size=2000)),
    st.builds(wire.Shutdown, tags, u32),
    st.builds(wire.ShutdownAck, tags),
    st.builds(wire.ShutdownComplete, tags),
    st.builds(wire.Abort, tags),
)


def test_embedded_trace_matches_shared_copy() -> None:
    """The suite's copy of the reference trace is the shared conformance file, verbatim."""
    if not SHARED_TRACE.exists():
        pytest.skip("shared/conformance is not next to this checkout")
    assert SHARED_TRACE.read_text() == REFERENCE_TRACE


@pytest.mark.parametrize("index", range(len(trace_session())))
def test_reference_datagram_round_trips(index: int) -> None:
    """Every datagram the reference peers exchanged parses and re-serialises byte-identical."""
    datagram = trace_session()[index].data
    packet = wire.parse(datagram)
    assert packet.to_bytes() == datagram


def test_reference_session_fields() -> None:
    """The trace's packets decode to the fields the spec's tag table predicts."""
    session = trace_session()
    connector_tag, listener_tag = bytes.fromhex("ba969d"), bytes.fromhex("4b01fa")
    init, cookie, echo, ack = (wire.parse(d.data) for d in session[:4])
    assert init == wire.Init(connector_tag, 1)
    assert isinstance(cookie, wire.Cookie)
    assert (cookie.listener_tag, cookie.connector_tag, cookie.version) == (
        listener_tag,
        connector_tag,
        1,
    )
    assert isinstance(echo, wire.CookieEcho)
    assert session[2].data[1:] == session[1].data[1:]
    assert ack == wire.CookieAck(listener_tag)
    sent = b""
    echoed = b""
    for d in session[4:]:
        packet = wire.parse(d.data)
        expected_tag = connector_tag if d.direction == "C->S" else listener_tag
        assert packet.tag == expected_tag  # type: ignore[union-attr]
        if isinstance(packet, wire.Data) and packet.payload:
            if d.direction == "C->S":
                sent += packet.payload
                assert packet.seq == len(sent)  # seq is the offset of the payload's end
            else:
                echoed += packet.payload
                assert packet.seq == len(echoed)
    assert len(sent) == 1200
    assert echoed == sent
    shutdown = wire.parse(session[-4].data)
    assert shutdown == wire.Shutdown(connector_tag, 1200)


def test_reference_data_header_is_little_endian() -> None:
    """The first DATA's seq 498 is f2010000 on the wire: little-endian, not network order."""
    first = trace_session()[4].data
    assert first[4:8] == bytes.fromhex("f2010000")
    packet = wire.parse(first)
    assert isinstance(packet, wire.Data)
    assert (packet.seq, packet.ack, len(packet.payload)) == (498, 0, 498)
    assert first[12:14] == struct.pack("<H", 498)


FIXED_REPLIES = [r for _, _, r in trace_probes() if all(c in "0123456789abcdef" for c in r)]


def test_trace_has_fixed_replies() -> None:
    """The probe list holds the three ABORT replies this module checks."""
    assert FIXED_REPLIES == ["08112233", "08aabbcc", "08010203"]


@pytest.mark.parametrize("reply", FIXED_REPLIES)
def test_reference_probe_answers_parse(reply: str) -> None:
    """Every fixed-bytes reply in the probe list parses as an ABORT and round-trips."""
    data = bytes.fromhex(reply)
    assert wire.parse(data).to_bytes() == data
    assert isinstance(wire.parse(data), wire.Abort)


@pytest.mark.parametrize(
    "packet,size",
    [
        (wire.Init(b"abc"), 9),
        (wire.Cookie(b"abc", b"def", 1, 5, bytes(20)), 32),
        (wire.CookieEcho(b"abc", b"def", 1, 5, bytes(20)), 32),
        (wire.CookieAck(b"abc"), 4),
        (wire.Data(b"abc", 1, 2), 14),
        (wire.Data(b"abc", 1, 2, b"x" * 100), 114),
        (wire.Shutdown(b"abc", 7), 8),
        (wire.ShutdownAck(b"abc"), 4),
        (wire.ShutdownComplete(b"abc"), 4),
        (wire.Abort(b"abc"), 4),
    ],
    ids=lambda p: type(p).__name__ if not isinstance(p, int) else str(p),
)
def test_exact_sizes(packet: wire.Packet, size: int) -> None:
    """Each packet serialises to exactly the length of the spec's layout table."""
    assert len(packet.to_bytes()) == size


def test_exact_layouts() -> None:
    """Each packet's fields sit at the spec's byte offsets, integers little-endian."""
    assert wire.Init(b"\x01\x02\x03").to_bytes() == b"\x01MNET\x01\x01\x02\x03"
    cookie = wire.Cookie(b"LLL", b"CCC", 1, 0x04030201, bytes(range(20))).to_bytes()
    assert cookie == b"\x02LLLCCC\x01\x01\x02\x03\x04" + bytes(range(20))
    echo = wire.CookieEcho(b"LLL", b"CCC", 1, 0x04030201, bytes(range(20))).to_bytes()
    assert echo == b"\x03" + cookie[1:]
    assert wire.CookieAck(b"LLL").to_bytes() == b"\x04LLL"
    data = wire.Data(b"TTT", 0x11223344, 0x55667788, b"hi").to_bytes()
    assert data == b"\x00TTT" + bytes.fromhex("44332211 88776655 0200") + b"hi"
    assert wire.Shutdown(b"TTT", 0x01020304).to_bytes() == b"\x05TTT\x04\x03\x02\x01"
    assert wire.ShutdownAck(b"TTT").to_bytes() == b"\x06TTT"
    assert wire.ShutdownComplete(b"TTT").to_bytes() == b"\x07TTT"
    assert wire.Abort(b"TTT").to_bytes() == b"\x08TTT"


def test_sequence_numbers_are_sent_modulo_2_32() -> None:
    """Stream offsets past 2**32 go on the wire modulo 2**32."""
    data = wire.Data(b"TTT", 2**32 + 5, 2**33 + 7).to_bytes()
    assert data[4:12] == struct.pack("<II", 5, 7)
    assert wire.Shutdown(b"TTT", 2**32 + 1).to_bytes()[4:] == struct.pack("<I", 1)


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x00",
        b"\x00abc",
        b"\x00abc" + bytes(9),  # 13 bytes: short DATA header
        b"\x00abc" + bytes(8) + b"\x01\x00",  # says 1 byte, carries 0
        b"\x00abc" + bytes(8) + b"\x00\x00" + b"x",  # says 0 bytes, carries 1
        b"\x01MNET\x01ab",
        b"\x01MNET\x01abcd",
        b"\x01MNEX\x01abc",
        b"\x02" + bytes(30),
        b"\x03" + bytes(32),
        b"\x04abcd",
        b"\x05abc\x00\x00\x00",
        b"\x06ab",
        b"\x07abcd",
        b"\x08abcde",
        b"\x09abc",
        b"\xffabc",
    ],
)
def test_malformed_datagrams_raise_malformed_packet(datagram: bytes) -> None:
    """Wrong lengths, wrong magic and unknown types raise MalformedPacket."""
    with pytest.raises(wire.MalformedPacket):
        wire.parse(datagram)


def test_largest_data_payload_accepted() -> None:
    """DATA with a 65 535-byte payload (the most DataLength can say) parses."""
    datagram = wire.Data(b"abc", 1, 2, bytes(0xFFFF)).to_bytes()
    packet = wire.parse(datagram)
    assert isinstance(packet, wire.Data)
    assert len(packet.payload) == 0xFFFF


def test_oversized_payload_refused_by_serialiser() -> None:
    """A payload DataLength cannot describe is refused when serialising."""
    with pytest.raises(ValueError):
        wire.Data(b"abc", 1, 2, bytes(0x10000)).to_bytes()


def _parses_and_round_trips_or_is_malformed(datagram: bytes) -> None:
    try:
        packet = wire.parse(datagram)
    except wire.MalformedPacket:
        return
    assert packet.to_bytes() == datagram


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_parse_or_raise_malformed(datagram: bytes) -> None:
    """Arbitrary bytes either parse (and then round-trip) or raise MalformedPacket only."""
    _parses_and_round_trips_or_is_malformed(datagram)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 12), st.binary(max_size=40))
def test_typed_prefix_bytes_parse_or_raise_malformed(kind: int, rest: bytes) -> None:
    """Random bodies behind any type byte parse and round-trip, or raise MalformedPacket."""
    _parses_and_round_trips_or_is_malformed(bytes([kind]) + rest)


# Random bytes rarely make a well-formed packet, let alone a pure ack: draw
# real packets (pure acks among them) as often.
_pure_ack_candidates = st.one_of(
    st.builds(lambda kind, rest: bytes([kind]) + rest, st.integers(0, 12), st.binary(max_size=20)),
    packets.map(lambda packet: packet.to_bytes()),
    st.builds(wire.Data, tags, u32, u32).map(lambda packet: packet.to_bytes()),
)


@settings(max_examples=300, deadline=None)
@given(_pure_ack_candidates)
def test_pure_ack_check_agrees_with_the_full_parser(datagram: bytes) -> None:
    """The batch path's check names exactly the well-formed DATA packets without payload."""
    try:
        packet = wire.parse(datagram)
    except wire.MalformedPacket:
        packet = None
    expected = None
    if isinstance(packet, wire.Data) and not packet.payload:
        expected = (packet.tag, packet.seq, packet.ack)
    assert wire.parse_pure_ack(datagram) == expected


def test_pure_ack_check_on_hand_made_datagrams() -> None:
    ack = wire.encode_data(b"abc", 7, 2**32 - 1, b"")
    assert wire.parse_pure_ack(ack) == (b"abc", 7, 2**32 - 1)
    assert wire.parse_pure_ack(wire.encode_data(b"abc", 7, 9, b"x")) is None
    assert wire.parse_pure_ack(ack[:-1]) is None
    assert wire.parse_pure_ack(bytes([wire.PacketType.ABORT]) + ack[1:]) is None
    # The length field says one byte follows, but none does: malformed.
    assert wire.parse_pure_ack(ack[:-2] + b"\x01\x00") is None


@settings(max_examples=300, deadline=None)
@given(packets)
def test_generated_packets_round_trip(packet: wire.Packet) -> None:
    """Any packet value serialises to bytes that parse back to an equal value."""
    data = packet.to_bytes()
    assert wire.parse(data) == packet
    assert (
        data[0]
        == {
            wire.Init: 1,
            wire.Cookie: 2,
            wire.CookieEcho: 3,
            wire.CookieAck: 4,
            wire.Data: 0,
            wire.Shutdown: 5,
            wire.ShutdownAck: 6,
            wire.ShutdownComplete: 7,
            wire.Abort: 8,
        }[type(packet)]
    )


@settings(max_examples=200, deadline=None)
@given(packets, st.data())
def test_truncated_or_extended_packets_are_malformed(
    packet: wire.Packet, data: st.DataObject
) -> None:
    """Cutting bytes off, or adding bytes to, a valid packet makes it MalformedPacket."""
    raw = packet.to_bytes()
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(1, len(raw)))
        mutated = raw[:-cut]
    else:
        mutated = raw + data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(wire.MalformedPacket):
        wire.parse(mutated)


def test_echo_of_cookie_copies_the_fields() -> None:
    """CookieEcho.of(cookie) carries the cookie's bytes 1..31 unchanged."""
    cookie = wire.parse(trace_session()[1].data)
    assert isinstance(cookie, wire.Cookie)
    assert wire.CookieEcho.of(cookie).to_bytes() == trace_session()[2].data
