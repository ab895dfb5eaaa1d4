"""Handshake and close answers leave before the application hears of them.

The peer waits for a COOKIE-ACK to fire ``connect()``, and for a
SHUTDOWN-ACK to finish its close; neither should wait while this side
builds a protocol or runs ``connectionLost``.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from conftest import within
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

pytestmark = pytest.mark.timeout(60)


class Watched(Protocol):
    """Notes how many datagrams its MNET port had sent when each callback ran."""

    def __init__(self) -> None:
        self.sentAtMade: int | None = None
        self.sentAtLost: int | None = None
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.sentAtMade = self._sent()

    def connectionLost(self, reason: Any = None) -> None:
        self.sentAtLost = self._sent()
        self.lost.callback(None)

    def _sent(self) -> int:
        return int(self.transport._mnet.stats["datagramsSent"])  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_the_cookie_ack_and_close_answers_go_before_the_application(mnet) -> None:
    served: list[Watched] = []

    def build() -> Watched:
        served.append(Watched())
        return served[-1]

    port = await mnet.listen(Factory.forProtocol(build))
    client = await mnet.connect(port, Factory.forProtocol(Watched))
    await mnet.waitFor(lambda: served and served[0].sentAtMade is not None)
    server = served[0]
    # The listener's COOKIE and COOKIE-ACK are out before connectionMade.
    assert server.sentAtMade == 2
    client.transport.loseConnection()
    await within(client.lost)
    await within(server.lost)
    # Client: INIT, COOKIE-ECHO, SHUTDOWN and SHUTDOWN-COMPLETE before connectionLost.
    assert client.sentAtLost == 4
    # Listener: and its SHUTDOWN-ACK.
    assert server.sentAtLost == 3
