"""Tunables of an MNET session.  Defaults suit a LAN or the Internet alike."""

from __future__ import annotations

from dataclasses import dataclass

from .congestion import CONTROLLERS
from .wire import DATA_HEADER_SIZE, MAX_DATAGRAM, MAX_PAYLOAD

__all__ = ["ListenerLimits", "SessionConfig"]


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
    #: A connector counts as established once the COOKIE arrives, one round
    #: trip in (as TCP does at SYN-ACK), and its first DATA follows the
    #: COOKIE-ECHO without waiting for the COOKIE-ACK.  Every listener takes
    #: an echo and the DATA behind it in order; should the DATA arrive
    #: alone (the echo lost or overtaken), the listener answers ABORT, which
    #: then only holds the data back until the echo, sent again, is answered.
    #: Off by default, as the reference connectors do: with it ``connect()``
    #: fires before the listener has taken the session, so a listener that
    #: fills up (or starts stopping) between COOKIE and echo ends the
    #: connection after ``connectionMade`` instead of failing ``connect()``.
    early_data: bool = False
    #: Lifetime of a cookie minted by a listener, in whole seconds.
    cookie_lifetime: int = 5
    #: Probe timeout (RFC 9002) before the first RTT sample, and its bounds,
    #: in seconds.  Once sampled it is ``srtt + max(4 rttvar, 1 ms)`` plus
    #: ``peer_ack_delay``: about a millisecond on a LAN, no 200 ms floor.
    initial_rto: float = 1.0
    min_rto: float = 0.001
    max_rto: float = 2.0
    #: Longest an MNET receiver deliberately holds an acknowledgement, added
    #: to the probe timeout.  None does: ours ack out-of-order data at once
    #: and the rest by every second segment or the end of each read batch
    #: (which the RTT samples already include), the references ack at once.
    peer_ack_delay: float = 0.0
    #: Congestion controller, a key of ``mnet_twisted.congestion.CONTROLLERS``:
    #: ``"adaptive"`` keeps its window through losses that come without a
    #: queue (random loss) and leaves slow start on rising delay;
    #: ``"newreno"`` halves on every loss.
    congestion_control: str = "adaptive"
    #: Spread each window over the round trip (``mnet_twisted.pacing``)
    #: instead of sending it as one burst per batch of acks.
    pacing: bool = True
    #: The peer is declared dead once we have heard nothing from it for
    #: ``peer_timeout`` seconds *and* ``dead_peer_retransmissions`` timed-out
    #: retransmissions in a row went unanswered (time alone would kill
    #: sessions on very lossy paths; a count alone would on very fast ones).
    #: With the defaults a peer that vanishes mid-transfer is given up after
    #: about 13 seconds (29 when the session was idle).
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
    #: In-order-but-unread plus out-of-order bytes kept for the application
    #: (out-of-order segments are charged 128 bytes each on top).  Beyond it,
    #: arriving data is dropped unacknowledged, which is how MNET pushes back
    #: on a sender.  The default holds a whole default window of segments
    #: with that charge, so a peer like us never has data evicted.
    receive_buffer_limit: int = 1024 * 1024 + 128 * 1024
    #: Unsent plus unacknowledged bytes above which writers should pause.
    #: Twice the largest window, so that while a hole is repaired new data
    #: can still go out behind it and keep the acks coming.
    send_buffer_high_water: int = 2 * 1024 * 1024
    #: ...and below which they may resume.
    send_buffer_low_water: int = 1024 * 1024
    #: Receive and send buffer of the UDP socket, in bytes (``SO_RCVBUF`` and
    #: ``SO_SNDBUF``).  The default 208 KiB of Linux holds about 90 full
    #: datagrams, far less than a window: bursts would overflow it and look
    #: like congestion.  The OS may cap it (Linux: ``net.core.rmem_max`` /
    #: ``wmem_max``, 4 MiB here by default); the port then keeps the largest
    #: size it was given, lifts the cap where it may (``SO_RCVBUFFORCE`` as
    #: root), and says what it got in its ``socketBuffers`` attribute and in
    #: one log line.  ``None`` leaves the OS default.
    socket_buffer_size: int | None = 4 * 1024 * 1024
    #: Search for a larger datagram size than ``max_datagram_size`` (DPLPMTUD,
    #: ``mnet_twisted.pmtud``): probes carry real data, are sent unfragmented,
    #: and a size is used only once the peer acknowledged a probe of it.  The
    #: Twisted port turns it off where it cannot forbid fragmentation.
    path_mtu_discovery: bool = True
    #: The largest datagram a probe may try (65,507 is IPv4's UDP limit).
    max_probe_datagram_size: int = 65507
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
        if self.peer_ack_delay < 0:
            raise ValueError("peer_ack_delay must not be negative")
        if self.congestion_control not in CONTROLLERS:
            raise ValueError(f"congestion_control must be one of {sorted(CONTROLLERS)}")
        if not self.max_datagram_size <= self.max_probe_datagram_size <= MAX_DATAGRAM:
            raise ValueError("max_probe_datagram_size must lie in [max_datagram_size, 65547]")
        if self.socket_buffer_size is not None and self.socket_buffer_size < 4096:
            raise ValueError("socket_buffer_size must be at least 4096 bytes (or None)")
        if self.receive_buffer_limit < self.max_segment_size:
            raise ValueError("receive_buffer_limit must hold at least one segment")

    @property
    def max_segment_size(self) -> int:
        """Largest payload of one DATA packet."""
        return self.max_datagram_size - DATA_HEADER_SIZE


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What one listener grants all its peers together (None: no bound).

    Each session's own buffers are bounded by its ``SessionConfig``; these
    bound how many sessions there are and what they hold in sum, so that a
    crowd of peers (or one peer from many ports) cannot add up to more.
    """

    #: Sessions accepted and open at once; a peer completing a handshake
    #: beyond it is answered ABORT (its connect fails as refused).  At about
    #: 3.3 KiB an idle session (bench/scale_sessions.py), the default bounds
    #: idle sessions to ~14 MiB.
    max_sessions: int | None = 4096
    #: Sessions open at once from one IP address (any port).
    max_sessions_per_source: int | None = None
    #: Out-of-order bytes (with their bookkeeping) held by all sessions
    #: together; a segment beyond it is not kept nor acknowledged, and its
    #: sender sends it again.  64 sessions' worth of full default windows.
    out_of_order_budget: int | None = 64 * 1024 * 1024
    #: COOKIE replies (answers to INIT, which cost two MACs and are 3.6
    #: times the INIT's size) per second, in all and per source network (a
    #: /24 or a /64).  Beyond them an INIT gets no answer (the connector
    #: retries); one client IP still opens 10,000 sessions a second.
    cookie_rate: float | None = 20_000.0
    cookie_rate_per_source: float | None = 10_000.0
    #: ABORT replies to strangers (unknown tags, refused handshakes) per
    #: second, in all and per source network.
    abort_rate: float | None = 2_000.0
    abort_rate_per_source: float | None = 200.0

    def __post_init__(self) -> None:
        for name in (
            "max_sessions",
            "max_sessions_per_source",
            "out_of_order_budget",
            "cookie_rate",
            "cookie_rate_per_source",
            "abort_rate",
            "abort_rate_per_source",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None)")
