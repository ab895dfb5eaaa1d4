"""Exceptions raised to the *local* caller of the sans-IO core.

Garbage from the network never raises: it is dropped, answered with ABORT,
or ends the session with a ``Closed`` event.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "SessionClosedError"]


class LocalProtocolError(Exception):
    """The local application used the session API in a way it does not allow."""


class SessionClosedError(LocalProtocolError):
    """Data was handed to a session that no longer accepts writes."""
