"""
A behavioural stand-in for the reference MNET peers, for interop tests.

It does what ``shared/spec/MNET.md`` observed of the reference Go
implementation: 300 ms handshake retries (5 tries), stop-and-wait DATA of at
most 498 payload bytes on a fixed 200 ms timer (15 retransmits), a receiver
that accepts only the segment starting exactly at its offset and acks every
DATA with payload at once, and a SHUTDOWN exchange retransmitted every 400 ms.
It speaks only through `mnet_twisted.wire`, and keeps as little state as the
references do.  It is a test double, not an implementation to ship.
"""

from __future__ import annotations

import random

from mnet_twisted import wire

Address = tuple[str, int]

SEGMENT = 498
DATA_TIMER = 0.2
DATA_TRIES = 15
HANDSHAKE_TIMER = 0.3
HANDSHAKE_TRIES = 5
SHUTDOWN_TIMER = 0.4


class ReferencePeer:
    """One reference peer with at most one session, as listener or connector."""

    def __init__(self, address: Address, rng: random.Random, *, echo: bool = False) -> None:
        self.address = address
        self.rng = rng
        self.echo = echo
        self.tag = rng.randbytes(3)
        self.peer: Address | None = None
        self.peer_tag: bytes | None = None
        self.state = "idle"
        self.received = bytearray()
        self.outgoing = bytearray()
        self.sent = 0  # total bytes sent (the in-flight segment included)
        self.acked = 0
        self.closing = False
        self.outbox: list[tuple[bytes, Address]] = []
        self._timer: float | None = None
        self._tries = 0
        self._minted: bytes | None = None
        self._cookie: bytes | None = None
        self.aborted = False

    # -- driving -------------------------------------------------------

    def connect(self, listener: Address, now: float) -> None:
        self.peer = listener
        self.state = "init-sent"
        self._send(wire.Init(self.tag), now, HANDSHAKE_TIMER)

    def write(self, data: bytes, now: float) -> None:
        self.outgoing += data
        self._pump(now)

    def close(self, now: float) -> None:
        self.closing = True
        self._pump(now)

    @property
    def done(self) -> bool:
        return self.state in ("closed", "aborted")

    def deadline(self) -> float | None:
        return self._timer

    # -- input ---------------------------------------------------------

    def receive(self, datagram: bytes, source: Address, now: float) -> None:
        try:
            packet = wire.parse(datagram)
        except wire.MalformedPacket:
            return
        if isinstance(packet, wire.Init):
            if packet.version != 1:
                self.outbox.append((wire.Abort(packet.tag).to_bytes(), source))
                return
            self.peer, self.peer_tag = source, packet.tag
            cookie = wire.Cookie(self.tag, packet.tag, 1, int(now) + 5, self.rng.randbytes(20))
            self._minted = cookie.to_bytes()
            self.outbox.append((self._minted, source))
        elif isinstance(packet, wire.CookieEcho):
            if self._minted is None or datagram[1:] != self._minted[1:]:
                return
            if self.state == "idle":
                self.state = "open"
            self.outbox.append((wire.CookieAck(self.tag).to_bytes(), source))
        elif isinstance(packet, wire.Cookie) and self.state == "init-sent":
            self.peer_tag = packet.listener_tag
            self._cookie = wire.CookieEcho.of(packet).to_bytes()
            self.state = "echo-sent"
            self._send_raw(self._cookie, now, HANDSHAKE_TIMER, fresh=True)
        elif isinstance(packet, wire.CookieAck) and self.state == "echo-sent":
            if packet.tag == self.peer_tag:
                self.state = "open"
                self._timer = None
                self._pump(now)
        elif isinstance(packet, wire.Data) and self.state in ("open", "shutdown-sent"):
            self._on_data(packet, now)
        elif isinstance(packet, wire.Shutdown) and self.state == "open":
            self.acked = max(self.acked, packet.ack)
            self.state = "shutdown-received"
            self._pump(now)
        elif isinstance(packet, wire.ShutdownAck) and self.state == "shutdown-sent":
            self.outbox.append((wire.ShutdownComplete(self.tag).to_bytes(), self.peer))  # type: ignore[arg-type]
            self.state = "closed"
            self._timer = None
        elif isinstance(packet, wire.ShutdownComplete) and self.state == "shutdown-ack-sent":
            self.state = "closed"
            self._timer = None
        elif isinstance(packet, wire.Abort):
            self.state = "aborted"
            self.aborted = True
            self._timer = None

    def _on_data(self, packet: wire.Data, now: float) -> None:
        if packet.ack > self.acked:
            self.acked = packet.ack
            self._tries = 0
            self._timer = None
        if packet.payload:
            start = packet.seq - len(packet.payload)
            if start == len(self.received):
                self.received += packet.payload
                if self.echo:
                    self.outgoing += packet.payload
            # Every DATA with payload is acknowledged at once, in or out of order.
            ack = wire.Data(self.tag, self.sent, len(self.received))
            self.outbox.append((ack.to_bytes(), self.peer))  # type: ignore[arg-type]
        self._pump(now)

    # -- output --------------------------------------------------------

    def _pump(self, now: float) -> None:
        if self.state not in ("open", "shutdown-received") or self.peer_tag is None:
            return
        if self.acked < self.sent:
            return  # stop-and-wait: one segment in flight
        if self.sent < len(self.outgoing):
            end = min(self.sent + SEGMENT, len(self.outgoing))
            payload = bytes(self.outgoing[self.sent : end])
            self.sent = end
            self._send(wire.Data(self.tag, end, len(self.received), payload), now, DATA_TIMER)
        elif self.state == "open" and self.closing:
            self.state = "shutdown-sent"
            self._send(wire.Shutdown(self.tag, len(self.received)), now, SHUTDOWN_TIMER)
        elif self.state == "shutdown-received":
            self.state = "shutdown-ack-sent"
            self._send(wire.ShutdownAck(self.tag), now, SHUTDOWN_TIMER)

    def _send(self, packet: wire.Packet, now: float, interval: float) -> None:
        self._send_raw(packet.to_bytes(), now, interval, fresh=True)

    def _send_raw(self, datagram: bytes, now: float, interval: float, *, fresh: bool) -> None:
        assert self.peer is not None
        self.outbox.append((datagram, self.peer))
        if fresh:
            self._tries = 0
        self._last = datagram
        self._interval = interval
        self._timer = now + interval

    def on_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        limit = DATA_TRIES if self.state in ("open", "shutdown-received") else HANDSHAKE_TRIES
        if self.state in ("shutdown-sent", "shutdown-ack-sent"):
            limit = int(3 / SHUTDOWN_TIMER)  # "aborts after 3 s without progress"
        self._tries += 1
        if self._tries > limit:
            assert self.peer is not None
            self.outbox.append((wire.Abort(self.tag).to_bytes(), self.peer))
            self.state = "aborted"
            self._timer = None
            return
        self._send_raw(self._last, now, self._interval, fresh=False)
