"""
``mnet-cat`` (or ``python -m mnet_twisted.cat``): standard input and output
over one MNET session, as netcat does over TCP.

    mnet-cat HOST PORT                  # connect; stdin -> peer, peer -> stdout
    mnet-cat --listen PORT [--interface ADDR]   # wait for one session, then the same
    ssh -o ProxyCommand='mnet-cat %h 9022' user@host   # behind a mnet-forward to :22

MNET has no half-close, so the end of standard input cannot be passed on
as TCP's FIN is; ``--eof`` says what it does.  ``close`` (the default when
connecting) closes the session gracefully: what was written is delivered,
and what the peer had written by then arrives before the close completes,
but the peer can write nothing after that (a request and its reply work; a
download does not: use ``--eof wait``).  ``wait`` (the default with
``--listen``) keeps the session until the peer closes it, so a listener fed
from ``/dev/null`` still receives everything a client sends.  When standard
input is a file and standard error a terminal, a progress line shows the
bytes sent, the rate and the time left; otherwise nothing is printed but
errors.

SIGHUP (what OpenSSH sends its ProxyCommand when it is done), SIGTERM and
SIGINT close the session gracefully before exiting, so the peer learns at
once that it is over; a peer that does not finish the close within
``HANGUP_GRACE`` seconds is sent ABORT.

Exit status: 0 the session closed cleanly; 1 no session (refused, no
answer, unknown host); 3 the session was lost or aborted; 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import sys
import time
from typing import Any, TextIO

from twisted.internet import defer, error, stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["main"]

EXIT_CLEAN, EXIT_NO_SESSION, EXIT_USAGE, EXIT_LOST = 0, 1, 2, 3
#: Seconds a close started by a signal may take before the session is aborted.
HANGUP_GRACE = 2.0


class Progress:
    """A progress line on a terminal: bytes sent of ``total``, rate, time left."""

    def __init__(self, total: int, out: TextIO, clock: Any = time.monotonic) -> None:
        self._total = total
        self._out = out
        self._clock = clock
        self._started = clock()
        self._shown = 0.0
        self.sent = 0

    def advance(self, count: int) -> None:
        self.sent += count
        now = self._clock()
        if now - self._shown >= 0.2 or self.sent >= self._total:
            self._shown = now
            self._out.write("\r" + self.line(now))
            self._out.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-6)
        rate = self.sent / elapsed
        share = self.sent / self._total if self._total else 1.0
        left = (self._total - self.sent) / rate if rate > 0 else float("inf")
        eta = f"{left:5.1f} s left" if left != float("inf") else "  ? s left"
        return (
            f"{self.sent / 1e6:10.1f} / {self._total / 1e6:.1f} MB {share:6.1%}"
            f"  {rate / 1e6:7.2f} MB/s  {eta}"
        )

    def finish(self) -> None:
        self._out.write("\n")
        self._out.flush()


@implementer(IHalfCloseableProtocol)
class _Stdio(Protocol):
    """Standard input and output: the local end of the bridge."""

    session: Any = None
    progress: Progress | None = None
    #: Whether the end of standard input closes the session (``--eof close``).
    closeOnEOF = True
    #: How the session ended (set when it does).
    exitStatus = EXIT_LOST

    def __init__(self) -> None:
        #: Fires once standard output has been flushed and closed.
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.session is not None:
            self.session.transport.write(data)
            if self.progress is not None:
                self.progress.advance(len(data))

    def readConnectionLost(self) -> None:
        """End of standard input: close the session (``--eof close``), or wait for the peer."""
        if self.session is not None and self.closeOnEOF:
            self.session.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass  # stdout closed (e.g. a pipe's reader left): keep sending

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


class _Session(Protocol):
    """The MNET session: the remote end of the bridge."""

    def __init__(self, local: _Stdio, ended: defer.Deferred[int]) -> None:
        self.local = local
        self.ended = ended
        #: Deferreds fired when the session is over (besides ``ended``).
        self.lostWaiters: list[defer.Deferred[None]] = []

    def connectionMade(self) -> None:
        self.local.session = self
        # Each side pauses the other when it cannot keep up.
        self.transport.registerProducer(self.local.transport, True)
        self.local.transport.registerProducer(self.transport, True)
        self.local.transport.resumeProducing()  # standard input flows from now on

    def dataReceived(self, data: bytes) -> None:
        self.local.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.local.session = None
        # A writer closing with a paused producer still registered waits for
        # that producer forever: standard output lets go of this one first.
        self.local.transport.unregisterProducer()
        clean = reason is None or reason.check(error.ConnectionDone) is not None
        if not clean and reason is not None:
            sys.stderr.write(f"mnet-cat: {reason.getErrorMessage()}\n")
        self.local.exitStatus = EXIT_CLEAN if clean else EXIT_LOST
        if not self.ended.called:
            self.ended.callback(self.local.exitStatus)
        waiters, self.lostWaiters = self.lostWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def hangUp(self, reactor: Any) -> defer.Deferred[None]:
        """Close gracefully, abort after ``HANGUP_GRACE``; fires when the session is over."""
        over: defer.Deferred[None] = defer.Deferred()
        self.lostWaiters.append(over)
        # Standard input may be paused by backpressure: nothing more is taken from it.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        deadline = reactor.callLater(HANGUP_GRACE, self.transport.abortConnection)
        over.addBoth(lambda result: deadline.cancel() if deadline.active() else None)
        return over


def _progressFor(stdin: Any, stderr: TextIO) -> Progress | None:
    try:
        info = os.fstat(stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(info.st_mode) or not stderr.isatty():
        return None
    return Progress(info.st_size, stderr)


async def _run(reactor: Any, options: argparse.Namespace, local: _Stdio) -> int:
    from .endpoints import MNETClientEndpoint, MNETServerEndpoint

    local.progress = _progressFor(sys.stdin, sys.stderr)
    eof = options.eof or ("wait" if options.listen is not None else "close")
    local.closeOnEOF = eof == "close"
    ended: defer.Deferred[int] = defer.Deferred()
    factory = Factory.forProtocol(lambda: _Session(local, ended))
    stdio.StandardIO(local, reactor=reactor)
    local.transport.pauseProducing()  # read nothing before there is a session
    if options.listen is not None:
        port = await MNETServerEndpoint(
            reactor, options.listen, interface=options.interface
        ).listen(_OneSession(factory))
    else:
        endpoint = MNETClientEndpoint(reactor, options.host, options.port, timeout=options.timeout)
        try:
            await endpoint.connect(factory)
        except Exception as failure:
            sys.stderr.write(
                f"mnet-cat: no session with {options.host}:{options.port}: {failure}\n"
            )
            return EXIT_NO_SESSION
        port = None
    status = await ended
    if local.progress is not None:
        local.progress.finish()
    local.transport.loseConnection()  # what the peer sent is written out first
    await local.closed
    if port is not None:
        await port.stopListening()
    return status


class _OneSession(Factory):
    """Accepts the first session only (``--listen``); later ones are refused."""

    def __init__(self, factory: Factory) -> None:
        self._factory = factory
        self._taken = False

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self._taken:
            return None
        self._taken = True
        return self._factory.buildProtocol(addr)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mnet-cat",
        description="Standard input and output over one MNET session (a netcat for MNET).",
        epilog="Exit status: 0 clean close, 1 no session, 2 bad usage, 3 session lost.",
    )
    parser.add_argument("host", nargs="?", help="server to connect to")
    parser.add_argument("port", nargs="?", type=int, help="its MNET (UDP) port")
    parser.add_argument("-l", "--listen", type=int, metavar="PORT", help="wait for one session")
    parser.add_argument("--interface", default="", help="address to listen on (with --listen)")
    parser.add_argument("--timeout", type=float, default=10.0, help="handshake timeout, seconds")
    parser.add_argument(
        "--eof",
        choices=["close", "wait"],
        help="at the end of standard input, close the session (default when connecting)"
        " or wait for the peer to close it (default with --listen)",
    )
    options = parser.parse_args(argv)
    if options.listen is None and (options.host is None or options.port is None):
        parser.error("give HOST PORT, or --listen PORT")
    if options.listen is not None and options.host is not None:
        parser.error("--listen takes no HOST PORT")
    return options


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    from twisted.internet import reactor

    status: list[int | None] = [None]
    local = _Stdio()

    def hangUp() -> defer.Deferred[None] | None:
        # Shutting down (a signal, or the end): a session still open is closed first.
        return local.session.hangUp(reactor) if local.session is not None else None

    reactor.addSystemEventTrigger("before", "shutdown", hangUp)
    # Twisted stops on SIGTERM and SIGINT; SIGHUP would kill the process outright.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reactor.stop))

    def done(result: Any) -> None:
        if isinstance(result, Failure):
            sys.stderr.write(f"mnet-cat: {result.getErrorMessage()}\n")
            status[0] = EXIT_LOST
        else:
            status[0] = result
        if reactor.running:
            with contextlib.suppress(error.ReactorNotRunning):  # already stopping
                reactor.stop()

    def start() -> None:
        defer.ensureDeferred(_run(reactor, options, local)).addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run()
    # A signal may stop the reactor before _run returns: then the session's end says.
    return status[0] if status[0] is not None else local.exitStatus


if __name__ == "__main__":
    sys.exit(main())
