"""
The hot-path benchmark suite: MNET against Twisted TCP, side by side in one
run, every scenario in separate processes on loopback.

    .venv/bin/python bench/suite.py --json suite.json

Scenarios (each checks what arrived):

- **bulk**: ``--bulk-mib`` MiB one way, sender and receiver in their own
  processes (``bench/_netns_peer.py``), SHA-256 of the stream compared;
- **echo**: 64-byte messages, one at a time over one connection, p50/p99
  of the round trip (``bench/_suite_peer.py``; the first 5 % are warm-up);
- **connect**: connect, one 64-byte echo, close, one after another: the
  time until ``connect()`` fires and the whole round, medians (MNET
  clients use ``shareSocket``, as a client opening many sessions would; an
  ``mnet-early`` row repeats it with ``SessionConfig.early_data``);
- **rate**: ``--rate-clients`` processes, each running ``--rate-parallel``
  connect/echo/close loops at once, as fast as they can for
  ``--rate-seconds`` against one listener process: sessions per second
  (also with early data);
- **sessions** (MNET only, not run unless named in ``--only``):
  ``--sessions`` concurrent sessions on one listener, a message on each
  every second for ``--sessions-seconds`` (``bench/scale_sessions.py``,
  which prints its own figures).

Rounds alternate MNET and TCP so both see the same machine at the same
time; the table gives medians and the MNET/TCP ratios the hot-path issue
sets its targets in, and below it each round's own ratios (each MNET figure
over the TCP one of its round; ``ratios_by_round`` in the JSON) show how far
the machine's swings move them.  Where aioquic is installed (``pip install aioquic``,
part of the ``test`` extra), a QUIC column runs bulk and echo the same way
(``bench/_quic_peer.py``: aioquic on asyncio, one stream per connection);
``--no-quic`` leaves it out.  Needs no root.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _engine import ENGINE  # noqa: E402
from _netns_peer import stream_sha256  # noqa: E402
from _netns_runner import Peers, run_fixed_transfer  # noqa: E402
from _rounds import ratios_by_round  # noqa: E402

PROTOCOLS = ("mnet", "tcp")
#: MNET with the datagram size pinned at its 1452-byte default (bulk only).
PINNED = "mnet-1452"
#: MNET clients with ``SessionConfig.early_data`` (connect and rate only).
EARLY = "mnet-early"
#: The optional column, and the scenarios it runs.
QUIC = "quic"
QUIC_SCENARIOS = ("bulk", "echo")


def _peer_script(proto: str, twisted_peer: str) -> str:
    return str(HERE / ("_quic_peer.py" if proto == QUIC else twisted_peer))


def bulk_once(proto: str, total: int, timeout: float) -> dict[str, Any]:
    """One bulk transfer; ``mnet-1452`` is MNET with the datagram size pinned."""
    pinned = proto == PINNED
    peers = run_fixed_transfer(
        _peer_script(proto, "_netns_peer.py"),
        None,
        "mnet" if pinned else proto,
        total,
        timeout,
        ("--pinned-size",) if pinned else (),
    )
    got, sent = peers.result("receiver"), peers.result("sender")
    record: dict[str, Any] = {"proto": proto, "error": peers.problems() or None}
    if got is None or not got["complete"]:
        record.update(goodput=0.0, ok=False)
        return record
    start = (sent or {}).get("first_write") or got["connected"]
    seconds = got["last_byte"] - start
    record.update(
        seconds=seconds,
        goodput=total / seconds / 1e6,
        ok=got["sha256"] == stream_sha256(total) and got["bytes"] == total,
        recovery_stats=(sent or {}).get("recovery_stats"),
    )
    return record


def with_server(
    proto: str,
    clients: list[list[str]],
    timeout: float,
    server_args: tuple[str, ...] = (),
    server_report: str | None = None,
) -> list[dict[str, Any]]:
    """Start an echo server, run the client jobs at once, return their results.

    ``server_report`` names an event the server emits once the clients are
    done; it comes last (empty if it never came).
    """
    peers = Peers(_peer_script(proto, "_suite_peer.py"))
    results: list[dict[str, Any]] = []
    try:
        peers.start("server", None, "server", "--proto", proto, *server_args)
        listening = peers.wait_for("server", "listening", 20)
        if listening is None:
            return [{"error": peers.problems() or "server did not start"}]
        port = str(listening["port"])
        for index, args in enumerate(clients):
            peers.start(f"client{index}", None, *args, "--proto", proto, "--port", port)
        for index in range(len(clients)):
            result = peers.wait_for(f"client{index}", "result", timeout)
            results.append(result or {"error": peers.problems() or "no result"})
        if server_report is not None:
            results.append(peers.wait_for("server", server_report, 10) or {})
    finally:
        peers.close()
    return results


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def echo_once(proto: str, count: int, breakdown: bool = False) -> dict[str, Any]:
    timed = breakdown and proto != QUIC
    extra = ("--breakdown",) if timed else ()
    result, *server = with_server(
        proto,
        [["echo", "--count", str(count), *extra]],
        120,
        server_args=extra,
        server_report="breakdown" if timed else None,
    )
    if "times" not in result:
        return {"proto": proto, "ok": False, "error": result.get("error")}
    times = result["times"][count // 20 :]
    record = {
        "proto": proto,
        "ok": True,
        "p50_us": _percentile(times, 0.5) * 1e6,
        "p99_us": _percentile(times, 0.99) * 1e6,
    }
    server_figures = server[0] if server else {}
    for side, figures in (("client", result.get("breakdown") or {}), ("server", server_figures)):
        for key in ("turn_us", "send_us"):
            if key in figures:
                record[f"{side}_{key}"] = figures[key]
    return record


def show_breakdown(records: list[dict[str, Any]]) -> None:
    """Each side's part of an echo round trip, medians over the rounds."""
    print("\nEcho round trip by side (--breakdown; medians, µs):")
    print(f" {'':5} | {'client':>17} | {'server':>17} | {'p50':>6} | rest of the round trip")
    print(f" {'':5} | {'turn':>8} {'send':>8} | {'turn':>8} {'send':>8} | {'':>6} |")
    for proto in PROTOCOLS:
        mine = [r for r in records if r["proto"] == proto and "server_turn_us" in r]
        if not mine:
            continue
        keys = ("client_turn_us", "client_send_us", "server_turn_us", "server_send_us")
        parts = [statistics.median(r[key] for r in mine) for key in keys]
        p50 = statistics.median(r["p50_us"] for r in mine)
        cells = " ".join(f"{value:8.1f}" for value in parts[:2])
        cells += " | " + " ".join(f"{value:8.1f}" for value in parts[2:])
        print(f" {proto:5} | {cells} | {p50:6.1f} | {p50 - sum(parts):6.1f}")
    print(
        " (turn: from the read that brought a message to the start of its answer's send,"
        " this process's work; send: the send call, on loopback including the delivery"
        " and the peer's wake-up; rest: the wake-ups and the reactors' turns"
        " outside those)"
    )


