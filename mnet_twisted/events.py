"""
What a session tells its owner.  Drained with ``Session.next_event()``.

Events come out in the order they happened; ``Closed`` is always the last
event of a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["CloseReason", "Closed", "DataReceived", "Established", "Event", "SendBufferLow"]


class CloseReason(Enum):
    #: Both sides finished the SHUTDOWN exchange; every byte was acknowledged.
    CLEAN = "clean"
    #: The peer sent ABORT on an established session.
    ABORTED_BY_PEER = "aborted by peer"
    #: The local application called ``abort()``.
    ABORTED_LOCALLY = "aborted locally"
    #: The listener answered the connection attempt with ABORT, or the network
    #: said nothing listens there.
    REFUSED = "refused"
    #: No answer to INIT / COOKIE-ECHO before the connect timeout.
    CONNECT_TIMEOUT = "connect timeout"
    #: The peer stopped answering while we waited for it.
    PEER_TIMEOUT = "peer timeout"
    #: Our SHUTDOWN went unanswered (the peer-timeout rule, while closing).
    SHUTDOWN_TIMEOUT = "shutdown timeout"
    #: The peer broke the protocol (for example SHUTDOWN-ACK on an open session).
    PROTOCOL_ERROR = "protocol error"


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake is complete; data may flow both ways."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """In-order stream bytes from the peer (coalesced: possibly many segments)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendBufferLow:
    """Unacknowledged plus unsent bytes fell below the configured low-water mark.

    Emitted once each time ``Session.notify_when_send_buffer_low()`` was
    called, when the condition holds.
    """


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over; nothing more will be delivered or sent for it."""

    reason: CloseReason
    #: Human-readable detail for logs and exception messages.
    detail: str = ""


Event = Established | DataReceived | SendBufferLow | Closed
