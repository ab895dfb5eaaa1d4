"""
The sans-IO core's cost per DATA datagram of a bulk transfer, both ends, no sockets:

    .venv/bin/python bench/core_bulk.py [--mib 8] [--repeats 3] [--instructions]

Two demultiplexers in one process: the client sends ``--mib`` MiB, the
server's application takes every byte, each compared with what was sent.  Each step hands the
server what the client has ready, as one read batch, and the server's acks
back to the client as one batch; the clock advances 0.2 ms a step and the
client's timers run when due.  With loss, the first transmission of every
100th segment is dropped (every 100th of the stream, so the same ones on
every run), as the namespace bench's 1 % loss does at random.  Datagrams
are 1,452 bytes, as on that bench's link (no size search).

Prints, loss-free and with that loss, the best time per DATA datagram of
the repeats, the acks per DATA datagram, and with ``--instructions`` the
CPU instructions per DATA datagram under valgrind (callgrind, if
installed): the difference between a pass of ``--mib`` and one of twice
that, each in a process of its own, so that start-up cancels out.  Timings
swing with the machine; instructions do not.  On a 2-CPU machine whose
two peers keep both CPUs busy, this is what 1 % loss costs the transfer.
"""

from __future__ import annotations

import argparse
import sys
import time

import _engine

sys.path.insert(0, _engine.ENGINE_PATH)

from _instructions import available, instructions
from core_echo import CLIENT, SERVER, connected

from mnet_twisted import wire
from mnet_twisted.config import SessionConfig
from mnet_twisted.events import DataReceived

#: Datagrams of 1,452 bytes, as on the namespace bench's 1500-byte link.
CONFIG = SessionConfig(path_mtu_discovery=False)
STEP = 0.0002
LOST_EVERY = 100


def transfer(mib: int, lossy: bool) -> tuple[float, int, int]:
    """(seconds, DATA datagrams sent, acks sent) for one transfer."""
    now = 1.0
    client, server, session = connected(now, CONFIG)
    payload = bytes(range(251)) * 4178  # about 1 MiB; no segment repeats its neighbour
    # Compared chunk by chunk (a slice and a memcmp): a hash would cost more
    # than the core, and so would a memoryview's item-by-item comparison.
    expected = payload * mib
    size = 0
    data_sent = acks = 0
    first_sent: set[int] = set()
    started = time.perf_counter()
    for _ in range(mib):
        session.send(payload)  # type: ignore[attr-defined]
    while size < len(expected):
        batch = []
        for datagram, _ in client.datagrams_to_send(now):
            fields = wire.parse_data(datagram)
            if fields is not None and fields[2]:
                data_sent += 1
                seq = fields[0]
                if seq not in first_sent:
                    first_sent.add(seq)
                    if lossy and len(first_sent) % LOST_EVERY == LOST_EVERY // 2:
                        continue  # lost on the way
            batch.append(datagram)
        server.receive_batch(batch, CLIENT, now)
        while (item := server.next_event()) is not None:
            event = item[1]
            if type(event) is DataReceived:
                chunk = event.data
                if expected[size : size + len(chunk)] != chunk:
                    raise AssertionError(f"the stream arrived changed at byte {size}")
                size += len(chunk)
        answers = [datagram for datagram, _ in server.datagrams_to_send(now)]
        acks += len(answers)
        client.receive_batch(answers, SERVER, now)
        while client.next_event() is not None:
            pass
        now += STEP
        deadline = client.next_deadline()
        if deadline is not None and deadline <= now:
            client.handle_timers(now)
    elapsed = time.perf_counter() - started
    return elapsed, data_sent, acks


def instructions_per_datagram(mib: int, lossy: bool) -> float:
    """CPU instructions per DATA datagram, counted by callgrind (see the module's notes)."""
    passes = [
        instructions(__file__, "--one-pass", "lossy" if lossy else "clean", "--mib", str(size))
        for size in (mib, 2 * mib)
    ]
    (short, short_out), (long, long_out) = passes
    return (long - short) / (int(long_out.split()[0]) - int(short_out.split()[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count CPU instructions per DATA datagram (valgrind's callgrind; a few minutes)",
    )
    parser.add_argument("--one-pass", choices=["clean", "lossy"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one_pass is not None:
        _, data_sent, _ = transfer(options.mib, options.one_pass == "lossy")
        print(data_sent)  # what --instructions divides by
        return
    if options.instructions and not available():
        print("valgrind is not installed: instructions not counted")
        options.instructions = False
    header = "loss | µs per DATA datagram (best) | acks per DATA datagram"
    print(header + (" | instructions per DATA datagram" if options.instructions else ""))
    for lossy in (False, True):
        runs = [transfer(options.mib, lossy) for _ in range(options.repeats)]
        seconds, data_sent, acks = min(runs)
        row = f"{'1 %' if lossy else '0 %':>4} | {seconds / data_sent * 1e6:28.2f} | "
        row += f"{acks / data_sent:.2f}"
        if options.instructions:
            row += f"                   | {instructions_per_datagram(options.mib, lossy):,.0f}"
        print(row)


if __name__ == "__main__":
    main()
