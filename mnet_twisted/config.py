"""Tunables of an MNET session.  Defaults suit a LAN or the Internet alike."""

from __future__ import annotations

from dataclasses import dataclass

from .wire import DATA_HEADER_SIZE, MAX_PAYLOAD

__all__ = ["SessionConfig"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    #: Largest datagram we send.  1452 fits an IPv6 packet in a 1500-byte MTU.
    max_datagram_size: int = 1452
    #: First INIT / COOKIE-ECHO retry after this many seconds; doubles per retry.
    handshake_retry_interval: float = 0.3
    handshake_max_retry_interval: float = 2.0
    #: COOKIE-ECHO tries before starting over with a fresh INIT.
    cookie_echo_tries: int = 5
    #: A connection attempt gives up after this many seconds.
    connect_timeout: float = 10.0
    #: Lifetime of a cookie minted by a listener, in whole seconds.
    cookie_lifetime: int = 5
    #: RFC 6298 retransmission timer bounds, in seconds.
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 2.0
    #: The peer is declared dead once we have heard nothing from it for
    #: ``peer_timeout`` seconds *and* ``dead_peer_retransmissions`` timed-out
    #: retransmissions in a row went unanswered (time alone would kill
    #: sessions on very lossy paths; a count alone would on very fast ones).
    #: With the defaults a silent peer is given up after about 20 seconds.
    peer_timeout: float = 10.0
    dead_peer_retransmissions: int = 12
    #: After this many seconds of silence on an idle session, probe the peer
    #: (resend the last acknowledged byte; every MNET receiver acknowledges a
    #: duplicate).  Unanswered probes count toward the dead-peer rule, so a
    #: peer that vanished while idle is noticed too, and NAT bindings stay
    #: open.  ``None`` disables probing: idle sessions then live until used.
    keepalive_interval: float | None = 15.0
    #: After a clean close, answer retransmitted SHUTDOWN-ACKs for this long.
    linger: float = 2.0
    #: Initial congestion window, in segments (RFC 6928).
    initial_window_segments: int = 10
    #: Upper bound on the congestion window, in bytes.  MNET has no receive
    #: window on the wire, so this is the only cap on bytes in flight; a
    #: window larger than the peer's receive buffer only manufactures loss,
    #: so it defaults to the receive buffer we keep ourselves.
    max_congestion_window: int = 1024 * 1024
    #: In-order-but-unread plus out-of-order bytes kept for the application.
    #: Beyond it, arriving data is dropped unacknowledged, which is how MNET
    #: pushes back on a sender.
    receive_buffer_limit: int = 1024 * 1024
    #: Unsent plus unacknowledged bytes above which writers should pause.
    send_buffer_high_water: int = 1024 * 1024
    #: ...and below which they may resume.
    send_buffer_low_water: int = 256 * 1024
    #: Stream offset both directions start from.  Interoperable peers require
    #: 0 (the wire carries "total bytes sent"); tests set it just below 2**32
    #: on both ends to exercise sequence-number wrap-around quickly.
    stream_origin: int = 0

    def __post_init__(self) -> None:
        if not DATA_HEADER_SIZE < self.max_datagram_size <= DATA_HEADER_SIZE + MAX_PAYLOAD:
            raise ValueError("max_datagram_size must leave room for 1 to 65535 payload bytes")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if self.send_buffer_low_water > self.send_buffer_high_water:
            raise ValueError("send_buffer_low_water must not exceed send_buffer_high_water")
        if self.receive_buffer_limit < self.max_segment_size:
            raise ValueError("receive_buffer_limit must hold at least one segment")

    @property
    def max_segment_size(self) -> int:
        """Largest payload of one DATA packet."""
        return self.max_datagram_size - DATA_HEADER_SIZE
