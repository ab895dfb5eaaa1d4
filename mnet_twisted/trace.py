"""
Per-session packet traces, in the spirit of qlog: one JSON object a line.

A ``SessionTracer`` is handed every datagram a session sends and receives
and its metrics after each; it records

- ``packet_sent`` / ``packet_received``: the packet type, and for DATA its
  stream offsets (``seq`` is the end of the payload), ``ack`` and length;
- ``packet_lost``: a DATA segment sent again (its first copy was taken for
  lost, or a pass resent it);
- ``metrics_updated``: congestion window, smoothed RTT, RTT variance and
  minimum, whenever one of them changed.

Times are the session's clock (seconds).  ``tools/plot_trace.py`` draws a
trace.  Records go to ``write`` (a callable taking one line of text).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import wire

__all__ = ["SessionTracer"]

_NAMES = {int(kind): kind.name.lower() for kind in wire.PacketType}


class SessionTracer:
    """Turns one session's datagrams and metrics into trace records."""

    def __init__(self, write: Callable[[str], object], origin: float) -> None:
        self._write = write
        self._origin = origin
        self._highest_sent = -1
        self._metrics: tuple[float | int | None, ...] = ()

    def _record(self, now: float, name: str, data: dict[str, object]) -> None:
        line = json.dumps({"time": round(now - self._origin, 6), "name": name, "data": data})
        self._write(line + "\n")

    def datagram(self, now: float, datagram: bytes, *, sent: bool) -> None:
        if not datagram:
            return
        fields = wire.parse_data(datagram)
        data: dict[str, object] = {"type": _NAMES.get(datagram[0], str(datagram[0]))}
        data["size"] = len(datagram)
        if fields is not None:
            seq, ack, payload = fields
            data.update(seq=seq, ack=ack, length=len(payload))
            if sent and payload:
                if seq <= self._highest_sent:
                    self._record(now, "packet_lost", {"seq": seq, "length": len(payload)})
                self._highest_sent = max(self._highest_sent, seq)
        self._record(now, "packet_sent" if sent else "packet_received", data)

    def metrics(
        self, now: float, cwnd: int, srtt: float | None, rttvar: float, min_rtt: float | None
    ) -> None:
        metrics = (cwnd, srtt, rttvar, min_rtt)
        if metrics != self._metrics:
            self._metrics = metrics
            self._record(
                now,
                "metrics_updated",
                {"cwnd": cwnd, "srtt": srtt, "rttvar": rttvar, "min_rtt": min_rtt},
            )
