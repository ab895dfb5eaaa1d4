"""
Early data against the default handshake on lossy simulated paths.

    .venv/bin/python bench/sim_early_data.py [--seeds 60]

Each connect sends 40,000 bytes to an echo listener as soon as it is
established and closes once all came back (``simnet.echo_round``; the test
``tests/test_sim_early_data.py`` runs the same round).  The paths: 5 ms one
way, up to 4 ms of jitter, 30 % of datagrams reordered, 5 / 15 / 30 % lost,
with and without 10 % duplicated.  For each path and handshake the table
counts the connects that did not end cleanly with every byte back, by how
they ended.  Simulated time: the same figures on every machine and run.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import _engine

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "tests"), _engine.ENGINE_PATH]

from simnet import Link, SimError, echo_round, payload  # noqa: E402

from mnet_twisted.config import SessionConfig  # noqa: E402
from mnet_twisted.events import CloseReason  # noqa: E402

LOSSES = (0.05, 0.15, 0.30)
DUPLICATES = (0.0, 0.1)


def failures(loss: float, duplicate: float, early: bool, seeds: int) -> Counter[str]:
    """How the connects that failed ended, counted."""
    config = SessionConfig(early_data=early)
    link = Link(delay=0.005, jitter=0.004, loss=loss, duplicate=duplicate, reorder=0.3)
    failed: Counter[str] = Counter()
    for seed in range(seeds):
        try:
            _net, conn, _server = echo_round(seed, link, config)
        except SimError:
            failed["stuck"] += 1
            continue
        if conn.close_reason is not CloseReason.CLEAN:
            failed[conn.close_reason.value if conn.close_reason else "?"] += 1
        elif bytes(conn.received) != payload(40_000, seed=seed):
            failed["clean but data missing"] += 1
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=60)
    options = parser.parse_args()
    print(f"Connects that failed, of {options.seeds} per cell:")
    print(f" {'loss':>5} | {'duplicated':>10} | {'default':24} | early data")
    for duplicate in DUPLICATES:
        for loss in LOSSES:
            cells = []
            for early in (False, True):
                failed = failures(loss, duplicate, early, options.seeds)
                detail = ", ".join(f"{n} {why}" for why, n in sorted(failed.items()))
                cells.append(f"{sum(failed.values())}" + (f" ({detail})" if detail else ""))
            print(f" {loss:>5.0%} | {duplicate:>10.0%} | {cells[0]:24} | {cells[1]}")


if __name__ == "__main__":
    main()
