"""
A listener process that stops for a while (SIGSTOP: as if descheduled, or in
a long collection), with many client sessions over one shared UDP socket
waiting for it: one copy per backoff step goes to it, not one per session
(``mnet_twisted.peerprogress``), and every message is echoed once it runs again.
"""

from __future__ import annotations

import os
import signal

import pytest
import pytest_twisted
from conftest import TWISTD, sleep
from test_many_sessions import _Asker
from test_twisted_plugins import _connectOnceListening, _freeUDPPort, _spawnEcho, _stop
from twisted.internet.protocol import Factory

from mnet_twisted import MNETClientEndpoint

SESSIONS = 30
STOPPED = 0.2

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")


@pytest_twisted.ensureDeferred
async def test_a_stopped_listener_gets_one_copy_per_backoff_step(mnet, tmp_path) -> None:
    port = _freeUDPPort()
    child = _spawnEcho(TWISTD, port, tmp_path / "server.log")
    try:
        (await _connectOnceListening(mnet.reactor, port, child)).transport.loseConnection()
        endpoint = MNETClientEndpoint(
            mnet.reactor, "127.0.0.1", port, timeout=20, shareSocket=True
        )
        clients = [
            await mnet.within(endpoint.connect(Factory.forProtocol(_Asker)))
            for _ in range(SESSIONS)
        ]
        for client in clients:  # a first echo each: every session knows the RTT
            client.transport.write(b"a" * 64)
        await mnet.waitFor(lambda: all(len(c.received) == 64 for c in clients), 20)
        os.kill(child.pid, signal.SIGSTOP)
        try:
            for client in clients:
                client.transport.write(b"b" * 64)
            await sleep(STOPPED)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        await mnet.waitFor(lambda: all(len(c.received) == 128 for c in clients), 20)
        assert all(c.received == b"a" * 64 + b"b" * 64 for c in clients)
        stats = [c.transport.session.recovery_stats() for c in clients]
        resent = sum(s["retransmissions"] for s in stats)
        # A timeout of a few ms doubling over 200 ms is some six steps; each
        # session on its own would have resent at every one (about 200 in all).
        assert resent <= SESSIONS // 2, resent
        assert sum(s["deferred_timeouts"] for s in stats) >= SESSIONS - 1
        for client in clients:
            client.transport.loseConnection()
    finally:
        await _stop(child)
