"""
MNET behind a real UDP load balancer, with real processes (tools/loadbalanced.py):
two ``twistd mnet-echo`` backends behind nginx's ``stream`` module hashing each
client's address and port.  Sessions spread over both backends; the backends
see nginx's address, not the clients'; sessions idle past nginx's
``proxy_timeout`` are rebound and aborted, keep-alives prevent it; when one
backend dies its sessions are aborted (nginx sends their datagrams to the other
backend, which does not know them), the others go on, and new sessions succeed;
a backend stopped gracefully closes its sessions cleanly; an nginx reload ends
every session.

Where nginx or its stream module is missing and this runs as root with
apt-get, Debian's packages are installed first (CI machines start fresh);
otherwise the tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from conftest import sleep, waitFor, within
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted import MNETClientEndpoint
from mnet_twisted.config import SessionConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import loadbalanced

pytestmark = pytest.mark.timeout(120)

#: nginx listens here, the clients send from here, the backends listen on
#: 127.0.0.1: three addresses, so what each side sees is unambiguous.
NGINX_HOST = "127.0.0.3"
CLIENT_HOST = "127.0.0.2"
#: Short, so that the rebinding is seen in a test; tools/loadbalanced.py uses 60 s.
PROXY_TIMEOUT = 2.0
#: Keep-alives well within PROXY_TIMEOUT (the default, 15 s, suits its 60 s).
TALKING = SessionConfig(linger=0.2, keepalive_interval=0.5)
SILENT = SessionConfig(linger=0.2, keepalive_interval=None)
ABORTED = "the peer sent ABORT"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="session")
def nginx() -> loadbalanced.Nginx:
    """nginx with its stream module; installed with apt-get where missing and root."""
    try:
        return loadbalanced.find_nginx()
    except loadbalanced.NginxMissing as missing:
        reason = str(missing)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{reason}; not root with apt-get, so not installed")
    try:
        # Within the test's own timeout, so that a stuck apt-get skips rather than fails.
        took = loadbalanced.install_nginx(timeout=90)
        found = loadbalanced.find_nginx()
    except loadbalanced.NginxMissing as failed:
        pytest.skip(f"{reason}; installing it failed: {failed}")
    print(f"installed {' '.join(loadbalanced.NGINX_PACKAGES)} in {took:.1f} s", file=sys.stderr)
    return found


@pytest.fixture
def balancer(nginx, tmp_path):
    lb = loadbalanced.LoadBalancedEcho(
        tmp_path / "lb",
        listen=(NGINX_HOST, 0),
        proxy_timeout=PROXY_TIMEOUT,
        trace=True,
        # Sessions nginx rebound are still open on their backend (until its
        # dead-peer rule): without this their SHUTDOWN would hold teardown 10 s.
        stop_grace=1.0,
        nginx=nginx,
    )
    lb.start()
    yield lb
    lb.stop()


class Probe(Protocol):
    """One client session: echoes one message at a time, remembers how it ended."""

    def connectionMade(self) -> None:
        self.received = b""
        self.expected = b""
        self.waiter: defer.Deferred[float] | None = None
        self.sentAt = 0.0
        self.endedAt: float | None = None
        self.endReason: str | None = None
        self.endedCleanly = False
        self.endFailure: Any = None

    def echo(self, message: bytes) -> defer.Deferred[float]:
        """Fires with the round trip's seconds once ``message`` is back."""
        if self.endFailure is not None:
            return defer.fail(self.endFailure)
        self.received, self.expected = b"", message
        self.waiter = defer.Deferred()
        self.sentAt = _reactor().seconds()
        self.transport.write(message)
        return self.waiter

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.waiter is not None and self.received == self.expected:
            waiter, self.waiter = self.waiter, None
            waiter.callback(_reactor().seconds() - self.sentAt)

    def connectionLost(self, reason: Any) -> None:
        self.endedAt = _reactor().seconds()
        self.endFailure = reason
        self.endReason = str(reason.value)
        self.endedCleanly = reason.check(ConnectionDone) is not None
        if self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            waiter.errback(reason)


async def openSessions(lb: loadbalanced.LoadBalancedEcho, count: int, config: SessionConfig):
    """``count`` sessions through nginx, each from its own UDP port on CLIENT_HOST."""
    endpoint = MNETClientEndpoint(
        _reactor(),
        lb.listen[0],
        lb.listen[1],
        timeout=5,
        bindAddress=(CLIENT_HOST, 0),
        config=config,
    )
    connects = [endpoint.connect(Factory.forProtocol(Probe)) for _ in range(count)]
    return list(await within(defer.gatherResults(connects), 15))


async def echoAll(probes: list[Probe], seconds: float = 5.0) -> list[float | str]:
    """Echo a distinct message on each session: round-trip seconds, or how it ended."""
    waits = [
        probe.echo(b"echo %d " % index + os.urandom(8).hex().encode())
        for index, probe in enumerate(probes)
    ]
    results = await defer.DeferredList(
        [wait.addTimeout(seconds, _reactor()) for wait in waits], consumeErrors=True
    )
    return [value if ok else str(value.value) for ok, value in results]


async def closeAll(probes: list[Probe]) -> None:
    """Abort what is still open, and let the ABORTs leave before the backends are stopped."""
    for probe in probes:
        if probe.transport.connected:
            probe.transport.abortConnection()
    await sleep(0.05)


def backendsOf(lb: loadbalanced.LoadBalancedEcho, probes: list[Probe]) -> list[int | None]:
    return [lb.backend_of(probe.transport.session.peer_tag) for probe in probes]


def echoed(outcomes: list[float | str]) -> bool:
    return all(isinstance(outcome, float) for outcome in outcomes)


