"""
MNET stream endpoints: drop-in replacements for TCP4/TCP6 endpoints.

``MNETServerEndpoint(reactor, 9000).listen(factory)`` and
``MNETClientEndpoint(reactor, "example.org", 9000).connect(factory)`` give any
unchanged Twisted stream protocol an MNET session instead of a TCP connection.
"""

from __future__ import annotations

#: Docstrings here use epytext (C{code}, L{link}, @param), as Twisted's do.
__docformat__ = "epytext"

import dataclasses
import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import (
    IListeningPort,
    IResolutionReceiver,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .config import ListenerLimits, SessionConfig
from .protocol import ListenerStats, MNETDatagramProtocol
from .secretfile import SecretFileWatcher, load_or_create
from .udpport import listenMNETUDP
from .wire import MAX_DATAGRAM

__all__ = ["MNETClientEndpoint", "MNETListeningPort", "MNETServerEndpoint"]


def _listenUDP(
    reactor: Any, port: int, protocol: Any, interface: str, reusePort: bool = False
) -> Any:
    # Read whole datagrams: an MNET peer may send DATA of 65535 payload bytes.
    return listenMNETUDP(reactor, port, protocol, interface, MAX_DATAGRAM, reusePort)


_log = Logger()

#: Seconds between looks at a listener's cookie secret file, for rotation.
SECRET_POLL_INTERVAL = 1.0

#: Seconds a shared client port stays open after its last session ends.
SHARED_IDLE_GRACE = 1.0
#: The shared client ports: (reactor, interface, port) -> their protocol.
_SHARED_CLIENTS: dict[tuple[Any, str, int], MNETDatagramProtocol] = {}


def _sharedClientProtocol(
    reactor: Any, interface: str, port: int, config: SessionConfig
) -> MNETDatagramProtocol:
    key = (reactor, interface, port)
    protocol = _SHARED_CLIENTS.get(key)
    if protocol is None or not protocol.usable:
        protocol = MNETDatagramProtocol(
            reactor, config=config, closeWhenIdle=True, idleGrace=SHARED_IDLE_GRACE
        )
        _listenUDP(reactor, port, protocol, interface)
        _SHARED_CLIENTS[key] = protocol
    return protocol


@implementer(IListeningPort)
class MNETListeningPort:
    """
    A listening MNET port: one UDP socket accepting sessions for a factory.

    All sessions share the UDP socket, so they cannot outlive it the way TCP
    connections outlive a listening socket: L{stopListening} stops accepting
    at once, closes every session gracefully (data already written is still
    delivered, then the SHUTDOWN exchange), and closes the socket once none
    is left.  Sessions still open C{stopGrace} seconds later (a peer that
    does not read, or does not answer SHUTDOWN) are aborted, so stopping
    takes a bounded time whatever the peers do.

    With a C{secretWatcher} (a L{SecretFileWatcher}) the port looks at the
    secret file every L{SECRET_POLL_INTERVAL} seconds and, when it holds a
    new secret, mints cookies under it while still accepting the previous
    one's for a cookie lifetime.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        factory: Any,
        interface: str = "",
        config: SessionConfig | None = None,
        cookies: Any = None,
        stopGrace: float = 10.0,
        limits: ListenerLimits | None = None,
        traceDirectory: str | None = None,
        reusePort: bool = False,
        secretWatcher: SecretFileWatcher | None = None,
        logSessions: bool = False,
    ) -> None:
        self._reactor = reactor
        self._logSessions = logSessions
        self._reusePort = reusePort
        self._secretWatcher = secretWatcher
        self._secretCall: Any = None
        self._limits = limits
        self._traceDirectory = traceDirectory
        self._port = port
        self._interface = interface
        self.factory = factory
        self._config = config if config is not None else SessionConfig()
        self._cookies = cookies
        self._stopGrace = stopGrace
        self._graceCall: Any = None
        self._udpPort: Any = None
        self.protocol: MNETDatagramProtocol | None = None
        self._waiters: list[defer.Deferred[None]] | None = None
        self._host: Any = None

    def __repr__(self) -> str:
        return f"<MNETListeningPort of {self.factory!r} on {self._host}>"

    def startListening(self) -> None:
        if self._udpPort is not None:
            return
        self.protocol = MNETDatagramProtocol(
            self._reactor,
            factory=self.factory,
            config=self._config,
            cookies=self._cookies,
            accepting=True,
            limits=self._limits,
            traceDirectory=self._traceDirectory,
        )
        self.protocol.logSessions = self._logSessions
        self.factory.doStart()
        try:
            self._udpPort = _listenUDP(
                self._reactor, self._port, self.protocol, self._interface, self._reusePort
            )
        except BaseException:
            self.factory.doStop()
            raise
        self._host = self._udpPort.getHost()
        if self._secretWatcher is not None:
            self._secretCall = self._reactor.callLater(SECRET_POLL_INTERVAL, self._pollSecret)

    def _pollSecret(self) -> None:
        self._secretCall = None
        watcher, protocol = self._secretWatcher, self.protocol
        if watcher is None or protocol is None or self._udpPort is None:
            return
        try:
            secret = watcher.poll()
            if secret is not None:
                protocol.demux.rotate_cookie_secret(secret, self._reactor.seconds())
                _log.info("cookie secret rotated from {path}", path=str(watcher.path))
        except (OSError, ValueError) as error:
            # The secret in use stays; the file is read again next time.
            _log.warn(
                "cookie secret file {path} unusable, keeping the current secret: {error}",
                path=str(watcher.path),
                error=str(error),
            )
        self._secretCall = self._reactor.callLater(SECRET_POLL_INTERVAL, self._pollSecret)

    def stopListening(self) -> defer.Deferred[None]:
        """Stop accepting, close every session gracefully; fires once the socket is closed."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._udpPort is None or self.protocol is None:
            waiter.callback(None)
            return waiter
        if self._waiters is None:
            self._waiters = []
            self.protocol.loseAllConnections()
            self._graceCall = self._reactor.callLater(self._stopGrace, self._graceOver)
            self.protocol.closeWhenIdle().addCallback(self._closed)
        if self._waiters is not None:
            self._waiters.append(waiter)
        else:
            waiter.callback(None)
        return waiter

    def _graceOver(self) -> None:
        self._graceCall = None
        if self.protocol is not None and self._udpPort is not None:
            self.protocol.abortAllConnections()

    def _closed(self, _: None) -> None:
        # The UDP port is closed: its protocol's stopProtocol ran.
        for call in (self._graceCall, self._secretCall):
            if call is not None and call.active():
                call.cancel()
        self._graceCall = self._secretCall = None
        self._udpPort = None
        waiters, self._waiters = self._waiters or [], None
        self.factory.doStop()
        for waiter in waiters:
            waiter.callback(None)

    loseConnection = stopListening

    def getHost(self) -> Any:
        return self._host

    def getStats(self) -> ListenerStats:
        """Totals of this port: sessions, refusals, limits hit, datagrams (L{ListenerStats})."""
        if self.protocol is None:
            raise RuntimeError("the port is not listening")
        return self.protocol.getStats()


@implementer(IStreamServerEndpoint)
class MNETServerEndpoint:
    """
    Listen for MNET sessions on a UDP port.

    @param port: the UDP port number (0 picks a free one).
    @param interface: the local address to bind; C{''} is every IPv4
        address, C{'::'} every IPv6 (and, depending on the OS, IPv4) address.
    @param config: a L{SessionConfig} for every accepted session.
    @param cookieSecretFile: a file holding the cookie secret, so that several
        processes (or restarts) accept each other's cookies; created with a
        random secret when missing.  Without it, a random in-memory secret.
        The port notices when the file is given a new secret
        (C{python -m mnet_twisted.secretfile rotate PATH}) and accepts the
        previous one for a cookie lifetime (endpoint strings:
        C{secretFile=PATH}).
    @param reusePort: bind with C{SO_REUSEPORT}, so that several processes
        (each with its own endpoint, all sharing C{cookieSecretFile}) serve
        one port; the kernel keeps each peer address on one of them
        (endpoint strings: C{reusePort=yes}).
    @param stopGrace: seconds C{stopListening} lets sessions close gracefully
        before it aborts the rest (endpoint strings: C{stopGrace=S}).
    @param limits: a L{ListenerLimits}: how many sessions, from one address
        and in all, and how many out-of-order bytes all of them may hold
        (endpoint strings: C{maxSessions=N}, C{maxSessionsPerSource=N},
        C{outOfOrderBudget=BYTES}; C{none} lifts a bound).
    @param traceDirectory: write each session's packet trace (JSON lines,
        L{mnet_twisted.trace}) into this directory (endpoint strings:
        C{trace=DIR}).
    @param logSessions: log each session's opening and ordinary end (clean
        close, abort from this side) at debug level; ends that went wrong are
        logged either way (L{MNETDatagramProtocol.logSessions}; endpoint
        strings: C{logSessions=yes}).
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        interface: str = "",
        config: SessionConfig | None = None,
        cookieSecretFile: str | None = None,
        stopGrace: float = 10.0,
        limits: ListenerLimits | None = None,
        traceDirectory: str | None = None,
        reusePort: bool = False,
        logSessions: bool = False,
    ) -> None:
        self._reactor = reactor
        self._reusePort = reusePort
        self._logSessions = logSessions
        self._port = port
        self._interface = interface
        self._config = config
        self._cookieSecretFile = cookieSecretFile
        self._stopGrace = stopGrace
        self._limits = limits
        self._traceDirectory = traceDirectory

    def __repr__(self) -> str:
        return f"<MNETServerEndpoint {self._interface or '*'}:{self._port}>"

    def listen(self, protocolFactory: Any) -> defer.Deferred[MNETListeningPort]:
        return defer.execute(self._listen, protocolFactory)

    def _listen(self, protocolFactory: Any) -> MNETListeningPort:
        from .cookie import CookieMinter

        watcher = None
        if self._cookieSecretFile is not None:
            secret = load_or_create(self._cookieSecretFile)
            cookies = CookieMinter(secret)
            watcher = SecretFileWatcher(self._cookieSecretFile, secret)
        else:
            cookies = CookieMinter.random()
        port = MNETListeningPort(
            self._reactor,
            self._port,
            protocolFactory,
            self._interface,
            self._config,
            cookies,
            stopGrace=self._stopGrace,
            limits=self._limits,
            traceDirectory=self._traceDirectory,
            reusePort=self._reusePort,
            secretWatcher=watcher,
            logSessions=self._logSessions,
        )
        port.startListening()
        return port


@implementer(IResolutionReceiver)
class _Resolution:
    """Collects the addresses of one host-name lookup."""

    def __init__(self) -> None:
        self.addresses: list[Any] = []
        self.done: defer.Deferred[list[Any]] = defer.Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


@implementer(IStreamClientEndpoint)
class MNETClientEndpoint:
    """
    Open an MNET session to C{host}:C{port}.

    Each C{connect()} uses its own UDP port, closed when its session ends,
    unless C{shareSocket} is true: then every connection of every such
    endpoint on this reactor (per address family and bind address) shares
    one UDP port, opened when the first needs it and closed a second after
    its last session is over.  Sharing saves a socket and its set-up per connection;
    its price is that a shared, unconnected socket hears no ICMP "port
    unreachable", so a connection to a port where nothing listens ends by
    C{timeout} rather than at once.

    @param timeout: seconds to wait for the handshake (the session's
        C{connect_timeout}).
    @param bindAddress: C{(host, port)} to bind the local UDP port to;
        otherwise an ephemeral port of the peer's address family.
    @param shareSocket: share one UDP port between connections (see above).
    @param traceDirectory: write each session's packet trace (JSON lines,
        L{mnet_twisted.trace}) into this directory (endpoint strings:
        C{trace=DIR}).
    @param logSessions: log each session's opening and ordinary end at debug
        level, as L{MNETServerEndpoint} does (endpoint strings:
        C{logSessions=yes}); with C{shareSocket}, it turns them on for the
        shared port's sessions from then on.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        timeout: float = 10,
        bindAddress: tuple[str, int] | None = None,
        config: SessionConfig | None = None,
        shareSocket: bool = False,
        traceDirectory: str | None = None,
        logSessions: bool = False,
    ) -> None:
        self._reactor = reactor
        self._traceDirectory = traceDirectory
        self._logSessions = logSessions
        self._host = host
        # Whether the host needs a lookup is decided once, not per connect().
        self._hostIsAddress = isIPAddress(host) or isIPv6Address(host)
        self._port = port
        self._timeout = timeout
        self._bindAddress = bindAddress
        self._shareSocket = shareSocket
        base = config if config is not None else SessionConfig()
        self._config = dataclasses.replace(base, connect_timeout=float(timeout))

    def __repr__(self) -> str:
        return f"<MNETClientEndpoint {self._host}:{self._port}>"

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        connecting: list[defer.Deferred[Any]] = []
        cancelled: list[bool] = []

        def cancel(outer: defer.Deferred[Any]) -> None:
            if connecting:
                # Aborts the session; its Deferred fails with
                # ConnectingCancelledError, which reaches `outer` by the chain.
                connecting[0].cancel()
            else:
                # Still resolving: the lookup's answer will be ignored.
                cancelled.append(True)
                outer.errback(ConnectingCancelledError(self._address(self._host)))

        outer: defer.Deferred[Any] = defer.Deferred(cancel)

        def resolved(ip: str) -> None:
            if cancelled:
                return
            try:
                d = self._connectTo(ip, protocolFactory)
            except Exception:
                outer.errback()
                return
            connecting.append(d)
            d.chainDeferred(outer)

        def failed(failure: Failure) -> None:
            if not cancelled:
                outer.errback(failure)

        self._resolve().addCallbacks(resolved, failed)
        return outer

    def _address(self, host: str) -> Any:
        if isIPv6Address(host):
            return IPv6Address("UDP", host, self._port)
        return IPv4Address("UDP", host, self._port)

    def _resolve(self) -> defer.Deferred[str]:
        host = self._host
        if self._hostIsAddress:
            return defer.succeed(host)
        receiver = _Resolution()
        try:
            self._reactor.nameResolver.resolveHostName(
                receiver,
                host,
                portNumber=self._port,
                addressTypes=[IPv4Address, IPv6Address],
                transportSemantics="UDP",
            )
        except Exception:
            return defer.fail()

        def pick(addresses: list[Any]) -> str:
            # Prefer IPv4: it is what "localhost" and dual-stack servers
            # most often listen on.
            for address in addresses:
                if isinstance(address, IPv4Address):
                    return str(address.host)
            for address in addresses:
                if isinstance(address, IPv6Address):
                    return str(address.host)
            raise DNSLookupError(f"no address for {host!r}")

        return receiver.done.addCallback(pick)

    def _connectTo(self, ip: str, protocolFactory: Any) -> defer.Deferred[Any]:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET  # ip is a literal here
        if self._bindAddress is not None:
            interface, bind_port = self._bindAddress[0], int(self._bindAddress[1])
        else:
            interface = "::" if family == socket.AF_INET6 else ""
            bind_port = 0
        if self._shareSocket:
            shared = _sharedClientProtocol(self._reactor, interface, bind_port, self._config)
            if self._traceDirectory is not None:
                shared.traceDirectory = self._traceDirectory  # for sessions opened from now on
            if self._logSessions:
                shared.logSessions = True
            return shared.connect((ip, self._port), protocolFactory, self._config)
        protocol = MNETDatagramProtocol(
            self._reactor,
            config=self._config,
            closeWhenIdle=True,
            traceDirectory=self._traceDirectory,
        )
        protocol.logSessions = self._logSessions
        udp_port = _listenUDP(self._reactor, bind_port, protocol, interface)
        try:
            # The port serves this one peer: a connected socket lets the kernel
            # drop strangers' datagrams and report "port unreachable", so a
            # connection to a closed port is refused at once, as with TCP.
            udp_port.connect(ip, self._port)
            return protocol.connect((ip, self._port), protocolFactory, self._config)
        except BaseException:
            udp_port.stopListening()
            raise
