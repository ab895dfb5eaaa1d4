"""
MNET against Linux TCP over a real (namespaced) network: random loss and a
shaped bottleneck.  Needs root (network namespaces, nft, tc); anywhere else it
prints ``skipped: <reason>`` and exits 0.

    sudo .venv/bin/python bench/lossy_netns.py --json lossy.json

Every transfer runs between two separate processes (``bench/_netns_peer.py``,
started with ``ip netns exec NS <this python>``), both built on the public
endpoints: ``MNETServerEndpoint`` / ``MNETClientEndpoint`` and Twisted's TCP
endpoints.  The namespaces are named ``mnetbench-<pid>-*`` and are always
deleted on the way out, on Ctrl-C too.

Scenario A, random loss (``--loss 0,1,5,10``, ``--mib 8``, ``--rounds 5``):
one namespace, both peers on its loopback (MTU 1500, GSO off so that TCP too
puts one <=1500-byte segment in each packet).  An nft rule on the *input*
hook drops that share of packets, chosen at random (``numgen random``), in
both directions (data and acknowledgements alike): of UDP packets while MNET
runs, of TCP segments while TCP runs, so the TCP column is "Linux TCP (with
SACK, default congestion control) under the same random loss".  Each level
runs MNET then TCP, and the levels take turns, ``--rounds`` times (each
round runs every level), and the table reports medians.  Goodput is the
bytes received over the time from the sender's first write to the
receiver's last byte (both ``time.monotonic()``, one clock for every process
on a host); connection setup is not counted.  The sender hashes what it
wrote and the receiver what arrived (SHA-256) and the bench compares them; a
transfer still running after ``--timeout`` seconds is stopped and reports
the bytes that did arrive (whose prefix checksum is still checked).  "share"
is a level's median goodput over the same protocol's median at 0 % loss;
below the table, MNET's share round by round (each lossy transfer over the
loss-free one of its own round, ``mnet_round_shares`` in the JSON) shows
how far a machine whose speed swings moves it.
Mind the path: its round trip is tens of microseconds, so under loss TCP's
figures are dominated by its 200 ms minimum retransmission timeout
(``TcpExt.TCPTimeouts`` in the JSON says how often it fired).

Scenario B, bottleneck (``--seconds 10``, ``--rate-mbit 20``): three
namespaces, sender -- router -- receiver (10.77.0.1 -> 10.77.1.2, veth pairs
with MTU 1500), the router forwarding and shaping its egress towards the
receiver with ``tc qdisc ... tbf rate 20mbit burst 32kbit latency 20ms`` (a
~50 kB drop-tail queue), as a bottleneck router would; the reverse path
(acknowledgements) is not shaped.  Shaping at a router rather than at the
sender's own interface keeps local-queue effects (TCP small queues, sendto
ENOBUFS) out of the comparison.  For ``--seconds`` each: MNET alone, TCP
alone, then MNET and TCP at once, ``--shared-rounds`` times (3; the table
gives the median shares); the receivers count the bytes that arrive in the
window and "share" is goodput over the link rate (20 Mbit/s = 2.5 MB/s;
headers cap it near 96 %).

By default both scenarios run (B adds about 5 x (``--seconds`` + 2.5) s;
A takes from seconds to, at 10 % loss, minutes per transfer);
``--no-bottleneck`` runs A only, ``--bottleneck`` runs B only.  ``--json
PATH`` writes every raw figure: per transfer the sender's and receiver's
reports (with the MNET sender's ``session.recovery_stats()`` where the
session has it), nft drop counters, and the namespace's /proc/net/snmp and
netstat deltas (``Udp.RcvbufErrors`` counts datagrams the kernel dropped
because a socket buffer was full: loss nobody asked for).  The exit status
is 1 if a completed transfer's checksum did not match or a peer failed.

Below the random-loss table the bench prints MNET's CPU per MB delivered
(of the busier peer) and how busy that peer was: where a loss-free transfer
keeps a peer near 100 % busy, the CPU and not the path sets its pace, and a
lossy level's share cannot exceed the loss-free CPU per MB over its own.
``--rate-cap-mbit R`` shapes the namespace's loopback to R Mbit/s (``tc
tbf``, 64 KB bucket, 5 ms queue; data, acks and TCP alike), so that the
path sets the loss-free pace instead, as on a real network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from _engine import ENGINE
from _netns_peer import stream_sha256
from _netns_runner import Peers, Skip, counters, delta, namespaces, run, run_fixed_transfer
from _rounds import ratios_by_round

PEER = str(Path(__file__).with_name("_netns_peer.py"))
PREFIX = f"mnetbench-{os.getpid()}"
TABLE = "inet mnetbench"
#: Seconds the bottleneck peers get to start and connect before the window opens.
STARTUP_SLACK = 2.0


# -- scenario A: random loss -------------------------------------------------


def set_loss(ns: str, proto: str, per_10k: int) -> None:
    """Drop ``per_10k``/10000 of ``proto`` packets at input; count the rest."""
    run("ip", "netns", "exec", ns, "nft", "flush", "chain", TABLE, "input")
    rule = ["ip", "netns", "exec", ns, "nft", "add", "rule", TABLE, "input"]
    rule += ["meta", "l4proto", proto]
    if per_10k:
        run(*rule, "numgen", "random", "mod", "10000", "<", str(per_10k), "counter", "drop")
    run(*rule, "counter")


def nft_counts(ns: str) -> dict[str, int]:
    listing = json.loads(
        run("ip", "netns", "exec", ns, "nft", "-j", "list", "chain", *TABLE.split(), "input")
    )
    counts = {"dropped": 0, "passed": 0}
    for item in listing["nftables"]:
        expr = item.get("rule", {}).get("expr", [])
        counter = next((e["counter"] for e in expr if "counter" in e), None)
        if counter is not None:
            counts["dropped" if any("drop" in e for e in expr) else "passed"] += counter["packets"]
    return counts


def fixed_transfer(ns: str, proto: str, total: int, timeout: float) -> dict[str, Any]:
    """One transfer of ``total`` bytes over the namespace's loopback."""
    before = counters(ns)
    peers = run_fixed_transfer(PEER, ns, proto, total, timeout)
    got, sent = peers.result("receiver"), peers.result("sender")
    record: dict[str, Any] = {"proto": proto, "bytes_expected": total}
    record.update(receiver=got, sender=sent, error=peers.problems() or None)
    record.update(nft=nft_counts(ns), counters=delta(before, counters(ns)))
    if got is None:
        record.update(bytes_received=0, goodput=0.0, complete=False, timed_out=False)
        record.update(checksum_ok=None, prefix_ok=None)
        return record
    start = (sent or {}).get("first_write") or got["connected"] or got["ended"]
    end = got["last_byte"] if got["complete"] else got["ended"]
    record.update(bytes_received=got["bytes"], complete=got["complete"])
    record.update(timed_out=got["timed_out"], seconds=end - start)
    record["goodput"] = got["bytes"] / (end - start) / 1e6 if end > start else 0.0
    record["prefix_ok"] = got["sha256"] == stream_sha256(got["bytes"])
    record["checksum_ok"] = (
        sent is not None and got["sha256"] == sent["sha256"] and got["bytes"] == total
        if got["complete"]
        else None
    )
    return record


