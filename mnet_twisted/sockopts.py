"""
Socket options of the UDP port: buffer sizing now, GSO/GRO detection later.

Kept apart from the protocol adapter because it speaks to the OS, not to
Twisted, and because what the OS grants differs between machines.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from dataclasses import dataclass

__all__ = ["SocketBuffers", "size_socket_buffers"]

#: Linux lets a process with CAP_NET_ADMIN go past net.core.{r,w}mem_max.
_FORCE_OPTIONS = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32} if sys.platform == "linux" else {}


@dataclass(frozen=True)
class SocketBuffers:
    """What the OS granted: bytes usable for datagrams in each direction."""

    receive: int
    send: int
    requested: int

    @property
    def capped(self) -> bool:
        """Whether the OS gave less than was asked for."""
        return min(self.receive, self.send) < self.requested


def _usable(sock: socket.socket, option: int) -> int:
    value = sock.getsockopt(socket.SOL_SOCKET, option)
    # Linux reports twice what was set: the other half is its own bookkeeping.
    return value // 2 if sys.platform == "linux" else value


def _grow(sock: socket.socket, option: int, size: int) -> int:
    before = _usable(sock, option)
    if before >= size:
        return before  # never shrink what an administrator made larger
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    granted = _usable(sock, option)
    force = _FORCE_OPTIONS.get(option)
    if granted < size and force is not None:
        # Without the privilege this fails and the capped size stays.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        granted = _usable(sock, option)
    return granted


def size_socket_buffers(sock: socket.socket, size: int) -> SocketBuffers:
    """Ask for ``size``-byte receive and send buffers; return what was granted."""
    receive = _grow(sock, socket.SO_RCVBUF, size)
    send = _grow(sock, socket.SO_SNDBUF, size)
    return SocketBuffers(receive, send, size)


#: Linux's per-socket "don't fragment" control: IP(V6)_MTU_DISCOVER set to
#: IP_PMTUDISC_PROBE sends with DF and refuses (EMSGSIZE) what exceeds the
#: interface MTU, without consulting the route's cached path MTU.
_MTU_DISCOVER = {
    socket.AF_INET: (socket.IPPROTO_IP, 10),
    socket.AF_INET6: (socket.IPPROTO_IPV6, 23),
}
_PMTUDISC_PROBE = 3


class FragmentationControl:
    """Send single datagrams unfragmented on a socket that otherwise may fragment."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._option = _MTU_DISCOVER.get(sock.family) if sys.platform == "linux" else None
        self._default: int | None = None
        if self._option is not None:
            try:
                self._default = sock.getsockopt(*self._option)
            except OSError:
                self._option = None

    @property
    def supported(self) -> bool:
        """Whether datagrams can be sent with fragmentation forbidden here."""
        return self._option is not None

    def forbid(self) -> None:
        if self._option is not None:
            self._sock.setsockopt(*self._option, _PMTUDISC_PROBE)

    def restore(self) -> None:
        if self._option is not None and self._default is not None:
            self._sock.setsockopt(*self._option, self._default)
