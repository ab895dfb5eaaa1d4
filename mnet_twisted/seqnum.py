"""
Serial-number arithmetic (RFC 1982) for MNET's 32-bit stream offsets.

Inside the engine, stream offsets are unbounded Python ints.  The wire carries
them modulo 2**32; :func:`unwrap` maps a wire value back to the offset nearest
to a known reference, which is correct while the two are less than 2**31
apart — always true for MNET, whose windows are far smaller.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MODULUS", "WIRE_MASK", "unwrap", "wrap"]

MODULUS: Final = 1 << 32
#: ``offset & WIRE_MASK`` is ``wrap(offset)``, for hot paths that save the call.
WIRE_MASK: Final = MODULUS - 1
_MASK: Final = WIRE_MASK
_HALF: Final = 1 << 31


def wrap(offset: int) -> int:
    """The 32-bit wire value of a stream offset."""
    return offset & _MASK


def unwrap(wire_value: int, reference: int) -> int:
    """The stream offset congruent to ``wire_value`` mod 2**32 nearest ``reference``."""
    delta = (wire_value - reference) & _MASK
    if delta >= _HALF:
        delta -= MODULUS
    return reference + delta
