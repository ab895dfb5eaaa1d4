"""
Plumbing for ``bench/lossy_netns.py``: running commands, namespaces that are
always deleted, kernel counters, and the peer processes of one measurement.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from _engine import ENGINE_PATH


class Skip(Exception):
    """The environment cannot run this scenario (the message says why)."""


def run(*command: str) -> str:
    """Run a command; its stdout, or CalledProcessError with stderr attached."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    return done.stdout


@contextlib.contextmanager
def namespaces(names: Sequence[str], setup: Sequence[Sequence[str]]) -> Iterator[None]:
    """Run ``setup`` (which creates ``names``); delete the namespaces on the way out."""
    try:
        for command in setup:
            try:
                run(*command)
            except (OSError, subprocess.SubprocessError) as error:
                detail = getattr(error, "stderr", None) or error
                raise Skip(f"`{' '.join(command)}` failed: {str(detail).strip()}") from None
        yield
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


#: Kernel counters worth a look after each measurement (per namespace).
COUNTERS = [
    "Udp.InDatagrams",
    "Udp.OutDatagrams",
    "Udp.RcvbufErrors",
    "Udp.SndbufErrors",
    "Udp.InErrors",
    "Tcp.OutSegs",
    "Tcp.RetransSegs",
    "TcpExt.TCPSackRecovery",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPLossProbes",
    "TcpExt.TCPBacklogDrop",
    "TcpExt.TCPRcvQDrop",
    "TcpExt.TCPOFODrop",
    "TcpExt.TCPSpuriousRTOs",
    "TcpExt.TCPDSACKRecv",
]


def counters(ns: str) -> dict[str, int]:
    """The COUNTERS of a namespace, from /proc/net/snmp and /proc/net/netstat."""
    text = run("ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/netstat")
    values: dict[str, int] = {}
    lines = text.splitlines()
    for names, numbers in zip(lines[::2], lines[1::2], strict=False):
        group, _, keys = names.partition(":")
        for key, number in zip(keys.split(), numbers.partition(":")[2].split(), strict=False):
            values[f"{group}.{key}"] = int(number)
    return {key: values.get(key, 0) for key in COUNTERS}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def peer_environment() -> dict[str, str]:
    """This process's environment, with the measured engine first on ``PYTHONPATH``.

    That is this checkout's code, compiled if a build of it is installed
    (``_engine``), never whichever other one is installed.
    """
    environment = dict(os.environ)
    paths = [ENGINE_PATH, *filter(None, [environment.get("PYTHONPATH")])]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


class Peers:
    """
    The peer processes of one measurement, each run as ``ip netns exec NS
    python script ARGS``, reporting JSON lines on stdout.
    """

    def __init__(self, script: str) -> None:
        self.script = script
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.stderr: dict[str, IO[str]] = {}
        self.notes: list[str] = []
        self.stderr_text: dict[str, str] = {}

    def start(self, name: str, ns: str | None, *args: str) -> None:
        """Start a peer, inside namespace ``ns`` (None: in this one, no root needed)."""
        # Closed in close(), once read.
        self.stderr[name] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        prefix = ["ip", "netns", "exec", ns] if ns is not None else []
        process = subprocess.Popen(
            [*prefix, sys.executable, self.script, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr[name],
            env=peer_environment(),
            text=True,
            start_new_session=True,  # Ctrl-C reaches the bench, which ends the peers.
        )
        self.processes[name] = process
        self.seen[name] = []
        threading.Thread(target=self._read, args=(name, process), daemon=True).start()

    def _read(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "text": line.rstrip()}
            self.events.put((name, event))
        self.events.put((name, {"event": "exit"}))

    def wait_for(self, name: str, kind: str, timeout: float) -> dict[str, Any] | None:
        """The peer's first ``kind`` event; None if it failed, exited or took too long."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen.get(name, []):
                if event["event"] == kind:
                    return event
                if event["event"] in ("error", "exit"):
                    return None
            try:
                who, event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.notes.append(f"{name}: no {kind!r} within {timeout:.0f} s")
                return None
            self.seen[who].append(event)

    def result(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.seen.get(name, []) if e["event"] == "result"), None)

    def close(self) -> None:
        """End every peer still running (by its pid), then collect what they said."""
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=2)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for name, stream in self.stderr.items():
            stream.seek(0)
            self.stderr_text[name] = stream.read()
            stream.close()
        time.sleep(0.05)  # let the reader threads drain the last lines
        while not self.events.empty():
            who, event = self.events.get_nowait()
            self.seen[who].append(event)

    def problems(self) -> str:
        """What went wrong: error events, notes, and tracebacks the peers printed."""
        found = list(self.notes)
        for name, events in self.seen.items():
            found += [f"{name}: {e['error']}" for e in events if e["event"] == "error"]
            text = self.stderr_text.get(name, "")
            if "Traceback" in text:
                count = text.count("Unhandled Error")
                first = text[text.index("Traceback") :][:1500]
                found.append(f"{name}: {count} unhandled error(s) logged; first:\n{first}")
        return "\n".join(found)


def run_fixed_transfer(
    script: str,
    ns: str | None,
    proto: str,
    total: int,
    timeout: float,
    extra: tuple[str, ...] = (),
) -> Peers:
    """Move ``total`` bytes from a ``send`` peer to a ``receive`` peer; the finished peers."""
    peers = Peers(script)
    try:
        common = ["--proto", proto, "--host", "127.0.0.1", "--bytes", str(total)]
        common += ["--timeout", str(timeout), *extra]
        peers.start("receiver", ns, "receive", *common, "--port", "0")
        listening = peers.wait_for("receiver", "listening", 20)
        if listening is not None:
            peers.start("sender", ns, "send", *common, "--port", str(listening["port"]))
            peers.wait_for("receiver", "result", timeout + 30)
            peers.wait_for("sender", "result", 30)
    finally:
        peers.close()
    return peers
