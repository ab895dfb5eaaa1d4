"""
Ratios taken round by round, for benches whose rounds alternate what they compare.

A round runs each side in turn, so its two figures saw the machine in the
same state; the spread of the per-round ratios says how far the ratio of
the medians can be trusted on a machine whose speed swings.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


def ratios_by_round(
    figures: Iterable[tuple[int, Hashable, float]], numerator: Hashable, denominator: Hashable
) -> list[float]:
    """One ratio per round, in round order, from ``(round, side, figure)`` triples.

    A round without both sides, or whose denominator is zero, gives none.
    """
    by_round: dict[int, dict[Hashable, float]] = {}
    for round_, side, figure in figures:
        by_round.setdefault(round_, {})[side] = figure
    return [
        sides[numerator] / sides[denominator]
        for _, sides in sorted(by_round.items())
        if sides.get(denominator) and numerator in sides
    ]