def _early(proto: str) -> tuple[str, list[str]]:
    """The peers' protocol and extra client arguments of a connect/rate variant."""
    return ("mnet", ["--early-data"]) if proto == EARLY else (proto, [])


def connect_once(proto: str, count: int) -> dict[str, Any]:
    peer_proto, extra = _early(proto)
    job = ["connect", "--count", str(count), "--share-socket", *extra]
    (result,) = with_server(peer_proto, [job], 120)
    if "rounds" not in result:
        return {"proto": proto, "ok": False, "error": result.get("error")}
    return {
        "proto": proto,
        "ok": True,
        "connect_ms": statistics.median(result["connects"]) * 1e3,
        "round_ms": statistics.median(result["rounds"]) * 1e3,
    }


def rate_once(proto: str, clients: int, seconds: float, parallel: int) -> dict[str, Any]:
    peer_proto, extra = _early(proto)
    job = ["connect", "--count", "0", "--seconds", str(seconds), "--parallel", str(parallel)]
    job += ["--share-socket", *extra]
    results = with_server(peer_proto, [job] * clients, seconds + 60)
    if any("rounds" not in r for r in results):
        errors = [r.get("error") for r in results if "rounds" not in r]
        return {"proto": proto, "ok": False, "error": errors}
    sessions = sum(len(r["rounds"]) for r in results)
    longest = max(r["seconds"] for r in results)
    return {"proto": proto, "ok": True, "sessions": sessions, "per_second": sessions / longest}


def median_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get("ok")]
    return statistics.median(values) if values else None


