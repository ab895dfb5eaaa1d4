"""
What the sessions with one peer address know together: how far the peer
has answered, and whether one of them is already probing it.

A peer process that stalls (descheduled, in a garbage collection) stops
answering all its sessions at once.  Each session's probe timeout then
expires and each sends a copy; the copies queue behind the originals the
peer has not read yet, and every one of them is work for a peer that is
already behind.  With thousands of sessions between two processes those
copies kept the stall going (``bench/scale_sessions.py``: every resend of a
collapse reached a peer that had the data already).

So while the peer has answered nothing sent after a session's oldest
unacknowledged segment, and another session's copy is already out with its
own (backed-off) timeout running, the session waits for that one instead of
sending its own: one probe per peer address per backoff step, not one per
session.  A session never waits for its own probe, so a peer address with
one session (a bulk transfer) behaves exactly as before.
"""

from __future__ import annotations

__all__ = ["PeerProgress"]


class PeerProgress:
    """Shared by all sessions with one peer address (see the module's notes)."""

    __slots__ = ("answered_sent_at", "prober", "probing_until", "sessions")

    def __init__(self) -> None:
        #: The send time of the newest first transmission the peer acknowledged.
        self.answered_sent_at = float("-inf")
        #: A copy sent to the silent peer waits for an answer until then...
        self.probing_until = float("-inf")
        #: ...and this sender (its ``id``) sent it.
        self.prober = 0
        #: Sessions using this record (the demultiplexer's count).
        self.sessions = 0

    def answered(self, sent_at: float) -> None:
        """The peer acknowledged data first sent at ``sent_at``."""
        if sent_at > self.answered_sent_at:
            self.answered_sent_at = sent_at

    def silent_since(self, sent_at: float) -> bool:
        """Whether the peer answered nothing first sent at ``sent_at`` or later."""
        return self.answered_sent_at < sent_at

    def someone_else_probes(self, sender: int, oldest_sent_at: float, now: float) -> bool:
        """Whether ``sender`` should leave the silent peer to another session's copy.

        ``oldest_sent_at`` is when the sender's oldest unacknowledged
        segment was first sent.
        """
        return (
            self.probing_until > now
            and self.prober != sender
            and self.silent_since(oldest_sent_at)
        )

    def probing(self, sender: int, until: float) -> None:
        """``sender`` sent a copy to the silent peer; its timeout runs until ``until``."""
        self.prober = sender
        self.probing_until = until
