"""
MNET v1 packets: their types, and conversion between datagrams and values.

Nothing here knows about sessions, time or sockets.  Every multi-byte integer
is little-endian, as the reference peers send it (see ``shared/spec/MNET.md``).
A datagram that is not a well-formed packet raises :class:`MalformedPacket`,
and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "ABORT_TYPE",
    "COOKIE_ECHO_TYPE",
    "COOKIE_TYPE",
    "DATA_TYPE",
    "INIT_TYPE",
    "MAGIC",
    "MAX_PAYLOAD",
    "SHUTDOWN_TYPE",
    "VERSION",
    "Abort",
    "Cookie",
    "CookieAck",
    "CookieEcho",
    "Data",
    "Init",
    "MalformedPacket",
    "Packet",
    "PacketType",
    "Shutdown",
    "ShutdownAck",
    "ShutdownComplete",
    "parse",
]

MAGIC: Final = b"MNET"
VERSION: Final = 1
TAG_SIZE: Final = 3
MAC_SIZE: Final = 20
DATA_HEADER_SIZE: Final = 14
MAX_PAYLOAD: Final = 0xFFFF
#: The largest datagram any MNET peer may legitimately send.
MAX_DATAGRAM: Final = DATA_HEADER_SIZE + MAX_PAYLOAD

_DATA_HEADER = struct.Struct("<B3sIIH")
_COOKIE = struct.Struct("<B3s3sBI20s")
_SHUTDOWN = struct.Struct("<B3sI")


class PacketType(IntEnum):
    DATA = 0
    INIT = 1
    COOKIE = 2
    COOKIE_ECHO = 3
    COOKIE_ACK = 4
    SHUTDOWN = 5
    SHUTDOWN_ACK = 6
    SHUTDOWN_COMPLETE = 7
    ABORT = 8


#: The packet types as plain ints, for the comparisons made on every
#: datagram: reading a member off an Enum class costs about as much as a
#: function call on CPython 3.11.
DATA_TYPE: Final = int(PacketType.DATA)
INIT_TYPE: Final = int(PacketType.INIT)
COOKIE_TYPE: Final = int(PacketType.COOKIE)
COOKIE_ECHO_TYPE: Final = int(PacketType.COOKIE_ECHO)
SHUTDOWN_TYPE: Final = int(PacketType.SHUTDOWN)
ABORT_TYPE: Final = int(PacketType.ABORT)


class MalformedPacket(ValueError):
    """The datagram is not a well-formed MNET v1 packet."""


def _check_tag(tag: bytes) -> None:
    if len(tag) != TAG_SIZE:
        raise ValueError(f"a connection tag is {TAG_SIZE} bytes, not {len(tag)}")


@dataclass(frozen=True, slots=True)
class Init:
    """Connector -> listener: open a session.  ``tag`` is the connector's tag."""

    tag: bytes
    version: int = VERSION

    def to_bytes(self) -> bytes:
        _check_tag(self.tag)
        return bytes((PacketType.INIT,)) + MAGIC + bytes((self.version,)) + self.tag


@dataclass(frozen=True, slots=True)
class _CookieBody:
    listener_tag: bytes
    connector_tag: bytes
    version: int
    expiration: int
    mac: bytes

    TYPE = PacketType.COOKIE

    def to_bytes(self) -> bytes:
        _check_tag(self.listener_tag)
        _check_tag(self.connector_tag)
        if len(self.mac) != MAC_SIZE:
            raise ValueError(f"a cookie MAC is {MAC_SIZE} bytes")
        return _COOKIE.pack(
            self.TYPE,
            self.listener_tag,
            self.connector_tag,
            self.version,
            self.expiration,
            self.mac,
        )


@dataclass(frozen=True, slots=True)
class Cookie(_CookieBody):
    """Listener -> connector: the state of a session-to-be, signed by the listener."""

    TYPE = PacketType.COOKIE


@dataclass(frozen=True, slots=True)
class CookieEcho(_CookieBody):
    """Connector -> listener: the cookie's bytes sent back unchanged."""

    TYPE = PacketType.COOKIE_ECHO

    @classmethod
    def of(cls, cookie: Cookie) -> CookieEcho:
        return cls(
            cookie.listener_tag,
            cookie.connector_tag,
            cookie.version,
            cookie.expiration,
            cookie.mac,
        )


@dataclass(frozen=True, slots=True)
class Data:
    """Application bytes and a cumulative acknowledgement.

    ``seq`` is the stream offset (mod 2**32) of the *end* of ``payload``;
    ``ack`` is the number of bytes received from the peer (mod 2**32).
    An empty payload makes a pure acknowledgement.
    """

    tag: bytes
    seq: int
    ack: int
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        _check_tag(self.tag)
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"a DATA payload is at most {MAX_PAYLOAD} bytes")
        header = _DATA_HEADER.pack(
            PacketType.DATA,
            self.tag,
            self.seq & 0xFFFFFFFF,
            self.ack & 0xFFFFFFFF,
            len(self.payload),
        )
        return header + self.payload


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Start a graceful close; ``ack`` is the bytes received from the peer (mod 2**32)."""

    tag: bytes
    ack: int

    def to_bytes(self) -> bytes:
        _check_tag(self.tag)
        return _SHUTDOWN.pack(PacketType.SHUTDOWN, self.tag, self.ack & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class _TagOnly:
    tag: bytes

    TYPE = PacketType.ABORT

    def to_bytes(self) -> bytes:
        _check_tag(self.tag)
        return bytes((self.TYPE,)) + self.tag


@dataclass(frozen=True, slots=True)
class CookieAck(_TagOnly):
    """Listener -> connector: the session exists.  ``tag`` is the listener's tag."""

    TYPE = PacketType.COOKIE_ACK


