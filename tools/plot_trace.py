"""
Draw an MNET packet trace (``trace=DIR`` on an endpoint, ``mnet_twisted.trace``):

    python tools/plot_trace.py TRACE.jsonl OUT.png

Top: the stream offsets of DATA sent (each segment's end; red crosses for
segments sent again) and the acknowledgements received, over time.
Bottom: the congestion window and the smoothed RTT.  Needs matplotlib
(``pip install matplotlib``, or the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(records: list[dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def points(name: str, key: str, only_data: bool = False) -> tuple[list[float], list[float]]:
        chosen = [
            r
            for r in records
            if r["name"] == name and key in r["data"] and (not only_data or r["data"]["length"])
        ]
        return [r["time"] for r in chosen], [r["data"][key] for r in chosen]

    figure, (offsets, window) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    figure.suptitle(title)
    offsets.plot(*points("packet_sent", "seq", only_data=True), ".", ms=2, label="DATA sent")
    offsets.plot(*points("packet_received", "ack"), "-", lw=1, label="ack received")
    offsets.plot(*points("packet_lost", "seq"), "rx", ms=5, label="sent again")
    offsets.set_ylabel("stream offset (bytes)")
    offsets.legend(loc="upper left")
    times, cwnd = points("metrics_updated", "cwnd")
    window.step(times, [c / 1024 for c in cwnd], where="post", label="congestion window")
    window.set_ylabel("congestion window (KiB)")
    window.set_xlabel("time (s)")
    rtt_axis = window.twinx()
    rtt_times, srtt = points("metrics_updated", "srtt")
    shown = [(t, s * 1e3) for t, s in zip(rtt_times, srtt, strict=True) if s is not None]
    if shown:
        rtt_axis.plot(*zip(*shown, strict=True), "g-", lw=1, label="smoothed RTT")
    rtt_axis.set_ylabel("smoothed RTT (ms)")
    window.legend(loc="upper left")
    rtt_axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("out", type=Path)
    options = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("plot_trace: needs matplotlib (pip install matplotlib)")
    plot(load(options.trace), options.out, options.trace.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
