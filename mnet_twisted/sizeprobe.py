"""The one datagram type the adapter must treat apart: a size probe.

It lives in its own module because it subclasses ``bytes``, which the
compiled build (``setup.py``) cannot compile; the modules that are compiled
import it from here.
"""

from __future__ import annotations

__all__ = ["ProbeDatagram"]


class ProbeDatagram(bytes):
    """A datagram probing a larger size: it must leave unfragmented.

    Its bytes are an ordinary DATA packet; the type only tells the adapter
    to send it with fragmentation forbidden, and to report a local refusal
    through ``Demultiplexer.datagram_refused``.
    """

    __slots__ = ()