def aborted(outcomes: list[Any]) -> bool:
    return all(ABORTED in str(outcome) for outcome in outcomes)


@pytest_twisted.ensureDeferred
async def test_sessions_spread_and_outlive_the_other_backend(balancer) -> None:
    lb = balancer
    talking = await openSessions(lb, 30, TALKING)
    silent = await openSessions(lb, 6, SILENT)
    try:
        assert echoed(await echoAll(talking + silent))
        # (a) nginx spread the sessions over both backends, each wholly on one.
        where = backendsOf(lb, talking)
        assert sorted(set(where)) == [0, 1], where
        # The backends saw nginx's sockets (on 127.0.0.1), never the clients' address.
        seen = lb.peers_seen_by(0) + lb.peers_seen_by(1)
        assert len(seen) == len(talking + silent)
        assert {host for host, _ in seen} == {"127.0.0.1"}

        # nginx forgets a client after PROXY_TIMEOUT without datagrams, and its
        # next datagram leaves from a new nginx socket: to the backend a new
        # address, unknown with that tag, so it answers ABORT.  Keep-alives
        # every TALKING.keepalive_interval keep nginx's binding.
        await sleep(PROXY_TIMEOUT + 0.7)
        assert all(p.endReason is None for p in talking + silent)
        assert aborted(await echoAll(silent))
        assert echoed(await echoAll(talking))

        # (b) Backend 1 dies (SIGKILL: no SHUTDOWN, no ABORT from it); the
        # sessions on backend 0 go on.
        on_a = [p for p, backend in zip(talking, where, strict=True) if backend == 0]
        on_b = [p for p, backend in zip(talking, where, strict=True) if backend == 1]
        writers, idle = on_b[: (len(on_b) + 1) // 2], on_b[(len(on_b) + 1) // 2 :]
        lb.kill_backend(1)
        killed_at = _reactor().seconds()
        survived, written = await defer.gatherResults(
            [defer.ensureDeferred(echoAll(on_a)), defer.ensureDeferred(echoAll(writers))]
        )
        assert echoed(survived), survived
        # (c) A session on the dead backend that sends is aborted within a few
        # retransmissions: nginx's socket towards backend 1 gets ICMP port
        # unreachable, nginx marks backend 1 failed and drops its UDP session,
        # and the next retransmission goes to backend 0, which answers ABORT
        # for the tag it does not know.  An idle one learns the same at its
        # next keep-alive.  None of them moves: backend 0 has no state for them.
        assert aborted(written), written
        writer_delay = max(p.endedAt - p.sentAt for p in writers)
        await waitFor(lambda: all(p.endedAt is not None for p in idle), 5)
        assert aborted([p.endReason for p in idle]), [p.endReason for p in idle]
        idle_delay = max((p.endedAt - killed_at for p in idle), default=0.0)
        # The dead-peer rule would have taken 13 s or more.
        assert writer_delay < 3.0 and idle_delay < TALKING.keepalive_interval + 3.0
        assert all(p.endReason is None for p in on_a)

        # New sessions succeed, all of them on the backend left; the old ones go on.
        fresh = await openSessions(lb, 10, TALKING)
        talking += fresh
        assert echoed(await echoAll(fresh + on_a))
        assert set(backendsOf(lb, fresh)) == {0}
        print(
            json.dumps(
                {
                    "on_backend_0": where.count(0),
                    "on_backend_1": where.count(1),
                    "writer_abort_s": sorted(round(p.endedAt - p.sentAt, 3) for p in writers),
                    "idle_abort_after_kill_s": sorted(
                        round(p.endedAt - killed_at, 3) for p in idle
                    ),
                    "slowest_echo_on_0_after_kill_s": round(max(survived), 4),
                }
            )
        )
    finally:
        await closeAll(talking + silent)


@pytest_twisted.ensureDeferred
async def test_an_nginx_reload_ends_every_session(balancer) -> None:
    """nginx -s reload: new workers, without the old ones' UDP sessions, so new sockets
    towards the backends; every session is answered ABORT at its next datagram."""
    lb = balancer
    probes = await openSessions(lb, 10, TALKING)
    try:
        assert echoed(await echoAll(probes))
        lb.reload_nginx()
        reloaded_at = _reactor().seconds()
        await waitFor(lambda: all(p.endedAt is not None for p in probes), 5)
        assert aborted([p.endReason for p in probes]), [p.endReason for p in probes]
        print(
            json.dumps(
                {"abort_after_reload_s": round(max(p.endedAt for p in probes) - reloaded_at, 3)}
            )
        )
        # New sessions are served by the new workers.
        fresh = await openSessions(lb, 4, TALKING)
        probes += fresh
        assert echoed(await echoAll(fresh))
    finally:
        await closeAll(probes)


@pytest_twisted.ensureDeferred
async def test_a_graceful_stop_closes_that_backends_sessions_cleanly(balancer) -> None:
    """SIGTERM to a backend: twistd closes its sessions with SHUTDOWN, through nginx."""
    lb = balancer
    probes = await openSessions(lb, 16, TALKING)
    try:
        assert echoed(await echoAll(probes))
        where = backendsOf(lb, probes)
        assert sorted(set(where)) == [0, 1], where
        on_b = [p for p, backend in zip(probes, where, strict=True) if backend == 1]
        stopped_at = time.monotonic()
        lb.processes[1].send_signal(signal.SIGTERM)
        await waitFor(lambda: all(p.endedAt is not None for p in on_b), 5)
        assert all(p.endedCleanly for p in on_b), [p.endReason for p in on_b]
        assert time.monotonic() - stopped_at < 2.0
        on_a = [p for p, backend in zip(probes, where, strict=True) if backend == 0]
        assert echoed(await echoAll(on_a))
    finally:
        await closeAll(probes)