def round_ratios(records: list[dict[str, Any]], variant: str, key: str) -> list[float]:
    """``variant``'s ``key`` over TCP's, one ratio per round that has both."""
    figures = (
        (r["round"], r["proto"], r[key]) for r in records if r.get("ok") and r.get(key) is not None
    )
    return ratios_by_round(figures, variant, "tcp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario and protocol")
    parser.add_argument("--bulk-mib", type=int, default=64)
    parser.add_argument("--echo-count", type=int, default=2000)
    parser.add_argument("--connect-count", type=int, default=300)
    parser.add_argument("--rate-clients", type=int, default=3)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument(
        "--rate-parallel", type=int, default=64, help="sessions each rate client opens at once"
    )
    parser.add_argument(
        "--only", default="bulk,echo,connect,rate", help="comma-separated scenarios to run"
    )
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions scenario")
    parser.add_argument("--sessions-seconds", type=float, default=60.0, help="its load, s")
    parser.add_argument("--json", type=Path, help="write every raw figure here")
    parser.add_argument("--no-quic", action="store_true", help="leave out the aioquic column")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="echo: also time each side's turnaround and send call (wrapped: a call more each)",
    )
    options = parser.parse_args()
    only = set(options.only.split(","))
    quic = not options.no_quic and importlib.util.find_spec("aioquic") is not None
    protocols = (*PROTOCOLS, QUIC) if quic else PROTOCOLS

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in only}
    if "sessions" in only:
        from scale_sessions import main as scale_sessions

        load = ["--sessions", str(options.sessions), "--duration", str(options.sessions_seconds)]
        runs["sessions"].append(scale_sessions(load))

    def keep(scenario: str, record: dict[str, Any], round_: int) -> None:
        record["round"] = round_  # (for the ratios round by round)
        runs[scenario].append(record)

    for round_ in range(options.rounds):
        for proto in protocols:
            if "bulk" in only:
                for variant in (PINNED, proto) if proto == "mnet" else (proto,):
                    record = bulk_once(variant, options.bulk_mib * 1024 * 1024, 120)
                    keep("bulk", record, round_)
                    note = "" if record["ok"] else f" FAILED {record.get('error')}"
                    rate = f"{record['goodput']:8.1f} MB/s{note}"
                    print(f"  bulk    {variant:9} round {round_ + 1}: {rate}", file=sys.stderr)
            if "echo" in only:
                record = echo_once(proto, options.echo_count, options.breakdown)
                keep("echo", record, round_)
                print(f"  echo    {proto:4} round {round_ + 1}: {record}", file=sys.stderr)
            if proto == QUIC:
                continue  # connect and rate: MNET and TCP only
            for variant in (proto, EARLY) if proto == "mnet" else (proto,):
                if "connect" in only:
                    record = connect_once(variant, options.connect_count)
                    keep("connect", record, round_)
                    print(f"  connect {variant:10} round {round_ + 1}: {record}", file=sys.stderr)
                if "rate" in only:
                    record = rate_once(
                        variant, options.rate_clients, options.rate_seconds, options.rate_parallel
                    )
                    keep("rate", record, round_)
                    print(f"  rate    {variant:10} round {round_ + 1}: {record}", file=sys.stderr)

    rows = [
        ("bulk", "mnet", "goodput", "MB/s", f"bulk {options.bulk_mib} MiB one way"),
        ("bulk", PINNED, "goodput", "MB/s", "bulk, MNET pinned to 1452 B"),
        ("echo", "mnet", "p50_us", "µs", "echo 64 B p50"),
        ("echo", "mnet", "p99_us", "µs", "echo 64 B p99"),
        ("connect", "mnet", "connect_ms", "ms", "connect() fires"),
        ("connect", EARLY, "connect_ms", "ms", "connect() fires, early data"),
        ("connect", "mnet", "round_ms", "ms", "connect + echo + close"),
        ("connect", EARLY, "round_ms", "ms", "connect + echo + close, early data"),
        ("rate", "mnet", "per_second", "/s", "new sessions per second"),
        ("rate", EARLY, "per_second", "/s", "new sessions/s, early data"),
    ]
    summary: dict[str, Any] = {}
    spreads: list[str] = []
    print(f"\nMedians of {options.rounds} round(s), {platform.node()}, {os.cpu_count()} CPUs:")
    print(f"MNET: {ENGINE}")
    quic_head = f" | {'QUIC':>10}" if quic else ""
    print(f" {'scenario':40} | {'MNET':>10} | {'TCP':>10} | MNET/TCP{quic_head} | checks")
    for scenario, variant, key, unit, label in rows:
        if scenario not in only:
            continue
        with_quic = quic and scenario in QUIC_SCENARIOS and variant == "mnet"
        compared = (variant, "tcp", QUIC) if with_quic else (variant, "tcp")
        records = [r for r in runs[scenario] if r["proto"] in compared]
        mnet = median_of([r for r in records if r["proto"] == variant], key)
        tcp = median_of([r for r in records if r["proto"] == "tcp"], key)
        ok = sum(1 for r in records if r.get("ok"))
        ratio = mnet / tcp if mnet is not None and tcp else None
        by_round = round_ratios(records, variant, key)
        figures = {"mnet": mnet, "tcp": tcp, "ratio": ratio, "ratios_by_round": by_round}
        if len(by_round) > 1:
            spreads.append(f"{label} {min(by_round):.2f}x to {max(by_round):.2f}x")
        cells = [f"{v:10.2f}" if v is not None else f"{'n/a':>10}" for v in (mnet, tcp)]
        ratio_text = f"{ratio:7.3f}x" if ratio is not None else "     n/a"
        quic_cell = ""
        if quic:
            value = median_of([r for r in records if r["proto"] == QUIC], key)
            if with_quic:
                figures["quic"] = value
            shown = f"{value:10.2f}" if with_quic and value is not None else f"{'-':>10}"
            quic_cell = f" | {shown}"
        summary[f"{scenario}.{variant}.{key}"] = figures
        name = f"{label} ({unit})"
        print(
            f" {name:40} | {cells[0]} | {cells[1]} | {ratio_text}{quic_cell}"
            f" | {ok}/{len(records)} ok"
        )
    if spreads:
        print(
            "(MNET/TCP round by round, each MNET figure over the TCP one of its own round: "
            + "; ".join(spreads)
            + ")"
        )
    if options.breakdown and "echo" in only:
        show_breakdown(runs["echo"])
    if options.json:
        report = {
            "command": sys.argv,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "engine": ENGINE,
            "machine": {
                "node": platform.node(),
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
            },
            "summary": summary,
            "runs": runs,
        }
        options.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
