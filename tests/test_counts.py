"""mnet_twisted.counts: named counters read like a dict, written in place."""

from __future__ import annotations

import pytest

from mnet_twisted.counts import Counts, numbers, times


def test_counts_read_by_name_count_live_and_fold_into_their_array() -> None:
    counts = Counts("received", "sent")
    live = counts.live
    assert dict(counts) == {"received": 0, "sent": 0} and len(counts) == 2
    live["sent"] += 70_000
    live["received"] += 3
    assert counts["sent"] == 70_000 and list(counts.items()) == [("received", 3), ("sent", 70_000)]
    counts.fold()
    # Folded: the totals stand, and the live counts start again from 0.
    assert dict(counts) == {"received": 3, "sent": 70_000}
    assert all(value == 0 for value in live.values()) and counts.live is live
    live["sent"] += 5
    assert counts["sent"] == 70_005
    assert repr(counts) == "Counts({'received': 3, 'sent': 70005})"
    with pytest.raises(TypeError):
        counts["sent"] = 0  # type: ignore[index]  # read-only: the owner counts
    with pytest.raises(KeyError):
        counts["lost"]


def test_numbers_and_times_start_at_zero() -> None:
    assert list(numbers(3)) == [0, 0, 0] and numbers(1).typecode == "q"
    assert list(times(2)) == [0.0, 0.0] and times(1).typecode == "d"
