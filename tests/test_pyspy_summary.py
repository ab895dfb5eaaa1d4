"""tools/pyspy_summary.py: a py-spy recording's samples by process and kind of work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "pyspy_summary.py"

PARENT = 'process 10:"python bench/suite.py"'
SENDER = 'process 11:"python bench/_netns_peer.py send --proto mnet --port 5"'
TCP = 'process 12:"python bench/_netns_peer.py send --proto tcp --port 6"'
LOOP = "<module> (bench/_netns_peer.py:333);ReactorBase.mainLoop (twisted/internet/base.py:697)"


def _line(process: str, *frames: str, samples: int) -> str:
    return ";".join((PARENT, process, *frames)) + f" {samples}\n"


def test_samples_in_the_loop_are_charged_to_their_innermost_frame(tmp_path: Path) -> None:
    raw = tmp_path / "bulk.raw"
    raw.write_text(
        "".join(
            [
                _line(SENDER, LOOP, "MNETPort._sendSegmented (mnet_twisted/u.py:2)", samples=30),
                _line(SENDER, LOOP, "SendBuffer.get (mnet_twisted/sendbuf.py:79)", samples=45),
                _line(SENDER, LOOP, "Session._emit (mnet_twisted/session.py:683)", samples=5),
                _line(SENDER, LOOP, "Sending.resumeProducing (bench/_peer.py:2)", samples=15),
                _line(SENDER, LOOP, "Failure.__init__ (twisted/python/failure.py:255)", samples=5),
                # Before the loop, and imports: left out.
                _line(SENDER, "<module> (bench/_netns_peer.py:333)", "main (x.py:1)", samples=400),
                _line(
                    SENDER,
                    LOOP,
                    "_find_and_load (<frozen importlib._bootstrap>:1176)",
                    "<module> (y.py:1)",
                    samples=70,
                ),
                _line(TCP, LOOP, "Connection.doRead (twisted/internet/tcp.py:278)", samples=80),
                "not a stack line\n",
            ]
        )
    )
    done = subprocess.run(
        [sys.executable, str(TOOL), str(raw), "--match", "proto mnet", "--top", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "process 11: python bench/_netns_peer.py send --proto mnet --port 5"
    assert lines[1:6] == [
        "  100 samples in the reactor's loop",
        "   30.0% system calls",
        "   15.0% benchmark",
        "   50.0% mnet_twisted",
        "    5.0% Twisted and other",
    ]
    assert lines[6] == (
        "  busiest in mnet_twisted (own time): SendBuffer.get sendbuf.py 45.0%,"
        " Session._emit session.py 5.0%"
    )
    assert len(lines) == 7  # the TCP process does not match
