"""The listening service the twistd plugins share, with its optional periodic totals."""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.application import internet, service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

__all__ = ["STATS_INTERVAL_OPTION", "listeningService"]

#: The ``--stats-interval`` option of the plugins (``usage.Options`` form).
STATS_INTERVAL_OPTION = [
    "stats-interval",
    None,
    0.0,
    "Log the listening port's totals every this many seconds (0: never)",
    float,
]


class _Recorded:
    """A server endpoint that remembers the port it listened on."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint
        self.port: Any = None

    def listen(self, factory: Any) -> Any:
        def remember(port: Any) -> Any:
            self.port = port
            return port

        return self._endpoint.listen(factory).addCallback(remember)


class _StatsLog:
    """Logs a listening port's totals (``getStats()``), one event with named fields."""

    _log = Logger()

    def __init__(self, endpoint: _Recorded, name: str) -> None:
        self._endpoint = endpoint
        self._name = name

    def __call__(self) -> None:
        port = self._endpoint.port
        if port is None or not hasattr(port, "getStats"):
            return  # not listening yet, or not an MNET port
        totals = dataclasses.asdict(port.getStats())
        self._log.info(
            "{name}: {sessions_open} session(s) open, {sessions_accepted} accepted,"
            " {sessions_refused} refused; {datagrams_received} datagrams in,"
            " {datagrams_sent} out; {aborts_sent} ABORTs sent, {replies_limited}"
            " replies held back by rate limits",
            name=self._name,
            **totals,
        )


def listeningService(
    description: str, factory: Any, statsInterval: float, name: str
) -> service.IService:
    """Listen on ``description``; every ``statsInterval`` seconds (0: never), log its totals."""
    from twisted.internet import reactor

    endpoint = _Recorded(serverFromString(reactor, description))
    listening = internet.StreamServerEndpointService(endpoint, factory)
    # As strports.service does: a port that cannot be bound fails startup.
    listening._raiseSynchronously = True
    if not statsInterval:
        return listening
    top = service.MultiService()
    listening.setServiceParent(top)
    internet.TimerService(statsInterval, _StatsLog(endpoint, name)).setServiceParent(top)
    return top