@dataclass(frozen=True, slots=True)
class ShutdownAck(_TagOnly):
    """Answer to SHUTDOWN once the answering side has sent all its data."""

    TYPE = PacketType.SHUTDOWN_ACK


@dataclass(frozen=True, slots=True)
class ShutdownComplete(_TagOnly):
    """Answer to SHUTDOWN-ACK: the session is closed cleanly."""

    TYPE = PacketType.SHUTDOWN_COMPLETE


@dataclass(frozen=True, slots=True)
class Abort(_TagOnly):
    """The session (or session attempt) is over, now, without delivery guarantees."""

    TYPE = PacketType.ABORT


Packet = (
    Init
    | Cookie
    | CookieEcho
    | CookieAck
    | Data
    | Shutdown
    | ShutdownAck
    | ShutdownComplete
    | Abort
)

_TAG_ONLY: Final[dict[int, type[CookieAck | ShutdownAck | ShutdownComplete | Abort]]] = {
    PacketType.COOKIE_ACK: CookieAck,
    PacketType.SHUTDOWN_ACK: ShutdownAck,
    PacketType.SHUTDOWN_COMPLETE: ShutdownComplete,
    PacketType.ABORT: Abort,
}


def _require_length(datagram: bytes, expected: int, kind: int) -> None:
    if len(datagram) != expected:
        name = PacketType(kind).name  # (only now: an Enum lookup costs a call's worth)
        raise MalformedPacket(f"{name} is {expected} bytes, got {len(datagram)}")


def parse_data(datagram: bytes) -> tuple[int, int, bytes] | None:
    """The hot path's parse: ``(seq, ack, payload)`` of a well-formed DATA, else None.

    No packet object is built; anything else (or a malformed DATA) returns
    None and goes through :func:`parse`, which says what is wrong.
    """
    if len(datagram) < DATA_HEADER_SIZE or datagram[0] != DATA_TYPE:
        return None
    _, _, seq, ack, length = _DATA_HEADER.unpack_from(datagram)
    if len(datagram) != DATA_HEADER_SIZE + length:
        return None
    return seq, ack, datagram[DATA_HEADER_SIZE:]


def parse_pure_ack(datagram: bytes) -> tuple[bytes, int, int] | None:
    """``(tag, seq, ack)`` of a well-formed DATA without payload (a pure ack), else None."""
    if len(datagram) != DATA_HEADER_SIZE or datagram[0] != DATA_TYPE:
        return None
    _, tag, seq, ack, length = _DATA_HEADER.unpack_from(datagram)
    return None if length else (tag, seq, ack)


def encode_data(tag: bytes, seq: int, ack: int, payload: bytes) -> bytes:
    """The hot path's serializer: ``Data(tag, seq, ack, payload).to_bytes()``, unchecked.

    The caller guarantees a 3-byte tag, 32-bit ``seq``/``ack`` and a payload
    of at most MAX_PAYLOAD bytes (a session's own segments always are).
    """
    return _DATA_HEADER.pack(DATA_TYPE, tag, seq, ack, len(payload)) + payload


def parse(datagram: bytes) -> Packet:
    """Decode one datagram into a packet, or raise :class:`MalformedPacket`."""
    if not datagram:
        raise MalformedPacket("empty datagram")
    kind = datagram[0]
    if kind == DATA_TYPE:
        if len(datagram) < DATA_HEADER_SIZE:
            raise MalformedPacket(f"DATA is at least {DATA_HEADER_SIZE} bytes")
        _, tag, seq, ack, length = _DATA_HEADER.unpack_from(datagram)
        if len(datagram) != DATA_HEADER_SIZE + length:
            raise MalformedPacket(
                f"DATA says {length} payload bytes but carries {len(datagram) - DATA_HEADER_SIZE}"
            )
        return Data(tag, seq, ack, bytes(datagram[DATA_HEADER_SIZE:]))
    if kind == INIT_TYPE:
        _require_length(datagram, 9, kind)
        if datagram[1:5] != MAGIC:
            raise MalformedPacket("INIT without the MNET magic")
        return Init(bytes(datagram[6:9]), datagram[5])
    if kind in (COOKIE_TYPE, COOKIE_ECHO_TYPE):
        _require_length(datagram, _COOKIE.size, kind)
        _, listener_tag, connector_tag, version, expiration, mac = _COOKIE.unpack_from(datagram)
        cls = Cookie if kind == COOKIE_TYPE else CookieEcho
        return cls(listener_tag, connector_tag, version, expiration, mac)
    if kind == SHUTDOWN_TYPE:
        _require_length(datagram, _SHUTDOWN.size, kind)
        _, tag, ack = _SHUTDOWN.unpack_from(datagram)
        return Shutdown(tag, ack)
    tag_only = _TAG_ONLY.get(kind)
    if tag_only is None:
        raise MalformedPacket(f"unknown packet type {kind}")
    _require_length(datagram, 4, kind)
    return tag_only(bytes(datagram[1:4]))