def loss_scenario(options: argparse.Namespace) -> dict[str, Any]:
    ns = f"{PREFIX}-loss"
    setup = [
        ("ip", "netns", "add", ns),
        ("ip", "-n", ns, "link", "set", "lo", "mtu", "1500", "up"),
        ("ip", "-n", ns, "link", "set", "lo", "gso_max_segs", "1", "gso_max_size", "1500"),
        ("ip", "netns", "exec", ns, "nft", "add", "table", *TABLE.split()),
        ("ip", "netns", "exec", ns, "nft", "add", "chain", *TABLE.split(), "input",
         "{ type filter hook input priority 0; }"),
    ]  # fmt: skip
    if options.rate_cap_mbit:
        # Both directions cross the one loopback, so data and acks (and
        # TCP's too) share the cap; a 64 KB bucket lets a GSO-free burst of
        # about 44 datagrams through at once.
        setup.append(
            ("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "tbf",
             "rate", f"{options.rate_cap_mbit:g}mbit", "burst", "64kb", "latency", "5ms")
        )  # fmt: skip
    transfers = []
    with namespaces([ns], setup):
        # Round by round, every level in each: a slow spell of a shared
        # machine then falls on all levels alike, not on the one that ran
        # during it, so the shares compare like with like.
        for round_ in range(options.rounds):
            for level in options.loss:
                for proto in ("mnet", "tcp"):
                    set_loss(ns, "udp" if proto == "mnet" else "tcp", round(level * 100))
                    record = fixed_transfer(ns, proto, options.mib * 1024 * 1024, options.timeout)
                    record.update(loss_pct=level, round=round_)
                    transfers.append(record)
                    note = " TIMEOUT" if record["timed_out"] else ""
                    note += " ERROR" if record["error"] else ""
                    print(
                        f"  loss {level:g}% round {round_ + 1} {proto:4}: "
                        f"{record['goodput']:7.3f} MB/s{note}",
                        file=sys.stderr,
                        flush=True,
                    )
    return {"transfers": transfers, "summary": summarize(options.loss, transfers)}


