"""
The sans-IO core's cost per echo round trip, both ends, with no sockets:

    .venv/bin/python bench/core_echo.py [--messages 20000] [--profile] [--instructions]

Two demultiplexers in one process exchange 64-byte messages (the client
sends, the server's application echoes, the client takes the reply), time
advancing 0.2 ms a message.  Prints the best of seven runs in microseconds
per round trip: the Python the protocol engine itself spends, warm, without
the reactor, the syscalls or the cold caches of a real exchange.

That figure swings with the machine.  ``--instructions`` also counts the
CPU instructions per round trip under valgrind (callgrind, if installed),
which do not: a run of 2,000 messages and one of 6,000, each in a process
of its own, and the difference over 4,000, so that start-up cancels out.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import _engine

sys.path.insert(0, _engine.ENGINE_PATH)

from _instructions import available, per_unit

from mnet_twisted.config import SessionConfig
from mnet_twisted.demux import Demultiplexer
from mnet_twisted.events import DataReceived

CLIENT, SERVER = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
MESSAGE = b"x" * 64


def connected(
    now: float, config: SessionConfig | None = None
) -> tuple[Demultiplexer, Demultiplexer, object]:
    """A client and a listener demultiplexer, and the client's established session."""
    client = Demultiplexer(local_port=CLIENT[1], config=config)
    server = Demultiplexer(local_port=SERVER[1], accepting=True, config=config)
    session = client.connect(SERVER, now)
    for _ in range(4):  # the handshake
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT, now)
        while server.next_event() is not None:
            pass
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER, now)
        while client.next_event() is not None:
            pass
    return client, server, session


def round_trip(client: Demultiplexer, server: Demultiplexer, session, now: float) -> None:  # type: ignore[no-untyped-def]
    session.send(MESSAGE)
    for data, _ in client.datagrams_to_send(now):
        server.receive_datagram(data, CLIENT, now)
    while (item := server.next_event()) is not None:
        peer, event = item
        if type(event) is DataReceived:
            peer.send(event.data)
    for data, _ in server.datagrams_to_send(now):
        client.receive_datagram(data, SERVER, now)
    server.take_held_acks()  # the documented drain order: once the answer is sent
    while client.next_event() is not None:
        pass
    client.take_held_acks()
    server.next_deadline()
    client.next_deadline()


#: The two run lengths whose difference ``--instructions`` reports.
_SHORT_RUN, _LONG_RUN = 2_000, 6_000


def instructions_per_round_trip() -> float:
    """CPU instructions per round trip, counted by callgrind (see the module's notes)."""
    return per_unit(__file__, lambda messages: ["--one-run", str(messages)], _SHORT_RUN, _LONG_RUN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile summary")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count CPU instructions per round trip (valgrind's callgrind; about a minute)",
    )
    parser.add_argument("--one-run", type=int, metavar="MESSAGES", help=argparse.SUPPRESS)
    options = parser.parse_args()
    now = 1.0
    if options.one_run is not None:  # what --instructions counts
        client, server, session = connected(now)
        for _ in range(options.one_run):
            now += 0.0002
            round_trip(client, server, session, now)
        return
    client, server, session = connected(now)
    for _ in range(2000):  # warm up
        now += 0.0002
        round_trip(client, server, session, now)
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(options.messages):
            now += 0.0002
            round_trip(client, server, session, now)
        best = min(best, time.perf_counter() - started)
    print(f"core echo round trip, both ends: {best / options.messages * 1e6:.2f} µs (best of 7)")
    print(f"engine: {_engine.ENGINE}")
    if options.instructions:
        if not available():
            print("valgrind is not installed: instructions not counted")
        else:
            count = instructions_per_round_trip()
            print(f"core echo round trip, both ends: {count:,.0f} instructions")
    if options.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(options.messages):
            now += 0.0002
            round_trip(client, server, session, now)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
