"""
Token buckets for the replies a listener sends without holding state.

A COOKIE answers a 9-byte INIT with 32 bytes and costs two MACs; an ABORT
answers any datagram with an unknown tag.  Neither needs a session, so a
spoofed flood could make a listener reflect traffic at someone else and
spend its time on strangers.  A ``ReplyLimiter`` bounds such replies in all
and per source network (a /24 for IPv4, a /64 for IPv6: one host rarely
owns less, and a spoofer rarely more), with time passed in, sans-IO.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ReplyLimiter", "TokenBucket", "source_network"]

#: Per-network buckets kept at most; the least recently created go first.
MAX_TRACKED_NETWORKS = 4096


class TokenBucket:
    """``rate`` events per second on average, at most ``burst`` at once."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; returns whether there was."""
        if now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def source_network(host: str) -> str:
    """The network a source address is limited as: its /24 (IPv4) or /64 (IPv6)."""
    if ":" not in host:
        return host.rpartition(".")[0]
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped).rpartition(".")[0]
    return address.packed[:8].hex()


class ReplyLimiter:
    """One bucket for all replies of a kind, and one per source network."""

    def __init__(
        self,
        rate: float | None,
        per_source_rate: float | None,
        *,
        burst_seconds: float = 0.1,
        now: float = 0.0,
    ) -> None:
        self._per_source_rate = per_source_rate
        self._burst_seconds = burst_seconds
        self._all = (
            TokenBucket(rate, max(1.0, rate * burst_seconds), now) if rate is not None else None
        )
        self._networks: dict[str, TokenBucket] = {}
        #: Replies refused so far.
        self.limited = 0

    def allow(self, host: str, now: float) -> bool:
        """Whether a reply to ``host`` may go now (and if so, it is counted)."""
        rate = self._per_source_rate
        if rate is not None:
            network = source_network(host)
            bucket = self._networks.get(network)
            if bucket is None:
                if len(self._networks) >= MAX_TRACKED_NETWORKS:
                    del self._networks[next(iter(self._networks))]
                burst = max(1.0, rate * self._burst_seconds)
                bucket = self._networks[network] = TokenBucket(rate, burst, now)
            if not bucket.take(now):
                self.limited += 1
                return False
        if self._all is not None and not self._all.take(now):
            self.limited += 1
            return False
        return True
