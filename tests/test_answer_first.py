"""A listener's COOKIE-ACK leaves before its application hears of the session.

The connector's ``connect()`` waits for the COOKIE-ACK; it should not also
wait while the listener builds a protocol and runs its ``connectionMade``.
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
async def test_the_cookie_ack_goes_before_the_application(mnet) -> None:
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
    # The close: the client's INIT, COOKIE-ECHO and SHUTDOWN; the listener's
    # SHUTDOWN-ACK as well (it ends at the SHUTDOWN-COMPLETE).
    assert client.sentAtLost == 3
    assert server.sentAtLost == 3
