"""
``python -m mnet_twisted.demo``: MNET end to end, in one command.

Starts the ``mnet-echo`` twistd plugin in a subprocess on a free loopback UDP
port, connects to it with an ``mnet:`` client endpoint string, sends a few
lines, prints what goes out and what comes back, closes the session cleanly,
stops the server and exits 0.  Any failure exits non-zero with a message, and
the whole run is bounded by a timeout.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import defer, error, task
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

LINES = [
    b"Hello over MNET!",
    b"MNET is a reliable, ordered byte stream over UDP.",
    b"Any Twisted stream protocol can use it unchanged.",
]
TOTAL_TIMEOUT = 60.0


class DemoError(Exception):
    """The demo failed; the message says why."""


def _freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EchoCheck(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.echoed: list[bytes] = []
        self.allEchoed: defer.Deferred[None] = defer.Deferred()
        # Fires with [reason]: a Deferred fired with a bare Failure would errback.
        self.lost: defer.Deferred[list[Any]] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        print(f"  received: {line.decode()}")
        self.echoed.append(line)
        if len(self.echoed) == len(LINES) and not self.allEchoed.called:
            self.allEchoed.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback([reason])


def _serverCommand(port: int) -> list[str]:
    twistd = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    return [
        sys.executable,
        "-c",
        twistd,
        "-n",
        "--pidfile=",
        "mnet-echo",
        "--listen",
        f"mnet:{port}:interface=127.0.0.1",
    ]


async def _waitExit(reactor: Any, child: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = reactor.seconds() + seconds
    while child.poll() is None and reactor.seconds() < deadline:
        await task.deferLater(reactor, 0.05, lambda: None)
    return child.poll() is not None


async def _connectOnceListening(
    reactor: Any, endpoint: Any, child: subprocess.Popen[bytes]
) -> EchoCheck:
    """Connect; while the server is still starting its port refuses, as with TCP."""
    deadline = reactor.seconds() + 15
    while True:
        try:
            client: EchoCheck = await endpoint.connect(Factory.forProtocol(EchoCheck))
            return client
        except error.ConnectionRefusedError:
            if child.poll() is not None:
                raise DemoError(
                    f"the echo server exited early (status {child.returncode})"
                ) from None
            if reactor.seconds() > deadline:
                raise DemoError("the echo server did not start listening within 15 s") from None
            await task.deferLater(reactor, 0.1, lambda: None)
        except error.TimeoutError:
            raise DemoError("the echo server did not answer within 15 s") from None


async def _demo(reactor: Any, log_file: Any) -> None:
    port = _freeUDPPort()
    command = _serverCommand(port)
    print(
        f"starting the echo server: twistd -n mnet-echo --listen mnet:{port}:interface=127.0.0.1"
    )
    child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        description = f"mnet:host=127.0.0.1:port={port}:timeout=15"
        print(f"connecting with clientFromString(reactor, {description!r})")
        client = await _connectOnceListening(
            reactor, clientFromString(reactor, description), child
        )
        print(f"connected: {client.transport.getHost()} -> {client.transport.getPeer()}")
        for line in LINES:
            print(f"  sent:     {line.decode()}")
            client.sendLine(line)
        await client.allEchoed.addTimeout(15, reactor)
        if client.echoed != LINES:
            raise DemoError(f"echo mismatch: sent {LINES!r}, got {client.echoed!r}")
        client.transport.loseConnection()
        (reason,) = await client.lost.addTimeout(15, reactor)
        if not reason.check(error.ConnectionDone):
            raise DemoError(f"the session did not close cleanly: {reason.getErrorMessage()}")
        print("session closed cleanly (SHUTDOWN exchange done)")
    finally:
        if child.poll() is None:
            child.terminate()
            if not await _waitExit(reactor, child, 10):
                child.kill()
                child.wait(5)
        print("echo server stopped")


def main(argv: list[str] | None = None) -> int:
    status: list[int] = []

    async def run(reactor: Any) -> None:
        with tempfile.TemporaryFile() as log_file:
            try:
                await defer.ensureDeferred(_demo(reactor, log_file)).addTimeout(
                    TOTAL_TIMEOUT, reactor
                )
            except Exception as e:
                message = str(e) or type(e).__name__
                if isinstance(e, defer.TimeoutError):
                    message = f"timed out after {TOTAL_TIMEOUT:.0f} s"
                print(f"demo FAILED: {message}", file=sys.stderr)
                log_file.seek(0)
                server_log = log_file.read().decode(errors="replace").strip()
                if server_log:
                    print("--- echo server log ---", file=sys.stderr)
                    print(server_log, file=sys.stderr)
                status.append(1)
                return
        print("demo OK")
        status.append(0)

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main())
