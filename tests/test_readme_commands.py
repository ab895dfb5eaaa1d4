"""
README commands that no other test runs as written, taken from README.md
itself (so that the two cannot drift apart) and run with this machine's
ports and paths: the ``trace=DIR`` server string and the plot command on a
real session's trace, and both tshark commands on a live capture.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from conftest import Collector, EchoProtocol, within
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.protocol import Factory

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _readme(pattern: str) -> str:
    """The one README snippet matching ``pattern`` (its first group)."""
    found = re.findall(pattern, README, re.MULTILINE)
    assert len(found) == 1, f"README.md has {len(found)} snippets matching {pattern!r}"
    return str(found[0])


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _session(mnet: Any, description: str, port: int, size: int = 60_000) -> None:
    """Listen on ``description``; one client echoes ``size`` bytes through it and closes."""
    listening = await within(
        serverFromString(mnet.reactor, description).listen(Factory.forProtocol(EchoProtocol))
    )
    try:
        client = await within(
            clientFromString(mnet.reactor, f"mnet:host=127.0.0.1:port={port}").connect(
                Factory.forProtocol(Collector)
            )
        )
        message = (bytes(range(256)) * (size // 256 + 1))[:size]
        client.transport.write(message)
        await mnet.waitFor(lambda: client.received == message)
        client.transport.loseConnection()
        await mnet.waitFor(lambda: listening.getStats().sessions_open == 0)
    finally:
        await within(listening.stopListening())


async def _traced(mnet: Any, directory: Path) -> Path:
    """A real session on the README's ``trace=`` server string; its trace file."""
    string = _readme(r"^\| `(mnet:9000:trace=/tmp/traces)`")
    port = _free_udp_port()
    await _session(
        mnet, string.replace("9000", str(port)).replace("/tmp/traces", str(directory)), port
    )
    (trace,) = directory.glob("mnet-*.jsonl")
    return trace


@pytest_twisted.ensureDeferred
async def test_the_readme_trace_string_traces_a_real_session(mnet: Any, tmp_path: Path) -> None:
    records = [
        json.loads(line) for line in (await _traced(mnet, tmp_path)).read_text().splitlines()
    ]
    received = [r["data"] for r in records if r["name"] == "packet_received"]
    # A segment retransmitted on a busy machine arrives twice: count each once.
    segments = {(d["seq"], d["length"]) for d in received if d.get("length")}
    assert sum(length for _, length in segments) == 60_000
    assert {"packet_sent", "packet_received", "metrics_updated"} <= {r["name"] for r in records}


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib missing")
@pytest_twisted.ensureDeferred
async def test_the_readme_plot_command_draws_a_real_trace(mnet: Any, tmp_path: Path) -> None:
    trace = await _traced(mnet, tmp_path)
    command = shlex.split(_readme(r"`(python tools/plot_trace\.py TRACE\.jsonl OUT\.png)`"))
    image = tmp_path / "trace.png"
    replaced = {"python": sys.executable, "TRACE.jsonl": str(trace), "OUT.png": str(image)}
    done = subprocess.run(
        [replaced.get(word, word) for word in command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def _live_capture(mnet: Any, directory: Path, size: int) -> tuple[list[str], Path]:
    """Run the README's live command on a session echoing ``size`` bytes.

    Bounded to the session's port and also saving the capture; returns
    the ``mnet.type`` field of each captured frame, and the capture.
    """
    port = _free_udp_port()
    command = shlex.split(_readme(r"^    (tshark .*-o mnet\.udp_port:9000 -i lo)$"))
    command = [word.replace("9000", str(port)) for word in command]
    capture, log = directory / "capture.pcap", directory / "tshark.log"
    extra = ["-f", f"udp port {port}", "-P", "-w", str(capture), "-T", "fields", "-e", "mnet.type"]
    with open(log, "wb") as errors:
        tshark = subprocess.Popen(
            [*command, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=errors
        )
    try:
        await mnet.waitFor(lambda: "Capturing on" in log.read_text() or tshark.poll(), 30)
        if tshark.poll() is not None:
            pytest.skip(f"tshark cannot capture on lo here: {log.read_text()[-300:]}")
        # "Capturing on" comes before the capture has started; tshark 4 says when it has.
        with contextlib.suppress(AssertionError):
            await mnet.waitFor(lambda: "Capture started" in log.read_text(), 5)
        await _session(mnet, f"mnet:{port}:interface=127.0.0.1", port, size)
        await mnet.sleep(0.3)  # the last datagrams reach the capture
    finally:
        tshark.send_signal(signal.SIGINT)
        out, _ = tshark.communicate(timeout=30)
    return out.decode().splitlines(), capture


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest_twisted.ensureDeferred
async def test_the_readme_tshark_commands_on_a_live_capture(mnet: Any, tmp_path: Path) -> None:
    # A short message: every datagram goes out alone (see the GSO test below).
    frames, capture = await _live_capture(mnet, tmp_path, 100)
    decoded = {int(kind) for frame in frames for kind in frame.split(",") if kind}
    # DATA, the handshake's four, and the graceful close's three.
    assert set(range(8)) <= decoded, frames

    # The second command, on that capture: no port set, so the heuristic finds MNET.
    command = shlex.split(_readme(r"^    (tshark .*-r capture\.pcap -Y mnet)$"))
    command = [str(capture) if word == "capture.pcap" else word for word in command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name in ("INIT", "COOKIE", "COOKIE-ECHO", "COOKIE-ACK", "DATA", "SHUTDOWN-COMPLETE"):
        assert any(re.search(rf"MNET \d+ {name}\b", line) for line in lines), (name, lines)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest_twisted.ensureDeferred
async def test_tshark_decodes_every_frame_of_a_live_bulk_transfer(
    mnet: Any, tmp_path: Path
) -> None:
    frames, _ = await _live_capture(mnet, tmp_path, 60_000)
    undecoded = [number for number, frame in enumerate(frames, 1) if not frame]
    assert not undecoded, f"frames {undecoded} of {len(frames)} are not decoded as MNET"
