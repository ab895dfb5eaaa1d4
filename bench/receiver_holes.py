"""
What holes cost a receiving session, without sockets: microseconds per segment.

    .venv/bin/python bench/receiver_holes.py [--segments 20000] [--repeats 5] [--calls]
    .venv/bin/python bench/receiver_holes.py --instructions

Feeds one established session (the sans-IO core, no Twisted) full-size DATA
segments: in order, then with every 100th (and every 20th) held back for 90
segments, as a lost segment's repair arrives on a busy path.  The session
drains its acks every 40 segments, as a read batch would, and its
application takes every byte, which is checked.  Prints the best of the
repeats, and the acks sent per segment (one per segment past a hole).

Timings swing with the machine; two counts do not.  ``--calls`` counts the
Python calls per segment (cProfile).  ``--instructions`` counts the CPU
instructions per segment under valgrind (callgrind, if installed): a pass
of 2,000 segments and one of 6,000, each in its own process, and the
difference over 4,000, so that start-up and the handshake cancel out (the
building of the datagrams, the same for any version of the core, stays in).
It runs the checkout's sources interpreted even where a compiled build is
installed (bench/_engine.py): its counts are of the Python engine's work.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT)]

from _instructions import available, per_unit  # noqa: E402
from simnet import connected_pair  # noqa: E402  (needs the sys.path entries above)

from mnet_twisted import wire  # noqa: E402
from mnet_twisted.events import DataReceived  # noqa: E402
from mnet_twisted.seqnum import wrap  # noqa: E402

SEGMENT = 1438
#: A read batch: the session is drained this often.
BATCH = 40
#: How many segments later a held-back segment arrives.
REPAIR_AFTER = 90


def arrival_order(count: int, hole_every: int) -> list[int]:
    """Segment indexes in arrival order: every ``hole_every``-th comes late."""
    if not hole_every:
        return list(range(count))
    order: list[int] = []
    late: list[tuple[int, int]] = []
    for index in range(count):
        if index % hole_every == hole_every // 2:
            late.append((index + REPAIR_AFTER, index))
            continue
        order.append(index)
        while late and late[0][0] <= index:
            order.append(late.pop(0)[1])
    return order + [index for _, index in late]


def run(
    count: int, hole_every: int, profiler: cProfile.Profile | None = None
) -> tuple[float, float]:
    """(microseconds per segment, acks sent per segment) for one pass.

    A ``profiler`` is on for the timed part only (not building the datagrams).
    """
    _, _, _, _, served = connected_pair()
    session = served.session
    origin, ack = session._receiver.rcv_nxt, wrap(session._sender.acked)
    payload = bytes(SEGMENT)
    datagrams = [
        wire.encode_data(session.peer_tag, wrap(origin + (index + 1) * SEGMENT), ack, payload)
        for index in range(count)
    ]
    order = arrival_order(count, hole_every)
    acks = delivered = 0

    def drain(now: float) -> None:
        nonlocal acks, delivered
        acks += len(session.datagrams_to_send(now))
        while (event := session.next_event()) is not None:
            if isinstance(event, DataReceived):
                delivered += len(event.data)

    now = 1.0
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    for position, index in enumerate(order):
        session.receive_datagram(datagrams[index], now)
        if position % BATCH == BATCH - 1:
            drain(now)
    drain(now)
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
    if delivered != count * SEGMENT:
        raise AssertionError(f"delivered {delivered} bytes of {count * SEGMENT}")
    return elapsed / count * 1e6, acks / count


#: The two pass lengths whose difference ``--instructions`` reports.
_SHORT_PASS, _LONG_PASS = 2_000, 6_000


def instructions_per_segment(hole_every: int) -> float:
    """CPU instructions per segment, counted by callgrind (see the module's notes)."""
    return per_unit(
        __file__,
        lambda segments: ["--one-pass", str(hole_every), "--segments", str(segments)],
        _SHORT_PASS,
        _LONG_PASS,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also count Python calls per segment (cProfile, one more pass): "
        "the same on every run, where the timings swing with the machine",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count CPU instructions per segment (valgrind's callgrind, two more "
        "passes in processes of their own; about a minute)",
    )
    parser.add_argument("--one-pass", type=int, metavar="HOLE_EVERY", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one_pass is not None:
        run(options.segments, options.one_pass)  # what --instructions counts
        return
    if options.instructions and not available():
        print("valgrind is not installed: instructions not counted")
        options.instructions = False
    header = "hole every | µs per segment (best) | acks per segment"
    header += " | calls per segment" if options.calls else ""
    print(header + (" | instructions per segment" if options.instructions else ""))
    for hole_every in (0, 100, 20):
        runs = [run(options.segments, hole_every) for _ in range(options.repeats)]
        label = "none" if not hole_every else str(hole_every)
        row = f"{label:>10} | {min(r[0] for r in runs):21.2f} | {runs[0][1]:.2f}"
        if options.calls:
            profiler = cProfile.Profile()
            run(options.segments, hole_every, profiler)
            calls = pstats.Stats(profiler).total_calls / options.segments  # type: ignore[attr-defined]
            row += f"             | {calls:.1f}"
        if options.instructions:
            row += f" | {instructions_per_segment(hole_every):25,.0f}"
        print(row)


if __name__ == "__main__":
    main()
