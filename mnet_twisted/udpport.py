"""
The UDP port MNET listens on: Twisted's, plus one notice per read batch and
a write without per-call address checks.

Twisted's ``udp.Port.doRead`` reads datagrams until the socket is empty (or
its per-call quota is used) and hands each to ``datagramReceived``.  The
MNET protocol wants to know when such a batch ends: that is the moment to
answer everything it read — acks, echoes, the window's next segments — in
one go, rather than one reactor turn later through ``callLater(0)``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import udp
from twisted.internet.posixbase import PosixReactorBase

__all__ = ["MNETPort", "listenMNETUDP"]


class MNETPort(udp.Port):
    """A ``udp.Port`` that brackets each read batch with calls to its protocol."""

    def doRead(self) -> None:
        protocol = self.protocol
        started = getattr(protocol, "readBatchStarted", None)
        if started is None:
            return super().doRead()
        started()
        try:
            return super().doRead()
        finally:
            protocol.readBatchEnded()

    def writeDatagram(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """``write()`` for an address the socket itself reported or connected to.

        ``write`` checks on every call that the address is an IP literal of
        the socket's family; MNET only ever answers addresses its socket
        gave it, so the hot path skips that and goes straight to the
        syscall.  Any error is handed to ``write``, which retries or raises
        exactly as Twisted does.
        """
        try:
            if self._connectedAddr:
                self.socket.send(datagram)
            else:
                self.socket.sendto(datagram, addr)
        except OSError:
            self.write(datagram, None if self._connectedAddr else addr)


def listenMNETUDP(
    reactor: Any, port: int, protocol: Any, interface: str, maxPacketSize: int
) -> Any:
    """``reactor.listenUDP`` with an :class:`MNETPort` where the reactor allows it."""
    if not isinstance(reactor, PosixReactorBase):
        # Another reactor (or a test double): its own port, flushed per turn.
        return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=maxPacketSize)
    listening = MNETPort(port, protocol, interface, maxPacketSize, reactor)
    listening.startListening()
    return listening
