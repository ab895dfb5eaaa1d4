"""
The UDP port MNET listens on: Twisted's, plus one notice per read batch,
the kernel's UDP offloads, and a write without per-call address checks.

Twisted's ``udp.Port.doRead`` reads datagrams until the socket is empty (or
its per-call quota is used) and hands each to ``datagramReceived``.  The
MNET protocol wants to know when such a batch ends: that is the moment to
answer everything it read — acks, echoes, the window's next segments — in
one go, rather than one reactor turn later through ``callLater(0)``.

A read that comes after a quiet spell takes one datagram (or one GRO
batch) and returns, as Twisted's TCP takes one ``recv`` per readiness: the
reactor polls level-triggered, so anything more that is waiting brings it
straight back, and then reads drain the socket.  Interactive traffic thus
saves a failing ``recvmsg`` (a syscall and an exception) per message.

On Linux, reads use GRO (``UDP_GRO``: consecutive datagrams of one sender
arrive as one buffer, handed on as one batch) and ``writeDatagrams`` uses
GSO (``UDP_SEGMENT``: one ``sendmsg`` for many equal-sized datagrams).
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from time import perf_counter
from typing import Any

from twisted.internet import udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.python import log

from .counts import Counts, count_property

__all__ = ["MNETPort", "listenMNETUDP"]


#: Linux's UDP generic segmentation offload: one sendmsg carries many
#: equal-sized datagrams, cut apart by the kernel (or the NIC).
_SOL_UDP = 17
_UDP_SEGMENT = 103
#: The kernel takes at most this many segments, and 64 KiB in all, per call.
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
#: Linux's UDP generic receive offload: consecutive datagrams of one flow
#: arrive as one buffer, with their size in a control message.
_UDP_GRO = 104
_GRO_CONTROL = struct.Struct("=i")
#: The largest buffer a GRO read returns.
_GRO_BUFFER = 65536
#: A read starting this long after the last one ended finds a quiet socket
#: (seconds).  Back-to-back wake-ups of a busy socket come a reactor turn
#: apart, well under this; a request/response peer answers well over it.
_QUIET_GAP = 40e-6
#: What a kernel or device without UDP segmentation answers.
_GSO_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOPROTOOPT, errno.EIO, errno.EOPNOTSUPP})


def _segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The GRO segment size a read's control messages give (0: not coalesced)."""
    for level, kind, value in ancillary:
        if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= _GRO_CONTROL.size:
            return int(_GRO_CONTROL.unpack_from(value)[0])
    return 0


