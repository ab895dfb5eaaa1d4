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

from .counts import numbers, times

__all__ = ["ReplyLimiter", "TokenBucket", "source_network"]

#: Per-network buckets kept at most; the least recently created go first.
MAX_TRACKED_NETWORKS = 4096
#: Positions in ``TokenBucket._state``.
_RATE, _BURST, _TOKENS, _UPDATED = range(4)


class TokenBucket:
    """``rate`` events per second on average, at most ``burst`` at once."""

    __slots__ = ("_state",)

    def __init__(self, rate: float, burst: float, now: float) -> None:
        # Rate, burst, tokens and when they were counted, in place (``counts``).
        state = self._state = times(4)
        state[_RATE], state[_BURST], state[_TOKENS], state[_UPDATED] = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; returns whether there was."""
        state = self._state
        if now > state[_UPDATED]:
            refilled = state[_TOKENS] + (now - state[_UPDATED]) * state[_RATE]
            state[_TOKENS] = min(state[_BURST], refilled)
            state[_UPDATED] = now
        if state[_TOKENS] < 1.0:
            return False
        state[_TOKENS] -= 1.0
        return True

    def full(self, now: float) -> bool:
        """Whether it would hold its whole burst at ``now``: as good as a new one."""
        state = self._state
        refilled = state[_TOKENS] + (now - state[_UPDATED]) * state[_RATE]
        return refilled >= state[_BURST]


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
        self._limited = numbers(1)

    @property
    def limited(self) -> int:
        """Replies refused so far."""
        return self._limited[0]

    def forget_full(self, now: float) -> None:
        """Forget the per-network buckets that have refilled: new ones would be the same.

        A listener calls it after a wave of handshakes, whose networks'
        buckets would otherwise stay, each keeping a little of the wave's
        memory from going back to the system (``counts``).
        """
        networks = self._networks
        for network in [n for n, bucket in networks.items() if bucket.full(now)]:
            del networks[network]
        if not networks:
            networks.clear()  # its storage too

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
                self._limited[0] += 1
                return False
        if self._all is not None and not self._all.take(now):
            self._limited[0] += 1
            return False
        return True
