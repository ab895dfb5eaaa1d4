"""
Ten thousand concurrent sessions on one MNET listener process.

    .venv/bin/python bench/scale_sessions.py [--sessions 10000] [--duration 60] [--json F]

The listener is an echo server in a process of its own
(``bench/_scale_peer.py``); ``--clients`` processes open its sessions
between them, each over one shared UDP port (``shareSocket=True``).  Then:

1. **idle**: with every session open and silent, the listener's memory
   (RSS after a collection) and its CPU over ``--idle-seconds``, with its
   timer wake-ups and datagrams in that time (keep-alives are 15 s apart);
2. **loaded**: each session sends a 64-byte message once a second, the
   sessions spread over the second, for ``--duration`` seconds; every echo
   is checked byte for byte and timed (p50/p99); the listener's RSS midway
   and its CPU over the phase;
3. **closed**: every session closed cleanly, the listener's RSS after a
   collection, against where it started.

Memory per session is (RSS with the sessions open - RSS before) / sessions,
for the listener and for the clients; ``--tracemalloc`` adds the listener's
top allocating lines per session (slower).  Needs no root; loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _netns_runner import Peers  # noqa: E402

from mnet_twisted.protocol import MNETDatagramProtocol  # noqa: E402

PEER = str(HERE / "_scale_peer.py")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))]) if ordered else 0.0


@contextlib.contextmanager
def _listener_environment(malloc: bool) -> Iterator[None]:
    """PYTHONMALLOC=malloc for a process started inside, if ``malloc``."""
    saved = os.environ.get("PYTHONMALLOC")
    if malloc:
        os.environ["PYTHONMALLOC"] = "malloc"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONMALLOC", None)
        else:
            os.environ["PYTHONMALLOC"] = saved


class Run:
    """The processes of one run, and the steps that line them up."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.peers = Peers(PEER)
        self.server_pid = 0
        self.samples = 0
        self.clients = [f"client{index}" for index in range(options.clients)]

    def fail(self, what: str) -> SystemExit:
        return SystemExit(f"{what}: {self.peers.problems() or 'no detail'}")

    def sample(self, collect: bool = True, trim: bool = False) -> dict[str, Any]:
        """The listener's figures now (it collects garbage first, if ``collect``).

        ``trim``: then also the RSS once the C allocator returned its free memory.
        """
        self.samples += 1
        kind = signal.SIGHUP if trim else signal.SIGUSR1 if collect else signal.SIGUSR2
        os.kill(self.server_pid, kind)
        found = self.peers.wait_for("server", f"sample{self.samples}", 60)
        if found is None:
            raise self.fail("the listener gave no sample")
        return found

    def step_clients(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        """Signal every client on to its next step; what each reports."""
        for name in self.clients:
            os.kill(self.peers.processes[name].pid, signal.SIGUSR1)
        return self.wait_clients(kind, timeout)

    def wait_clients(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        reports = []
        for name in self.clients:
            found = self.peers.wait_for(name, kind, timeout)
            if found is None:
                raise self.fail(f"{name} did not report {kind!r}")
            reports.append(found)
        return reports

    def execute(self) -> dict[str, Any]:
        options = self.options
        config = ["--peer-ack-delay", str(options.peer_ack_delay)]
        extra = [
            *config,
            *(["--tracemalloc"] if options.tracemalloc else []),
            *(["--survivors"] if options.survivors else []),
        ]
        with _listener_environment(options.malloc):
            self.peers.start("server", None, "server", *extra)
        listening = self.peers.wait_for("server", "listening", 30)
        if listening is None:
            raise self.fail("the listener did not start")
        self.server_pid = int(listening["pid"])
        start = self.sample()

        share, rest = divmod(options.sessions, options.clients)
        for index, name in enumerate(self.clients):
            count = share + (1 if index < rest else 0)
            self.peers.start(
                name,
                None,
                "client",
                *("--port", str(listening["port"]), "--sessions", str(count)),
                *("--duration", str(options.duration), "--parallel", str(options.parallel)),
                *("--interval", str(options.interval), *config),
            )
        began = time.monotonic()
        opened = self.wait_clients("opened", 120 + options.sessions / 200)
        open_seconds = time.monotonic() - began
        time.sleep(0.5)  # the last handshakes' acks and drains

        idle_start = self.sample()
        cpu = cpu_seconds(self.server_pid)
        time.sleep(options.idle_seconds)
        idle_cpu = cpu_seconds(self.server_pid) - cpu
        idle_end = self.sample()

        cpu, began = cpu_seconds(self.server_pid), time.monotonic()
        for name in self.clients:
            os.kill(self.peers.processes[name].pid, signal.SIGUSR1)
        time.sleep(options.duration / 2)
        loaded_sample = self.sample(collect=False)
        loaded = self.wait_clients("loaded", options.duration * 3 + 60)
        loaded_cpu = cpu_seconds(self.server_pid) - cpu
        loaded_seconds = time.monotonic() - began
        after_load = self.sample()

        closed = self.step_clients("closed", 120 + options.sessions / 200)
        began = time.monotonic()
        while self.sample(collect=False)["sessions_open"] and time.monotonic() - began < 60:
            time.sleep(0.5)  # a lost SHUTDOWN-COMPLETE: the listener resends its ack
        drained_seconds = time.monotonic() - began
        # The listener gives its free heap back a while after a wave of
        # closes (MNETDatagramProtocol.releaseMemoryDelay): measure after it.
        time.sleep(MNETDatagramProtocol.releaseMemoryDelay + 0.5)
        end = self.sample(trim=True)
        return self.report(
            start=start,
            idle_start=idle_start,
            idle_end=idle_end,
            idle_cpu=idle_cpu,
            loaded_sample=loaded_sample,
            loaded_cpu=loaded_cpu,
            loaded_seconds=loaded_seconds,
            after_load=after_load,
            end=end,
            opened=opened,
            open_seconds=open_seconds,
            loaded=loaded,
            closed=closed,
            drained_seconds=drained_seconds,
        )

    def report(self, **parts: Any) -> dict[str, Any]:
        options = self.options
        start, idle_start, idle_end, end = (
            parts["start"],
            parts["idle_start"],
            parts["idle_end"],
            parts["end"],
        )
        opened, loaded = parts["opened"], parts["loaded"]
        sessions = sum(r["sessions"] for r in opened)
        latencies = [value for r in loaded for value in r["latencies_us"]]
        sent = sum(r["sent"] for r in loaded)

        def per_session(grown_kib: float) -> float:
            return grown_kib * 1024 / sessions if sessions else 0.0

        idle_delta = {
            key: idle_end[key] - idle_start[key]
            for key in ("timer_wakeups", "session_timer_calls", "datagrams_received")
        }
        idle_delta["datagrams_sent"] = idle_end["datagrams_sent"] - idle_start["datagrams_sent"]
        # While loaded: how often the one timer woke the listener, per echo.
        loaded_delta = {
            key: parts["after_load"][key] - idle_end[key]
            for key in (
                "timer_wakeups",
                "session_timer_calls",
                "datagrams_received",
                "datagrams_sent",
            )
        }
        return {
            "sessions": sessions,
            "requested_sessions": options.sessions,
            "clients": options.clients,
            "duration": options.duration,
            "interval": options.interval,
            "peer_ack_delay": options.peer_ack_delay,
            "listener_allocator": "malloc" if options.malloc else "pymalloc",
            "open": {
                "seconds": parts["open_seconds"],
                "per_second": sessions / parts["open_seconds"],
                "failures": sum(r["failures"] for r in opened),
                "first_failures": [f for r in opened for f in r["first_failures"]][:3],
                "listener_open": idle_start["sessions_open"],
            },
            "server": {
                "rss_start_kib": start["rss_kib"],
                "rss_idle_kib": idle_start["rss_kib"],
                "rss_loaded_kib": parts["loaded_sample"]["rss_kib"],
                "rss_after_load_kib": parts["after_load"]["rss_kib"],
                "rss_end_kib": end["rss_kib"],
                "rss_end_trimmed_kib": end["rss_trimmed_kib"],
                "python_blocks_start": start["python_blocks"],
                "python_blocks_idle": idle_start["python_blocks"],
                "python_blocks_after_load": parts["after_load"]["python_blocks"],
                "python_blocks_end": end["python_blocks"],
                "bytes_per_idle_session": per_session(idle_start["rss_kib"] - start["rss_kib"]),
                "bytes_per_session_after_load": per_session(
                    parts["after_load"]["rss_kib"] - start["rss_kib"]
                ),
                "end_over_start": end["rss_kib"] / start["rss_kib"],
                "idle_seconds": options.idle_seconds,
                "idle_cpu_per_second": parts["idle_cpu"] / options.idle_seconds,
                "idle": idle_delta,
                "loaded_cpu_per_second": parts["loaded_cpu"] / parts["loaded_seconds"],
                "loaded": loaded_delta,
                "heap_entries": {
                    "idle": idle_start["heap_entries"],
                    "loaded": parts["loaded_sample"]["heap_entries"],
                    "after_load": parts["after_load"]["heap_entries"],
                },
                "delayed_calls_idle": idle_start["delayed_calls"],
                "delayed_calls_loaded": parts["loaded_sample"]["delayed_calls"],
                "sessions_open_end": end["sessions_open"],
                # Closing them all: what the listener took and sent, and how
                # much of it reached sessions already gone (answered with
                # ABORT, or left unanswered over the rate the limits allow).
                "closing": {
                    key: end[key] - parts["after_load"][key]
                    for key in ("datagrams_received", "datagrams_sent")
                }
                | {
                    "to_sessions_gone": sum(
                        end[key] - parts["after_load"][key]
                        for key in ("aborts_sent", "replies_limited")
                    )
                },
                "seconds_until_all_closed": parts["drained_seconds"],
                "retransmissions_loaded": parts["after_load"]["retransmissions"],
                "timeouts_loaded": parts["after_load"]["timeouts"],
                "spurious_loaded": parts["after_load"].get("spurious", 0),
                "deferred_loaded": parts["after_load"].get("deferred", 0),
                "duplicates_received_loaded": parts["after_load"].get("duplicates_received", 0),
                "socket_drops_loaded": parts["after_load"]["socket_drops"]
                - parts["idle_end"]["socket_drops"],
                "gc_loaded": {
                    key: parts["loaded_sample"][key] + parts["after_load"][key]
                    for key in ("gc_pauses", "gc_total")
                },
                "gc_longest_loaded": max(
                    parts["loaded_sample"]["gc_longest"], parts["after_load"]["gc_longest"]
                ),
                "send_errors": end["send_errors"],
                "top_lines": idle_start.get("top_lines"),
                "top_lines_end": end.get("top_lines"),
                "survivors_end": end.get("survivors"),
                "memory_trims": end["memory_trims"],
                "memory_trim_longest_ms": end["memory_trim_longest_ms"],
            },
            "clients_report": {
                "bytes_per_session": per_session(
                    sum(r["rss_kib"] - r["rss_before_kib"] for r in opened)
                ),
                "cpu_per_second": sum(r["cpu"] for r in loaded) / parts["loaded_seconds"],
                "rss_after_close_kib": [r["rss_kib"] for r in parts["closed"]],
                "close_seconds": max(r["seconds"] for r in parts["closed"]),
                "socket_drops_loaded": sum(r["socket_drops"] for r in loaded),
                "gc_longest_loaded": max(r["gc_longest"] for r in loaded),
                "retransmissions_loaded": sum(r.get("retransmissions", 0) for r in loaded),
                "timeouts_loaded": sum(r.get("timeouts", 0) for r in loaded),
                "spurious_loaded": sum(r.get("spurious", 0) for r in loaded),
                "deferred_loaded": sum(r.get("deferred", 0) for r in loaded),
                "duplicates_received_loaded": sum(r.get("duplicates_received", 0) for r in loaded),
            },
            "echo": {
                "sent": sent,
                "echoed": len(latencies),
                "mismatches": sum(r["mismatches"] for r in loaded),
                "per_second": sent / max(r["seconds"] for r in loaded),
                "p50_ms": percentile(latencies, 0.5) / 1e3,
                "p99_ms": percentile(latencies, 0.99) / 1e3,
                "max_ms": percentile(latencies, 1.0) / 1e3,
            },
        }


def show(report: dict[str, Any]) -> None:
    server, clients = report["server"], report["clients_report"]
    echo, opening, idle = report["echo"], report["open"], server["idle"]

    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f} MiB"

    every = "every second" if report["interval"] == 1 else f"every {report['interval']:g} s"
    if report["peer_ack_delay"]:
        every += f" (peer_ack_delay {report['peer_ack_delay'] * 1e3:g} ms)"
    print(
        f"{report['sessions']:,} sessions on one listener ({report['listener_allocator']}) from"
        f" {report['clients']} client processes; 64 bytes echoed on each {every}"
        f" for {report['duration']:g} s"
    )
    print(
        f" opened in {opening['seconds']:.1f} s ({opening['per_second']:,.0f}/s),"
        f" {opening['failures']} connect(s) failed and retried"
    )
    print(
        f" memory per session: {server['bytes_per_idle_session'] / 1024:.2f} KiB idle,"
        f" {server['bytes_per_session_after_load'] / 1024:.2f} KiB idle after the load"
        f" (listener); {clients['bytes_per_session'] / 1024:.2f} KiB (clients)"
    )
    print(
        f" listener RSS: {mib(server['rss_start_kib'])} at start,"
        f" {mib(server['rss_idle_kib'])} idle, {mib(server['rss_loaded_kib'])} loaded,"
        f" {mib(server['rss_after_load_kib'])} idle after the load"
    )
    trimmed = server["rss_end_trimmed_kib"]
    blocks = (
        f"; Python blocks in use {server['python_blocks_start']:,} at start,"
        f" {server['python_blocks_idle']:,} idle,"
        f" {server['python_blocks_after_load']:,} idle after the load,"
        f" {server['python_blocks_end']:,} after"
        if server["python_blocks_start"]  # none counted without pymalloc
        else ""
    )
    print(
        f" after closing all ({server['sessions_open_end']} left open"
        f" {server['seconds_until_all_closed']:.1f} s after the clients closed):"
        f" RSS {mib(server['rss_end_kib'])} ({server['end_over_start'] - 1:+.1%} of the start)"
        f" once the listener trimmed its heap ({server['memory_trims']} time(s), the longest"
        f" {server['memory_trim_longest_ms']:.1f} ms),"
        f" {mib(trimmed)} after another malloc_trim ({trimmed / server['rss_start_kib'] - 1:+.1%})"
        f"{blocks}"
    )
    closing = server["closing"]
    print(
        f" closing them: the listener took {closing['datagrams_received']:,} datagrams and sent"
        f" {closing['datagrams_sent']:,} (a close needs 2 in and 1 out);"
        f" {closing['to_sessions_gone']:,} came for sessions already gone"
    )
    print(
        f" listener CPU idle: {server['idle_cpu_per_second']:.3f} s/s over"
        f" {server['idle_seconds']:g} s ({idle['timer_wakeups']} timer wake-ups,"
        f" {idle['session_timer_calls']} session timers, {idle['datagrams_received']} datagrams"
        f" in, {idle['datagrams_sent']} out); reactor delayed calls:"
        f" {server['delayed_calls_idle']} idle, {server['delayed_calls_loaded']} loaded"
    )
    print(
        f" loaded: listener CPU {server['loaded_cpu_per_second']:.2f} s/s, clients together"
        f" {clients['cpu_per_second']:.2f} s/s; echoes {echo['echoed']:,} of {echo['sent']:,}"
        f" back (sent at {echo['per_second']:,.0f}/s), {echo['mismatches']} different;"
        f" p50 {echo['p50_ms']:.2f} ms, p99 {echo['p99_ms']:.2f} ms,"
        f" longest {echo['max_ms']:.1f} ms"
    )
    busy = server["loaded"]
    print(
        f" loaded: the listener's timer woke {busy['timer_wakeups']:,} times"
        f" ({busy['session_timer_calls']:,} session timers acted) for"
        f" {busy['datagrams_received']:,} datagrams in and {busy['datagrams_sent']:,} out"
    )
    print(
        f" loaded: socket drops {server['socket_drops_loaded']} at the listener,"
        f" {clients['socket_drops_loaded']} at the clients; retransmissions (probe timeouts)"
        f" {server['retransmissions_loaded']:,} ({server['timeouts_loaded']:,}) by the listener,"
        f" {clients['retransmissions_loaded']:,} ({clients['timeouts_loaded']:,}) by the"
        f" clients; longest collector pause {server['gc_longest_loaded'] * 1e3:.0f} ms at the"
        f" listener ({server['gc_loaded']['gc_pauses']} collections),"
        f" {clients['gc_longest_loaded'] * 1e3:.0f} ms at a client"
    )
    # A segment received twice is a copy the peer did not need (or whose
    # ack was lost): how many of the timeouts above answered no loss.
    print(
        f" loaded: segments received twice {clients['duplicates_received_loaded']:,} by the"
        f" clients, {server['duplicates_received_loaded']:,} by the listener; recovery"
        f" episodes undone as spurious {server['spurious_loaded']:,} by the listener,"
        f" {clients['spurious_loaded']:,} by the clients; probe timeouts that left the"
        f" silent peer to another session's copy {server['deferred_loaded']:,} at the"
        f" listener, {clients['deferred_loaded']:,} at the clients"
    )
    for title, key in (("idle", "top_lines"), ("after closing all", "top_lines_end")):
        if server[key]:
            print(f" the listener's top allocating lines, per session, {title}:")
            for line in server[key]:
                print(f"   {line}")
    if server["survivors_end"]:
        show_survivors(server["survivors_end"])


def show_survivors(found: dict[str, Any]) -> None:
    """What still lives, after closing all, in memory pools made since the start."""
    kinds = ", ".join(f"{name} {count}" for name, count in list(found["by_type"].items())[:12])
    print(
        f" after closing all, the listener's pools made since the start hold"
        f" {found['blocks']:,} live block(s) in {found['pools']} pool(s) of"
        f" {found['arenas']} arena(s): {kinds}"
    )
    for entry in found["listed"]:
        if entry["type"].startswith("("):
            continue  # buffers and free lists: no holder to name
        held = ", ".join(entry.get("held_by", []))
        value = f" {entry['repr']}" if "repr" in entry else ""
        print(f"   arena {entry['arena']}: {entry['type']}{value}{' <- ' + held if held else ''}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between one session's messages"
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--parallel", type=int, default=64, help="connects in flight per client")
    parser.add_argument(
        "--peer-ack-delay",
        type=float,
        default=0.0,
        help="SessionConfig.peer_ack_delay on both ends (adds to every probe timeout), s",
    )
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="list what still lives, after closing all, in the listener's memory pools"
        " made since the start (tools/arena_survivors.py; CPython 3.10-3.13 on Linux)",
    )
    parser.add_argument(
        "--malloc",
        action="store_true",
        help="the listener allocates with C malloc (PYTHONMALLOC=malloc), trimmed when measured",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args(argv)
    run = Run(options)
    try:
        report = run.execute()
    finally:
        for process in run.peers.processes.values():
            if process.poll() is None:
                process.terminate()  # they wait for it (the listener forever)
        run.peers.close()
    report["command"] = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    show(report)
    if options.json:
        options.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