class MNETPort(udp.Port):
    """A ``udp.Port`` that brackets each read batch with calls to its protocol.

    @ivar gso: whether ``writeDatagrams`` hands batches to the kernel with
        UDP_SEGMENT (Linux); it turns itself off at the first refusal.
    """

    gso = sys.platform == "linux"
    #: Datagrams after which a coalesced read batch ends and the protocol
    #: answers it (the last GRO read may carry it past by up to 63; reads
    #: without GRO keep Twisted's quota).  Every ack waits for the end of
    #: its batch, and Twisted's quota of 256 KiB is some 180 full-size
    #: datagrams, milliseconds of work on a busy host: that wait went into
    #: every RTT sample, so the sender saw a queue where there was none,
    #: took random losses for congestion and waited longer for its acks.
    #: (A count, not bytes: four 64 KiB datagrams take little time.)
    maxDatagramsPerRead = 64
    #: Whether reads take coalesced batches (UDP_GRO); set in startListening.
    gro = False
    #: Bind with SO_REUSEPORT, so several processes can serve one port.
    reusePort = False

    _lastReadEnded = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts = Counts("readBatches", "quietReads", "coalescedReads", "batchedWrites")
        self._readSize = max(self.maxPacketSize, _GRO_BUFFER)
        self._counts = self.counts.live

    def afterWave(self) -> None:
        """A wave of sessions is over: fold the counts, forget the time (see ``counts``)."""
        self.counts.fold()
        self._lastReadEnded = 0.0  # (the next read is a quiet one anyway)

    readBatches = count_property(
        "readBatches", "Read batches (readiness events), the unit the protocol answers in."
    )
    quietReads = count_property(
        "quietReads", "Reads that took one datagram (or batch) after a quiet spell."
    )
    coalescedReads = count_property(
        "coalescedReads", "Reads that brought several datagrams at once: how much GRO did."
    )
    batchedWrites = count_property(
        "batchedWrites", "``sendmsg`` calls that sent several datagrams: how much GSO did."
    )

    def createInternetSocket(self) -> socket.socket:
        sock: socket.socket = super().createInternetSocket()
        if self.reusePort:
            # Before bind, as the kernel requires; every socket of the group
            # must set it (and belong to the same user).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock

    def startListening(self) -> None:
        super().startListening()
        if sys.platform == "linux":
            try:
                self.socket.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            except OSError:
                pass  # an older kernel: one datagram per read, as usual
            else:
                self.gro = True

    def setGRO(self, enabled: bool) -> None:
        """Turn coalesced reads on or off (tests use it to cover both paths)."""
        self.socket.setsockopt(_SOL_UDP, _UDP_GRO, 1 if enabled else 0)
        self.gro = enabled

    def doRead(self, drain: bool = False) -> None:
        """Read a batch; C{drain} reads on until the socket is empty (or the quota is used)."""
        protocol = self.protocol
        started = getattr(protocol, "readBatchStarted", None)
        if started is None:
            return super().doRead()
        started()
        self._counts["readBatches"] += 1
        try:
            if self.gro:
                if not drain and perf_counter() - self._lastReadEnded > _QUIET_GAP:
                    return self._readQuiet()
                return self._readCoalesced()
            return super().doRead()
        finally:
            protocol.readBatchEnded()
            self._lastReadEnded = perf_counter()

    def _readQuiet(self) -> None:
        """The read after a quiet spell: one ``recvmsg``, handed straight on.

        An interactive peer's message is one datagram: it goes to
        ``datagramReceived`` without the batch loop's bookkeeping, which
        was half of this port's work per message.
        """
        self._counts["quietReads"] += 1
        try:
            data, ancillary, _, addr = self.socket.recvmsg(self._readSize, 64)
        except OSError as error:
            self._readFailed(error)
            return
        if self.addressFamily == socket.AF_INET6:
            addr = addr[:2]
        run = self._datagramsIn(data, ancillary)
        batch = getattr(self.protocol, "datagramsReceived", None) if len(run) > 1 else None
        self._handRun(run, addr, batch)

    def _readCoalesced(self) -> None:
        """``doRead`` with GRO: each read may hold many datagrams of one sender.

        Consecutive datagrams from one address, whether the kernel
        coalesced them or they came one ``recvmsg`` at a time, reach the
        protocol as one ``datagramsReceived`` batch (when it has that
        method), so that it can take a run of acks as a whole.
        """
        read = datagrams = 0
        size = self._readSize
        ipv6 = self.addressFamily == socket.AF_INET6
        run: list[bytes] = []
        run_from: Any = None
        batch = getattr(self.protocol, "datagramsReceived", None)
        try:
            while read < self.maxThroughput and datagrams < self.maxDatagramsPerRead:
                try:
                    data, ancillary, _, addr = self.socket.recvmsg(size, 64)
                except OSError as error:
                    if run:
                        self._handRun(run, run_from, batch)
                        run = []
                    self._readFailed(error)
                    return
                read += len(data)
                if ipv6:
                    addr = addr[:2]
                if addr != run_from and run:
                    self._handRun(run, run_from, batch)
                    run = []
                run_from = addr
                taken = self._datagramsIn(data, ancillary)
                datagrams += len(taken)
                run += taken
        finally:
            if run:
                self._handRun(run, run_from, batch)

    def _datagramsIn(self, data: bytes, ancillary: list[tuple[int, int, bytes]]) -> list[bytes]:
        """The datagrams one ``recvmsg`` brought: several, if the kernel coalesced them."""
        largest = self.maxPacketSize
        if not ancillary and len(data) <= largest:
            return [data]  # the usual case: one datagram, whole
        segment = _segment_size(ancillary)
        if 0 < segment < len(data):
            self._counts["coalescedReads"] += 1
            return [data[at : at + min(segment, largest)] for at in range(0, len(data), segment)]
        # What recvfrom(maxPacketSize) would have returned.
        return [data if len(data) <= largest else data[:largest]]

    def _readFailed(self, error: OSError) -> None:
        """A ``recvmsg`` failed: nothing more to read, or the peer refused; else it raises."""
        if error.args[0] in udp._sockErrReadIgnore:
            return
        if error.args[0] in udp._sockErrReadRefuse:
            if self._connectedAddr:
                self.protocol.connectionRefused()
            return
        raise error

    def _handRun(self, run: list[bytes], addr: Any, batch: Any) -> None:
        """Give the protocol datagrams that came in a row from ``addr``.

        ``batch`` is its ``datagramsReceived``, if it has one.
        """
        if batch is not None and len(run) > 1:
            try:
                batch(run, addr)
            except BaseException:
                log.err()
            return
        receive = self.protocol.datagramReceived
        for datagram in run:
            try:
                receive(datagram, addr)
            except BaseException:
                log.err()

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

    def writeDatagrams(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        """Send ``datagrams`` to one peer, in order, in as few calls as the kernel allows.

        With GSO, each run of equal-sized datagrams (the last of a run may be
        shorter) goes in one ``sendmsg``.  Where the kernel refuses that (no
        GSO here, or a device that cannot segment), GSO is turned off for
        this port and the rest go one at a time.  Errors are those of
        ``writeDatagram``; the first one ends the call.
        """
        index, count = 0, len(datagrams)
        while index < count:
            end = _runEnd(datagrams, index) if self.gso else index + 1
            if end - index > 1 and self._sendSegmented(datagrams[index:end], addr):
                self._counts["batchedWrites"] += 1
            else:
                for datagram in datagrams[index:end]:
                    self.writeDatagram(datagram, addr)
            index = end

    def _sendSegmented(self, run: list[bytes], addr: tuple[str, int]) -> bool:
        """One GSO ``sendmsg`` for ``run``; False if this kernel or device cannot."""
        control = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", len(run[0])))]
        target = () if self._connectedAddr else (addr,)
        try:
            self.socket.sendmsg(run, control, 0, *target)
        except OSError as error:
            if error.errno not in _GSO_UNSUPPORTED:
                raise
            self.gso = False
            return False
        return True


def _runEnd(datagrams: list[bytes], index: int) -> int:
    """One past the last datagram that can join one GSO send starting at ``index``."""
    size = len(datagrams[index])
    limit = min(len(datagrams), index + _GSO_MAX_SEGMENTS, index + _GSO_MAX_BYTES // size)
    end = index + 1
    while end < limit:
        following = len(datagrams[end])
        if following > size:
            break
        end += 1
        if following < size:
            break  # only the last of a run may be shorter
    return end


def listenMNETUDP(
    reactor: Any,
    port: int,
    protocol: Any,
    interface: str,
    maxPacketSize: int,
    reusePort: bool = False,
) -> Any:
    """``reactor.listenUDP`` with an :class:`MNETPort` where the reactor allows it.

    ``reusePort`` binds with ``SO_REUSEPORT``: the kernel then spreads peers
    over every socket bound so to the port, keeping each peer address on one.
    """
    if reusePort and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reusePort: this platform has no SO_REUSEPORT")
    if not isinstance(reactor, PosixReactorBase):
        if reusePort:
            raise ValueError(f"reusePort needs a POSIX reactor, not {type(reactor).__name__}")
        # Another reactor (or a test double): its own port, flushed per turn.
        return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=maxPacketSize)
    listening = MNETPort(port, protocol, interface, maxPacketSize, reactor)
    listening.reusePort = reusePort
    listening.startListening()
    return listening
