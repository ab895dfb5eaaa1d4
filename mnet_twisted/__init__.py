"""
MNET for Twisted: a reliable, ordered byte stream over UDP.

Use :class:`MNETServerEndpoint` and :class:`MNETClientEndpoint` where you would
use TCP endpoints, or the ``mnet:`` endpoint strings with
``serverFromString`` / ``clientFromString``.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

__all__ = ["MNETClientEndpoint", "MNETServerEndpoint", "compiled"]

if TYPE_CHECKING:
    from .endpoints import MNETClientEndpoint, MNETServerEndpoint


def _is_compiled() -> bool:
    spec = find_spec(".session", __name__)
    origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES))


# True where the build compiled the protocol engine with mypyc (setup.py);
# the pure-Python modules behave the same, only slower.
compiled: bool = _is_compiled()


def __getattr__(name: str) -> Any:
    # Imported on first use: Twisted's plugin discovery imports this package
    # (through the parsers) and should not pay for the whole protocol stack.
    if name in ("MNETClientEndpoint", "MNETServerEndpoint"):
        from . import endpoints

        return getattr(endpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