def summarize(levels: list[float], transfers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for level in levels:
        row: dict[str, Any] = {"loss_pct": level}
        runs = [t for t in transfers if t["loss_pct"] == level]
        for proto in ("mnet", "tcp"):
            mine = [t for t in runs if t["proto"] == proto]
            row[f"{proto}_goodput"] = statistics.median(t["goodput"] for t in mine)
            row[f"{proto}_timeouts"] = sum(t["timed_out"] for t in mine)
            base = next((r[f"{proto}_goodput"] for r in rows if r["loss_pct"] == 0), None)
            if level == 0:
                base = row[f"{proto}_goodput"]
            row[f"{proto}_share"] = row[f"{proto}_goodput"] / base if base else None
            row[f"{proto}_round_shares"] = round_shares(transfers, proto, level)
        row["checksums_ok"] = sum(t["checksum_ok"] is True for t in runs)
        row["checksums_bad"] = sum(
            t["checksum_ok"] is False or t["prefix_ok"] is False for t in runs
        )
        row["transfers"] = len(runs)
        row["mnet_retransmissions"] = median_or_none(
            ((t["sender"] or {}).get("recovery_stats") or {}).get("retransmissions")
            for t in runs
            if t["proto"] == "mnet"
        )
        row["tcp_retransmissions"] = median_or_none(
            t["counters"]["Tcp.RetransSegs"] for t in runs if t["proto"] == "tcp"
        )
        for proto in ("mnet", "tcp"):
            dropped = sum(t["nft"]["dropped"] for t in runs if t["proto"] == proto)
            seen = dropped + sum(t["nft"]["passed"] for t in runs if t["proto"] == proto)
            row[f"{proto}_measured_drop_rate"] = dropped / seen if seen else None
        mnet_runs = [t for t in runs if t["proto"] == "mnet"]
        for role in ("sender", "receiver"):
            row[f"mnet_{role}_cpu"] = median_or_none(
                (t[role] or {}).get("cpu_seconds") for t in mnet_runs
            )
        row["mnet_cpu_per_mb"] = median_or_none(cpu_per_mb(t) for t in mnet_runs)
        row["mnet_busiest_peer"] = median_or_none(busiest_peer(t) for t in mnet_runs)
        row["mnet_acks_per_data"] = median_or_none(
            ack_ratio(t["receiver"], t["sender"]) for t in mnet_runs
        )
        row["mnet_out_of_order_share"] = median_or_none(
            out_of_order_share(t["receiver"], t["sender"]) for t in mnet_runs
        )
        row["mnet_repair_wait"] = median_or_none(repair_wait(t["sender"]) for t in mnet_runs)
        row["mnet_timeout_wait_share"] = median_or_none(
            wait_share(t, "timeout_wait_total") for t in mnet_runs
        )
        row["mnet_bound_wait_share"] = median_or_none(
            wait_share(t, "outstanding_bound_wait") for t in mnet_runs
        )
        row["udp_rcvbuf_errors"] = sum(
            t["counters"].get("Udp.RcvbufErrors", 0) for t in runs if t["proto"] == "mnet"
        )
        rows.append(row)
    return rows


def round_shares(transfers: list[dict[str, Any]], proto: str, level: float) -> list[float]:
    """Each round's goodput at ``level`` over the same round's loss-free goodput."""
    figures = ((t["round"], t["loss_pct"], t["goodput"]) for t in transfers if t["proto"] == proto)
    return ratios_by_round(figures, level, 0)


def ack_ratio(receiver: dict[str, Any] | None, sender: dict[str, Any] | None) -> float | None:
    """Datagrams the MNET receiver sent (its acks) per DATA datagram the sender sent."""
    sent = ((receiver or {}).get("port") or {}).get("datagramsSent")
    data = ((sender or {}).get("recovery_stats") or {}).get("data_datagrams_sent")
    return sent / data if sent is not None and data else None


def out_of_order_share(
    receiver: dict[str, Any] | None, sender: dict[str, Any] | None
) -> float | None:
    """DATA datagrams that reached the receiver ahead of a hole, per DATA datagram sent.

    Each of those costs the receiver an ack of its own and a place in its
    reassembly buffer: the share says how long holes stayed open.
    """
    early = ((receiver or {}).get("session") or {}).get("out_of_order_segments")
    data = ((sender or {}).get("recovery_stats") or {}).get("data_datagrams_sent")
    return early / data if early is not None and data else None


def busier_peer_cpu(transfer: dict[str, Any]) -> float | None:
    """Process CPU seconds of the busier MNET peer, if both reported theirs."""
    cpu = [(transfer[role] or {}).get("cpu_seconds") for role in ("sender", "receiver")]
    return None if None in cpu else max(cpu)


def cpu_per_mb(transfer: dict[str, Any]) -> float | None:
    """The busier peer's CPU seconds per MB (10**6 bytes) that arrived."""
    cpu = busier_peer_cpu(transfer)
    if cpu is None or not transfer["bytes_received"]:
        return None
    return cpu / (transfer["bytes_received"] / 1e6)


def busiest_peer(transfer: dict[str, Any]) -> float | None:
    """The busier peer's CPU time over the transfer's time: near 1, the CPU set the pace."""
    cpu, seconds = busier_peer_cpu(transfer), transfer.get("seconds")
    return None if cpu is None or not seconds else cpu / seconds


def repair_wait(sender: dict[str, Any] | None) -> float | None:
    """The MNET sender's mean wait from a repair's sending to its ack, seconds."""
    stats = (sender or {}).get("recovery_stats") or {}
    answered = stats.get("repairs_answered")
    return stats["repair_wait_total"] / answered if answered else None


def wait_share(transfer: dict[str, Any], total_key: str) -> float | None:
    """The share of an MNET transfer's time its sender spent in a wait its recovery_stats sum."""
    stats = (transfer["sender"] or {}).get("recovery_stats") or {}
    total, took = stats.get(total_key), transfer.get("seconds")
    return total / took if total is not None and took else None


def cpu_steal() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs so far: time the hypervisor gave to others."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(value) for value in fields[:8]]
    return (values[7], sum(values)) if len(values) == 8 else None


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor took between two ``cpu_steal`` readings."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def median_or_none(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def print_loss_table(
    options: argparse.Namespace, rows: list[dict[str, Any]], steal: float | None
) -> None:
    def share(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.1%}"

    def count(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def milliseconds(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.2f}"

    cap = f", loopback shaped to {options.rate_cap_mbit:g} Mbit/s" if options.rate_cap_mbit else ""
    print(f"\nRandom loss, {options.mib} MiB one way{cap}, median of {options.rounds} round(s):")
    print(f"MNET: {ENGINE}")
    print(
        " loss | MNET MB/s   share | TCP MB/s   share | checksums  | timeouts M/T"
        " | retransmits M/T | UDP rcvbuf | MNET CPU s tx/rx | acks/data | early | repair ms"
        " | PTO wait | bound wait"
    )
    for r in rows:
        bad = f", {r['checksums_bad']} BAD" if r["checksums_bad"] else ""
        checks = f"{r['checksums_ok']}/{r['transfers']} ok{bad}"
        print(
            f"{r['loss_pct']:4g}% | {r['mnet_goodput']:9.3f} {share(r['mnet_share'])} |"
            f" {r['tcp_goodput']:8.3f} {share(r['tcp_share'])} | {checks:10} |"
            f" {r['mnet_timeouts']:>6}/{r['tcp_timeouts']:<5} |"
            f" {count(r['mnet_retransmissions']):>7}/{count(r['tcp_retransmissions']):<7} |"
            f" {r['udp_rcvbuf_errors']:>10} |"
            f" {seconds(r['mnet_sender_cpu']):>7}/{seconds(r['mnet_receiver_cpu']):<8} |"
            f" {ratio(r['mnet_acks_per_data']):9} | {ratio(r['mnet_out_of_order_share']):5} |"
            f" {milliseconds(r['mnet_repair_wait']):>9} | {share(r['mnet_timeout_wait_share'])}  |"
            f" {share(r['mnet_bound_wait_share'])}"
        )
    print(
        "(share: of the same protocol's goodput at 0 % loss; retransmits: medians of the MNET"
        " sender's recovery_stats and of the kernel's Tcp.RetransSegs; UDP rcvbuf: datagrams"
        " the kernel dropped for a full socket buffer in the MNET runs, on top of nft's;"
        " MNET CPU: process CPU seconds of the sending and receiving peer per transfer;"
        " acks/data: datagrams the MNET receiver sent per DATA datagram; early: DATA"
        " datagrams that reached the MNET receiver ahead of a hole, per DATA datagram;"
        " repair ms: the MNET sender's mean wait from a repair to its ack, which"
        " bounds how fast it gets past one hole after another; PTO wait: the share of"
        " the MNET transfer's time its sender waited for probe timeouts to fire; bound"
        " wait: the share it had new data and window room but max_congestion_window bytes"
        " outstanding, the data past the first hole among them, so that holes repaired one"
        " per repair wait held the stream back)",
        flush=True,
    )
    spreads = [
        f"{r['loss_pct']:g} % {min(shares):.0%} to {max(shares):.0%}"
        for r in rows
        if r["loss_pct"] and (shares := r["mnet_round_shares"])
    ]
    if spreads:
        print(
            "(MNET's share round by round, each lossy transfer over the same round's"
            f" loss-free one: {'; '.join(spreads)})",
            flush=True,
        )
    base = next((r["mnet_cpu_per_mb"] for r in rows if r["loss_pct"] == 0), None)
    costs = [
        f"{r['loss_pct']:g} % {r['mnet_cpu_per_mb'] * 1e3:.1f} ms"
        + (f" ({r['mnet_cpu_per_mb'] / base:.2f}x)" if base and r["loss_pct"] else "")
        + (f", busiest {r['mnet_busiest_peer']:.0%}" if r["mnet_busiest_peer"] else "")
        for r in rows
        if r["mnet_cpu_per_mb"]
    ]
    if costs:
        print(
            "(MNET CPU per MB delivered, of the busier peer, and that peer's CPU over the"
            f" transfer time: {'; '.join(costs)}.  Where the loss-free transfer keeps a peer"
            " near 100 % busy the CPU sets its pace, and a lossy level's share cannot pass"
            " the loss-free CPU per MB over its own: one process uses at most one CPU)",
            flush=True,
        )
    if steal is not None:
        print(
            f"(the hypervisor took {steal:.0%} of this VM's CPU time while it ran:"
            " goodput varies with it, CPU seconds less so)",
            flush=True,
        )


# -- scenario B: bottleneck --------------------------------------------------


def qdisc_stats(ns: str) -> dict[str, int]:
    listing = json.loads(run("tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", "veth2"))
    root = next(q for q in listing if q.get("root"))
    return {key: root.get(key, 0) for key in ("packets", "bytes", "drops", "overlimits")}


def bottleneck_scenario(options: argparse.Namespace) -> dict[str, Any]:
    snd, rtr, rcv = f"{PREFIX}-snd", f"{PREFIX}-rtr", f"{PREFIX}-rcv"
    setup = [
        ("ip", "netns", "add", snd),
        ("ip", "netns", "add", rtr),
        ("ip", "netns", "add", rcv),
        ("ip", "-n", snd, "link", "add", "veth0", "mtu", "1500", "type", "veth",
         "peer", "name", "veth1", "mtu", "1500", "netns", rtr),
        ("ip", "-n", rtr, "link", "add", "veth2", "mtu", "1500", "type", "veth",
         "peer", "name", "veth3", "mtu", "1500", "netns", rcv),
        ("ip", "-n", snd, "addr", "add", "10.77.0.1/24", "dev", "veth0"),
        ("ip", "-n", rtr, "addr", "add", "10.77.0.254/24", "dev", "veth1"),
        ("ip", "-n", rtr, "addr", "add", "10.77.1.254/24", "dev", "veth2"),
        ("ip", "-n", rcv, "addr", "add", f"{RECEIVER}/24", "dev", "veth3"),
        *(("ip", "-n", ns, "link", "set", dev, "up")
          for ns, dev in ((snd, "veth0"), (rtr, "veth1"), (rtr, "veth2"), (rcv, "veth3"),
                          (snd, "lo"), (rtr, "lo"), (rcv, "lo"))),
        ("ip", "-n", snd, "route", "add", "default", "via", "10.77.0.254"),
        ("ip", "-n", rcv, "route", "add", "default", "via", "10.77.1.254"),
        ("ip", "netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1"),
        ("tc", "-n", rtr, "qdisc", "add", "dev", "veth2", "root", "tbf",
         "rate", f"{options.rate_mbit}mbit", "burst", "32kbit", "latency", "20ms"),
    ]  # fmt: skip
    with namespaces([snd, rtr, rcv], setup):
        phases = [
            bottleneck_phase(options, snd, rtr, rcv, flows)
            for flows in BOTTLENECK_PHASES
            for _ in range(options.shared_rounds if len(flows) > 1 else 1)
        ]
    shared = [phase for phase in phases if len(phase["flows"]) > 1]
    median_share = {
        proto: median_or_none(phase["flows"][proto]["share_of_link"] for phase in shared)
        for proto in BOTTLENECK_PHASES[-1]
    }
    return {
        "link_mbps": options.rate_mbit / 8,
        "seconds": options.seconds,
        "phases": phases,
        "shared_median_share": median_share,
    }


#: The flows of each bottleneck phase: each protocol alone, then both at once.
BOTTLENECK_PHASES = (("mnet",), ("tcp",), ("mnet", "tcp"))
#: The receiver's address, two hops (through the shaping router) from the sender.
RECEIVER = "10.77.1.2"


def bottleneck_phase(
    options: argparse.Namespace, snd: str, rtr: str, rcv: str, flows: tuple[str, ...]
) -> dict[str, Any]:
    """Every flow in ``flows`` at once, from ``snd`` through ``rtr`` to ``rcv``."""
    before = {ns: counters(ns) for ns in (snd, rcv)}
    qdisc_before = qdisc_stats(rtr)
    # Leave the peers time to start and connect; all senders start writing at start_at.
    start_at = time.monotonic() + options.startup_slack
    until = start_at + options.seconds
    window = ["--start-at", str(start_at), "--until", str(until)]
    peers = Peers(PEER)
    try:
        for proto in flows:
            address = ["--proto", proto, "--host", RECEIVER]
            peers.start(f"{proto}-receiver", rcv, "receive", *address, "--port", "0", *window)
        for proto in flows:
            event = peers.wait_for(f"{proto}-receiver", "listening", 20)
            if event is not None:
                address = ["--proto", proto, "--host", RECEIVER, "--port", str(event["port"])]
                peers.start(f"{proto}-sender", snd, "send", *address, *window)
        for proto in flows:
            peers.wait_for(f"{proto}-receiver", "result", until - time.monotonic() + 30)
            peers.wait_for(f"{proto}-sender", "result", 15)
    finally:
        peers.close()
    phase: dict[str, Any] = {"flows": {}, "error": peers.problems() or None}
    for proto in flows:
        got, sent = peers.result(f"{proto}-receiver"), peers.result(f"{proto}-sender")
        goodput = (got["bytes"] if got else 0) / options.seconds / 1e6
        first_write = (sent or {}).get("first_write") or until
        phase["flows"][proto] = {
            "bytes_received": got["bytes"] if got else 0,
            "goodput": goodput,
            "share_of_link": goodput / (options.rate_mbit / 8),
            "late_start": first_write - start_at,
            "receiver": got,
            "sender": sent,
        }
    phase["qdisc"] = delta(qdisc_before, qdisc_stats(rtr))
    phase["counters"] = {ns: delta(before[ns], counters(ns)) for ns in (snd, rcv)}
    print(f"  bottleneck {' + '.join(flows)}: done", file=sys.stderr, flush=True)
    return phase


def print_bottleneck_table(options: argparse.Namespace, result: dict[str, Any]) -> None:
    print(
        f"\nBottleneck: tbf {options.rate_mbit} Mbit/s ({result['link_mbps']:.2f} MB/s) at a"
        f" router, {options.seconds:g} s per phase:"
    )
    print(" phase        | flow |   MB/s   share | drops at the bottleneck (all flows)")
    for phase in result["phases"]:
        name = " + ".join(phase["flows"]).upper()
        for proto, flow in phase["flows"].items():
            late = flow["late_start"]
            note = f"  (started {late:.2f} s late)" if late > 0.05 else ""
            print(
                f" {name:12} | {proto:4} | {flow['goodput']:6.3f} {flow['share_of_link']:7.1%}"
                f" | {phase['qdisc']['drops']:>10}{note}"
            )
    shares = ", ".join(
        f"{proto.upper()} {share:.1%}" if share is not None else f"{proto.upper()} -"
        for proto, share in result["shared_median_share"].items()
    )
    print(f" together, median of {options.shared_rounds}: {shares}")
    print("(share: of the link rate; drops: packets the tbf queue refused)", flush=True)


# -- main --------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", default="0,1,5,10", help="loss levels in %% (comma-separated)")
    parser.add_argument("--mib", type=int, default=8, help="MiB per random-loss transfer")
    parser.add_argument("--rounds", type=int, default=5, help="MNET/TCP rounds per loss level")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per transfer")
    parser.add_argument("--seconds", type=float, default=10.0, help="bottleneck phase length")
    parser.add_argument("--rate-mbit", type=float, default=20.0, help="bottleneck rate")
    parser.add_argument(
        "--rate-cap-mbit",
        type=float,
        default=None,
        help="scenario A: shape the loopback to this rate (tc tbf), so that the path,"
        " not the CPU, sets the loss-free pace",
    )
    parser.add_argument(
        "--startup-slack",
        type=float,
        default=STARTUP_SLACK,
        help="seconds the peers of a bottleneck phase get to start and connect",
    )
    parser.add_argument(
        "--shared-rounds", type=int, default=3, help="rounds of the MNET + TCP bottleneck phase"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bottleneck", action="store_true", help="run scenario B only")
    which.add_argument("--no-bottleneck", action="store_true", help="run scenario A only")
    parser.add_argument("--json", type=Path, help="write all raw figures here")
    options = parser.parse_args()
    options.loss = [float(x) for x in options.loss.split(",") if x.strip()]
    return options


def environment() -> dict[str, Any]:
    def sysctl(path: str) -> str | None:
        try:
            return Path("/proc/sys", path).read_text().strip()
        except OSError:
            return None

    keys = ["net/core/rmem_default", "net/core/rmem_max", "net/ipv4/tcp_sack",
            "net/ipv4/tcp_congestion_control"]  # fmt: skip
    return {
        "kernel": platform.release(),
        "python": sys.executable,
        "engine": ENGINE,
        "sysctl": {key: sysctl(key) for key in keys},
    }


def preflight() -> None:
    if os.geteuid() != 0:
        raise Skip("needs root for network namespaces")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} is not installed")


def main() -> int:
    options = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report: dict[str, Any] = {"command": sys.argv, "settings": vars(options).copy()}
    report["settings"]["json"] = str(options.json)
    report["environment"] = environment()
    status = 0
    try:
        preflight()
        if not options.bottleneck:
            started, steal_before = time.monotonic(), cpu_steal()
            report["loss"] = loss_scenario(options)
            report["loss"]["wall_seconds"] = time.monotonic() - started
            steal = steal_share(steal_before, cpu_steal())
            report["loss"]["cpu_steal_share"] = steal
            print_loss_table(options, report["loss"]["summary"], steal)
            transfers = report["loss"]["transfers"]
            if any(t["checksum_ok"] is False or t["prefix_ok"] is False for t in transfers):
                status = 1
            if any(t["error"] for t in transfers):
                status = 1
        if not options.no_bottleneck:
            started = time.monotonic()
            try:
                report["bottleneck"] = bottleneck_scenario(options)
                report["bottleneck"]["wall_seconds"] = time.monotonic() - started
                print_bottleneck_table(options, report["bottleneck"])
                if any(phase["error"] for phase in report["bottleneck"]["phases"]):
                    status = 1
            except Skip as why:
                if options.bottleneck:
                    raise
                report["bottleneck"] = {"skipped": str(why)}
                print(f"bottleneck skipped: {why}")
    except Skip as why:
        print(f"skipped: {why}")
        report = {"skipped": str(why)}
    if options.json:
        options.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted (the namespaces and peer processes are gone)")
