"""
The Wireshark/tshark dissector (tools/mnet.lua): a simulated session is
written to a pcap and tshark must name every packet and field as our own
parser does, both on the configured port and by its heuristic.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from simnet import connected_pair, payload

from mnet_twisted import wire

LUA = Path(__file__).resolve().parent.parent / "tools" / "mnet.lua"
pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def _ipv4_udp(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(data), 0) + data
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
        socket.inet_aton(src[0]), socket.inet_aton(dst[0]),
    )  # fmt: skip
    words = struct.unpack("!10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    checksum = ~total & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


def _write_pcap(
    path: Path, records: list[tuple[float, tuple[str, int], tuple[str, int], bytes]]
) -> None:
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228))  # raw IPv4
        for when, src, dst, data in records:
            packet = _ipv4_udp(src, dst, data)
            seconds = int(when)
            out.write(
                struct.pack(
                    "<IIII", seconds, int((when - seconds) * 1e6), len(packet), len(packet)
                )
            )
            out.write(packet)


def _session_pcap(tmp_path: Path) -> tuple[Path, list[bytes]]:
    net, client, _server, conn, peer = connected_pair(seed=91)
    net.trace = True
    message = payload(5000, seed=91)
    client.write(conn, message)
    net.run_until(lambda: bytes(peer.received) == message, max_time=10)
    client.close(conn)
    net.run_until(lambda: conn.closed and peer.closed, max_time=10)
    # The handshake happened before tracing: add one of each from the parser.
    handshake = [
        wire.Init(b"\x01\x02\x03").to_bytes(),
        wire.Cookie(
            b"\x04\x05\x06", b"\x01\x02\x03", 1, 1_800_000_000, bytes(range(20))
        ).to_bytes(),
    ]
    records = [(1.0, client.addr, _server.addr, d) for d in handshake] + net.sent_log
    path = tmp_path / "session.pcap"
    _write_pcap(path, [(1.0 + i * 1e-3, s, d, data) for i, (_, s, d, data) in enumerate(records)])
    return path, [data for _, _, _, data in records]


def _tshark(pcap: Path, *options: str) -> list[list[str]]:
    fields = ["mnet.type", "mnet.tag", "mnet.seq", "mnet.ack", "mnet.length", "mnet.connector_tag"]
    done = subprocess.run(
        ["tshark", "-n", "-X", f"lua_script:{LUA}", *options, "-r", str(pcap), "-T", "fields"]
        + [arg for field in fields for arg in ("-e", field)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Lua" not in done.stderr or "error" not in done.stderr.lower(), done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def _expected(datagram: bytes) -> list[str]:
    packet = wire.parse(datagram)
    kind = str(int(datagram[0]))
    if isinstance(packet, wire.Init):
        return [kind, "", "", "", "", packet.tag.hex()]
    if isinstance(packet, (wire.Cookie, wire.CookieEcho)):
        return [kind, "", "", "", "", packet.connector_tag.hex()]
    if isinstance(packet, wire.Data):
        return [
            kind,
            packet.tag.hex(),
            str(packet.seq),
            str(packet.ack),
            str(len(packet.payload)),
            "",
        ]
    ack = str(packet.ack) if isinstance(packet, wire.Shutdown) else ""
    return [kind, datagram[1:4].hex(), "", ack, "", ""]


@pytest.mark.parametrize("how", ["heuristic", "port"])
def test_tshark_decodes_every_packet_as_our_parser_does(tmp_path: Path, how: str) -> None:
    pcap, datagrams = _session_pcap(tmp_path)
    # Wireshark's TAPA heuristic claims short UDP payloads before any Lua
    # heuristic: off a configured port, MNET needs it out of the way.
    options = ("-o", "mnet.udp_port:5000") if how == "port" else ("--disable-protocol", "tapa")
    rows = _tshark(pcap, *options)
    assert len(rows) == len(datagrams)
    kinds = {row[0] for row in rows}
    assert {"0", "1", "2", "5", "6", "7"} <= kinds, kinds  # DATA, handshake, shutdown
    for row, datagram in zip(rows, datagrams, strict=True):
        assert row == _expected(datagram), (row, datagram.hex())
