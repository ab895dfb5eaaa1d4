"""
Shared fixtures for the real-socket Twisted tests (tests/test_twisted_*.py),
and the suite-wide Hypothesis profile.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import settings
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher

import mnet_twisted
from mnet_twisted.config import SessionConfig

# Under CI, property tests explore a fixed set of examples, so a red run is
# reproducible from its log; locally they keep searching anew each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "internals: replaces methods of the engine's classes to watch it work, which"
        " only the pure-Python engine allows",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MNET_EXPECT_PURE_PYTHON") and mnet_twisted.compiled:
        raise pytest.UsageError(f"meant for the pure-Python engine: {mnet_twisted.__file__}")
    if not mnet_twisted.compiled:
        return
    # The compiled build still runs these: test_pure_python.py runs them
    # against the checkout's pure-Python sources.
    skip = pytest.mark.skip(reason="watches the pure-Python engine (see test_pure_python.py)")
    for item in items:
        if item.get_closest_marker("internals") is not None:
            item.add_marker(skip)


#: Short timers so that closes and lingering sessions do not slow the tests.
FAST_CONFIG = SessionConfig(linger=0.2)


#: twistd in the foreground, without a pid file, for child processes.
TWISTD = [
    sys.executable,
    "-c",
    "from twisted.scripts.twistd import run; run()",
    "-n",
    "--pidfile=",
]


def child_env() -> dict[str, str]:
    """The environment for a child Python: it imports this very mnet_twisted."""
    env = dict(os.environ)
    root = str(Path(mnet_twisted.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class EchoProtocol(Protocol):
    """Writes back what it receives."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Collector(Protocol):
    """Keeps what it receives in ``received``."""

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def within(d: Any, seconds: float = 10.0) -> defer.Deferred[Any]:
    """Bound a wait: fail with TimeoutError instead of hanging the test run."""
    if not isinstance(d, defer.Deferred):
        d = defer.ensureDeferred(d)
    return d.addTimeout(seconds, _reactor())


def sleep(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(_reactor(), seconds, lambda: None)


async def waitFor(predicate: Any, seconds: float = 10.0, interval: float = 0.01) -> None:
    """Poll C{predicate} until true; fail after C{seconds}."""
    reactor = _reactor()
    deadline = reactor.seconds() + seconds
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {seconds} s: {predicate}")
        await sleep(interval)


class MNETHarness:
    """Opens MNET listeners and clients on loopback and closes them afterwards."""

    config = FAST_CONFIG

    def __init__(self) -> None:
        self.reactor = _reactor()
        self.ports: list[Any] = []
        self.within = within
        self.sleep = sleep
        self.waitFor = waitFor

    async def listen(
        self,
        factory: Any,
        interface: str = "127.0.0.1",
        config: SessionConfig | None = None,
        **kwargs: Any,
    ) -> Any:
        from mnet_twisted import MNETServerEndpoint

        endpoint = MNETServerEndpoint(
            self.reactor, 0, interface=interface, config=config or self.config, **kwargs
        )
        port = await within(endpoint.listen(factory))
        self.ports.append(port)
        return port

    def client(self, port: Any, host: str | None = None, **kwargs: Any) -> Any:
        from mnet_twisted import MNETClientEndpoint

        address = port.getHost()
        kwargs.setdefault("config", self.config)
        kwargs.setdefault("timeout", 5)
        return MNETClientEndpoint(self.reactor, host or address.host, address.port, **kwargs)

    async def connect(self, port: Any, factory: Any, **kwargs: Any) -> Any:
        return await within(self.client(port, **kwargs).connect(factory))

    def withConfig(self, **changes: Any) -> SessionConfig:
        return dataclasses.replace(self.config, **changes)

    async def cleanup(self) -> None:
        for port in self.ports:
            protocol = port.protocol
            if protocol is not None:
                # Whatever a test left open must not hold the port forever.
                for transport in list(protocol._transports.values()):
                    transport.abortConnection()
            await within(port.stopListening(), 10)


@pytest_twisted.async_yield_fixture
async def mnet():
    """An L{MNETHarness}; every listener it opened is closed after the test."""
    harness = MNETHarness()
    yield harness
    await harness.cleanup()


class LoggedErrors(list):
    """Error events logged through twisted.logger during a test."""

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.append(event)

    def flush(self, kind: type[BaseException] | None = None) -> list[dict[str, Any]]:
        """Take the logged errors (of C{kind}) out, so the test can expect them."""
        taken = [
            event
            for event in self
            if kind is None
            or (event.get("log_failure") is not None and event["log_failure"].check(kind))
        ]
        for event in taken:
            self.remove(event)
        return taken


@pytest.fixture
def loggedErrors():
    """Collects error log events; a test asserts on it (e.g. C{assert not loggedErrors})."""
    errors = LoggedErrors()
    globalLogPublisher.addObserver(errors.observe)
    yield errors
    globalLogPublisher.removeObserver(errors.observe)
