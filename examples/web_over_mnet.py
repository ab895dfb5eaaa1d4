"""
twisted.web over MNET: a Site listening on an ``mnet:`` endpoint, and an
Agent fetching from it through MNET client endpoints, in one process.

    python examples/web_over_mnet.py
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data


class OverMNET:
    """Agent endpoint factory: every URL's host and port, over MNET."""

    def __init__(self, reactor) -> None:  # type: ignore[no-untyped-def]
        self.reactor = reactor

    def endpointForURI(self, uri):  # type: ignore[no-untyped-def]
        host = uri.host.decode()
        return clientFromString(self.reactor, f"mnet:host={host}:port={uri.port}")


async def main(reactor) -> None:  # type: ignore[no-untyped-def]
    root = Resource()
    root.putChild(b"hello", Data(b"Hello from twisted.web over MNET\n", "text/plain"))
    port = await serverFromString(reactor, "mnet:0:interface=127.0.0.1").listen(Site(root))
    agent = Agent.usingEndpointFactory(reactor, OverMNET(reactor))
    url = f"http://127.0.0.1:{port.getHost().port}/hello".encode()
    response = await agent.request(b"GET", url)
    body = await readBody(response)
    print(response.code, body.decode(), end="")
    await port.stopListening()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
