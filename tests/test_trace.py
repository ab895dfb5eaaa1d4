"""
Packet traces: a lossy simulated transfer traced record by record, drawn by
tools/plot_trace.py, and the ``trace=DIR`` endpoint option on real sockets.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from conftest import Collector, EchoProtocol, within
from simnet import Link, connected_pair, payload
from twisted.internet.protocol import Factory

from mnet_twisted.trace import SessionTracer

PLOT = Path(__file__).resolve().parent.parent / "tools" / "plot_trace.py"


def _traced_lossy_transfer(path: Path) -> tuple[list[dict], int]:
    net, client, _server, conn, peer = connected_pair(seed=95, link=Link(loss=0.03))
    lines: list[str] = []
    conn.session.tracer = SessionTracer(lines.append, net.now)
    data = payload(400_000, seed=95)
    client.write(conn, data)
    net.run_until(lambda: bytes(peer.received) == data, max_time=60)
    net.run_until(lambda: conn.session.send_buffer_size == 0, max_time=10)
    path.write_text("".join(lines))
    return [json.loads(line) for line in lines], conn.session.stats().retransmissions


def test_a_trace_records_every_datagram_loss_and_metric(tmp_path: Path) -> None:
    records, retransmissions = _traced_lossy_transfer(tmp_path / "trace.jsonl")
    names = [r["name"] for r in records]
    assert {"packet_sent", "packet_received", "packet_lost", "metrics_updated"} <= set(names)
    assert names.count("packet_lost") == retransmissions > 0
    sent = [r["data"] for r in records if r["name"] == "packet_sent" and r["data"]["length"]]
    assert max(d["seq"] for d in sent) == 400_000
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[0] >= 0
    metrics = [r["data"] for r in records if r["name"] == "metrics_updated"]
    assert all(m["cwnd"] > 0 for m in metrics) and metrics[-1]["srtt"] > 0


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib missing")
def test_the_plot_script_draws_a_trace(tmp_path: Path) -> None:
    _traced_lossy_transfer(tmp_path / "trace.jsonl")
    done = subprocess.run(
        [sys.executable, str(PLOT), str(tmp_path / "trace.jsonl"), str(tmp_path / "trace.png")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "trace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "trace.png").stat().st_size > 20_000


@pytest_twisted.ensureDeferred
async def test_trace_directory_on_a_listening_endpoint(mnet, tmp_path: Path) -> None:
    from twisted.internet.endpoints import clientFromString

    port = await mnet.listen(Factory.forProtocol(EchoProtocol), traceDirectory=str(tmp_path))
    address = port.getHost()
    description = f"mnet:host=127.0.0.1:port={address.port}:trace={tmp_path / 'client'}"
    (tmp_path / "client").mkdir()
    client = await within(
        clientFromString(mnet.reactor, description).connect(Factory.forProtocol(Collector))
    )
    client.transport.write(b"traced" * 1000)
    await mnet.waitFor(lambda: client.received == b"traced" * 1000)
    client.transport.loseConnection()
    await mnet.waitFor(lambda: port.getStats().sessions_open == 0)
    (trace,) = tmp_path.glob("mnet-*.jsonl")
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    received = [r["data"] for r in records if r["name"] == "packet_received"]
    assert sum(d.get("length", 0) for d in received) == 6000
    assert any(r["data"]["type"] == "shutdown" for r in records if r["name"] == "packet_received")
    (client_trace,) = (tmp_path / "client").glob("mnet-*.jsonl")
    sent = [json.loads(line)["data"] for line in client_trace.read_text().splitlines()]
    assert sum(d.get("length", 0) for d in sent if "seq" in d and d["type"] == "data") >= 12000
