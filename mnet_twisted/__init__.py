"""
MNET for Twisted: a reliable, ordered byte stream over UDP.

Use :class:`MNETServerEndpoint` and :class:`MNETClientEndpoint` where you would
use TCP endpoints, or the ``mnet:`` endpoint strings with
``serverFromString`` / ``clientFromString``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["MNETClientEndpoint", "MNETServerEndpoint"]

if TYPE_CHECKING:
    from .endpoints import MNETClientEndpoint, MNETServerEndpoint


def __getattr__(name: str) -> Any:
    # Imported on first use: Twisted's plugin discovery imports this package
    # (through the parsers) and should not pay for the whole protocol stack.
    if name in __all__:
        from . import endpoints

        return getattr(endpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
