"""
``mnet:`` endpoint strings, for ``serverFromString`` / ``clientFromString``.

Server: ``mnet:9000``, ``mnet:port=9000:interface=127.0.0.1``,
``mnet:9000:secretFile=/var/lib/app/mnet.secret``,
``mnet:9000:reusePort=yes:secretFile=/var/lib/app/mnet.secret`` (one of
several worker processes sharing the port).

Client: ``mnet:host=example.org:port=9000:timeout=5``, ``mnet:example.org:9000``,
``mnet:host=127.0.0.1:port=9000:bindAddress=127.0.0.1``.  IPv6 literals need
their colons escaped, as in every Twisted endpoint string: ``host=\\:\\:1``.

This module is imported by the plugin dropin, so it imports the endpoints
only when a string is actually parsed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

__all__ = ["MNETClientParser", "MNETServerParser"]

Number = TypeVar("Number", int, float)


def _one(name: str, positional: Any, keyword: Any) -> Any:
    if positional is not None and keyword is not None:
        raise TypeError(f"mnet: {name} given twice")
    return keyword if keyword is not None else positional


def _flag(name: str, text: str | None) -> bool:
    """A yes/no option from an endpoint string (absent: no)."""
    if text is None:
        return False
    if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise TypeError(f"mnet: {name} must be yes or no, not {text!r}")
    return text.lower() in ("yes", "true", "1")


def _bound(text: str | None, default: Number | None, kind: type[Number] = int) -> Number | None:
    """A limit from an endpoint string: a ``kind`` number, or ``none`` for no bound."""
    if text is None:
        return default
    if text.lower() == "none":
        return None
    return kind(text)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MNETServerParser:
    """Parses ``mnet:PORT`` and ``interface=ADDR``, ``secretFile=PATH``, ``stopGrace=S``,
    ``trace=DIR``, ``reusePort=yes``, ``logSessions=yes``, and the limits.

    Limits: ``maxSessions=N``, ``maxSessionsPerSource=N``,
    ``outOfOrderBudget=BYTES``, and the stateless replies' rates per second,
    ``cookieRate=R``, ``cookieRatePerSource=R``, ``abortRate=R``,
    ``abortRatePerSource=R`` (``none`` lifts the bound).  Behind a load
    balancer every peer comes from its address, one source.
    """

    prefix = "mnet"

    def parseStreamServer(
        self,
        reactor: Any,
        port: str | None = None,
        interface: str = "",
        secretFile: str | None = None,
        **kwargs: str,
    ) -> Any:
        from .config import ListenerLimits
        from .endpoints import MNETServerEndpoint

        port = _one("port", port, kwargs.pop("port", None))
        stop_grace = float(kwargs.pop("stopGrace", 10))
        trace = kwargs.pop("trace", None)
        reuse_port = _flag("reusePort", kwargs.pop("reusePort", None))
        log_sessions = _flag("logSessions", kwargs.pop("logSessions", None))
        defaults = ListenerLimits()
        limits = ListenerLimits(
            max_sessions=_bound(kwargs.pop("maxSessions", None), defaults.max_sessions),
            max_sessions_per_source=_bound(
                kwargs.pop("maxSessionsPerSource", None), defaults.max_sessions_per_source
            ),
            out_of_order_budget=_bound(
                kwargs.pop("outOfOrderBudget", None), defaults.out_of_order_budget
            ),
            cookie_rate=_bound(kwargs.pop("cookieRate", None), defaults.cookie_rate, float),
            cookie_rate_per_source=_bound(
                kwargs.pop("cookieRatePerSource", None), defaults.cookie_rate_per_source, float
            ),
            abort_rate=_bound(kwargs.pop("abortRate", None), defaults.abort_rate, float),
            abort_rate_per_source=_bound(
                kwargs.pop("abortRatePerSource", None), defaults.abort_rate_per_source, float
            ),
        )
        if kwargs:
            raise TypeError(f"mnet: unknown server options {sorted(kwargs)}")
        if port is None:
            raise TypeError("mnet: a server needs a port, e.g. mnet:9000")
        return MNETServerEndpoint(
            reactor,
            int(port),
            interface=interface,
            cookieSecretFile=secretFile,
            stopGrace=stop_grace,
            limits=limits,
            traceDirectory=trace,
            reusePort=reuse_port,
            logSessions=log_sessions,
        )


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class MNETClientParser:
    """Parses ``mnet:host=H:port=P`` and ``timeout=S``, ``bindAddress=ADDR``,
    ``shareSocket=yes``, ``trace=DIR``, ``logSessions=yes``."""

    prefix = "mnet"

    def parseStreamClient(self, reactor: Any, *args: str, **kwargs: str) -> Any:
        from .endpoints import MNETClientEndpoint

        if len(args) > 2:
            raise TypeError("mnet: too many positional arguments (expected HOST:PORT)")
        positional = list(args) + [None] * (2 - len(args))
        host = _one("host", positional[0], kwargs.pop("host", None))
        port = _one("port", positional[1], kwargs.pop("port", None))
        timeout = float(kwargs.pop("timeout", 10))
        bind_host = kwargs.pop("bindAddress", None)
        share = _flag("shareSocket", kwargs.pop("shareSocket", None))
        trace = kwargs.pop("trace", None)
        log_sessions = _flag("logSessions", kwargs.pop("logSessions", None))
        if kwargs:
            raise TypeError(f"mnet: unknown client options {sorted(kwargs)}")
        if host is None or port is None:
            raise TypeError("mnet: a client needs host and port, e.g. mnet:host=H:port=P")
        return MNETClientEndpoint(
            reactor,
            host,
            int(port),
            timeout=timeout,
            bindAddress=(bind_host, 0) if bind_host else None,
            shareSocket=share,
            traceDirectory=trace,
            logSessions=log_sessions,
        )
