"""
An INIT flood against one MNET listener, with an honest session beside it.

    .venv/bin/python bench/handshake_flood.py [--seconds 5] [--flooders 2]

The listener is the suite's echo server (default ``ListenerLimits``) in a
process of its own.  Each phase runs an honest client that sends 64-byte
echoes one after another; the flood phase adds ``--flooders`` processes
that send INITs with fresh tags as fast as they can, each from its own UDP
port.  Reported per phase: echoes completed, their p50/p99 and the longest
wait, the INITs sent per second, the COOKIEs that came back per second, the
listener's CPU share, and the datagrams the listener's socket dropped
(``/proc/net/udp``).  Needs no root; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _peer_run import socket_drops  # noqa: E402

MESSAGE = 64


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


# -- roles (each runs in its own process) --------------------------------------------


def flood(port: int, seconds: float) -> None:
    """Send INITs with fresh tags as fast as possible; count the COOKIEs that come back."""
    from mnet_twisted import wire

    prefix = wire.Init(b"\x00\x00\x00").to_bytes()[:-3]  # the tag comes last
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    address = ("127.0.0.1", port)
    sent = cookies = 0
    counter = int.from_bytes(os.urandom(3), "big")
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        for _ in range(500):
            counter = (counter + 1) & 0xFFFFFF
            try:
                sock.sendto(prefix + counter.to_bytes(3, "big"), address)
                sent += 1
            except OSError:
                pass  # ENOBUFS: the kernel had no room; try on
        try:
            while True:
                if sock.recv(64)[:1] == b"\x02":
                    cookies += 1
        except BlockingIOError:
            pass
    emit(event="result", sent=sent, cookies=cookies, seconds=seconds)


def honest(port: int, seconds: float) -> None:
    """One MNET session echoing 64-byte messages one after another, for ``seconds``."""
    from twisted.internet import defer, reactor
    from twisted.internet.protocol import Factory, Protocol

    from mnet_twisted import MNETClientEndpoint

    class Asker(Protocol):
        def connectionMade(self) -> None:
            self.buffer = b""
            self.waiting: defer.Deferred[bytes] | None = None

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if self.waiting is not None and len(self.buffer) >= MESSAGE:
                waiting, self.waiting = self.waiting, None
                reply, self.buffer = self.buffer[:MESSAGE], self.buffer[MESSAGE:]
                waiting.callback(reply)

    async def run() -> None:
        endpoint = MNETClientEndpoint(reactor, "127.0.0.1", port, timeout=30)
        protocol = await endpoint.connect(Factory.forProtocol(Asker))
        times: list[float] = []
        ends = time.monotonic() + seconds
        index = 0
        while time.monotonic() < ends:
            message = index.to_bytes(8, "big") * (MESSAGE // 8)
            protocol.waiting = defer.Deferred()
            started = time.perf_counter()
            protocol.transport.write(message)
            reply = await protocol.waiting
            times.append(time.perf_counter() - started)
            if reply != message:
                raise AssertionError(f"echo {index} came back different")
            index += 1
        protocol.transport.loseConnection()
        emit(event="result", times=times)

    def done(result: object) -> None:
        if isinstance(result, Exception) or hasattr(result, "value"):
            emit(event="error", error=repr(getattr(result, "value", result)))
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addBoth(done))
    reactor.run()


# -- the runner -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(port: int, server_pid: int, seconds: float, flooders: int) -> dict[str, Any]:
    from _netns_runner import Peers

    peers = Peers(__file__)
    drops, cpu = socket_drops(port), cpu_seconds(server_pid)
    started = time.monotonic()
    try:
        for index in range(flooders):
            peers.start(
                f"flood{index}", None, "flood", "--port", str(port), "--seconds", str(seconds)
            )
        peers.start("honest", None, "honest", "--port", str(port), "--seconds", str(seconds))
        honest_result = peers.wait_for("honest", "result", seconds + 60)
        floods = [peers.wait_for(f"flood{i}", "result", seconds + 30) for i in range(flooders)]
    finally:
        peers.close()
    elapsed = time.monotonic() - started
    record: dict[str, Any] = {
        "flooders": flooders,
        "error": peers.problems() or None,
        "listener_cpu_share": (cpu_seconds(server_pid) - cpu) / elapsed,
        "socket_drops": socket_drops(port) - drops,
        "inits_per_second": sum(f["sent"] for f in floods if f) / seconds,
        "cookies_per_second": sum(f["cookies"] for f in floods if f) / seconds,
    }
    times = sorted(honest_result["times"]) if honest_result else []
    if times:
        record.update(
            echoes=len(times),
            p50_ms=statistics.median(times) * 1e3,
            p99_ms=times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3,
            longest_ms=times[-1] * 1e3,
        )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", choices=["flood", "honest"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args()
    if options.role == "flood":
        return flood(options.port, options.seconds)
    if options.role == "honest":
        return honest(options.port, options.seconds)

    from _netns_runner import Peers

    server = Peers(str(HERE / "_suite_peer.py"))
    server.start("server", None, "server", "--proto", "mnet")
    try:
        listening = server.wait_for("server", "listening", 20)
        if listening is None:
            raise SystemExit(f"the listener did not start: {server.problems()}")
        port = int(listening["port"])
        pid = server.processes["server"].pid
        phases = [
            phase(port, pid, options.seconds, 0),
            phase(port, pid, options.seconds, options.flooders),
        ]
    finally:
        server.close()
    print(f"INIT flood against one listener, {options.seconds:g} s per phase, loopback:")
    print(
        " flooders | INIT/s sent | COOKIE/s back | listener CPU | socket drops"
        " | echoes | p50 ms | p99 ms | longest ms"
    )
    nan = float("nan")
    for record in phases:
        print(
            f" {record['flooders']:8} | {record['inits_per_second']:11,.0f}"
            f" | {record['cookies_per_second']:13,.0f} | {record['listener_cpu_share']:11.0%}"
            f" | {record['socket_drops']:12,} | {record.get('echoes', 0):6}"
            f" | {record.get('p50_ms', nan):6.2f} | {record.get('p99_ms', nan):6.2f}"
            f" | {record.get('longest_ms', nan):10.1f}"
            + (f"  ERROR {record['error']}" if record["error"] else "")
        )
    if options.json:
        options.json.write_text(json.dumps({"command": sys.argv, "phases": phases}, indent=1))


if __name__ == "__main__":
    main()
