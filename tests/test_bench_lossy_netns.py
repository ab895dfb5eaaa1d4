"""
Smoke test for bench/lossy_netns.py: run it for real with tiny sizes, in
network namespaces, and check what it reports.  Skips (with the reason the
bench printed) where namespaces, nft or tc are not available, e.g. not root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchrun import load_bench

BENCH = Path(__file__).resolve().parent.parent / "bench" / "lossy_netns.py"


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run the bench with ``args``; its JSON report, or skip if it skipped."""
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, output
    report: dict[str, Any] = json.loads(report_path.read_text())
    if "skipped" in report:
        said = [line for line in done.stdout.splitlines() if line.startswith("skipped:")]
        pytest.skip(said[0] if said else f"skipped: {report['skipped']}")
    return report


def test_random_loss_transfers_are_intact(tmp_path: Path) -> None:
    """At 0 % and 5 % loss every byte arrives intact, and 5 % really drops packets."""
    report = run_bench(
        tmp_path, "--no-bottleneck", "--mib", "1", "--loss", "0,5", "--rounds", "1",
        "--timeout", "60",
    )  # fmt: skip
    transfers = report["loss"]["transfers"]
    assert sorted((t["loss_pct"], t["proto"]) for t in transfers) == [
        (0, "mnet"),
        (0, "tcp"),
        (5, "mnet"),
        (5, "tcp"),
    ]
    for t in transfers:
        where = f"{t['proto']} at {t['loss_pct']} %"
        assert t["error"] is None, f"{where}: {t['error']}"
        # A timed-out transfer is reported, not failed, but what arrived must be right.
        assert t["prefix_ok"] is True, where
        if t["loss_pct"] == 0:
            assert t["complete"], where
            assert t["nft"]["dropped"] == 0, where
        else:
            assert t["nft"]["dropped"] > 0, where
        if t["complete"]:
            assert t["checksum_ok"] is True, where
            assert t["bytes_received"] == t["bytes_expected"] == 1024 * 1024, where
            assert t["goodput"] > 0, where
        else:
            assert t["timed_out"], where
        if t["proto"] == "mnet":
            # Each peer reports its CPU time and its port's counters.
            assert t["sender"]["cpu_seconds"] > 0 and t["receiver"]["cpu_seconds"] > 0, where
            assert t["receiver"]["port"]["datagramsSent"] > 0, where
    for row in report["loss"]["summary"]:
        assert row["checksums_bad"] == 0
    loss_free, lossy = report["loss"]["summary"]
    # Loss-free, our receiver acks every second full segment.
    assert 0.4 < loss_free["mnet_acks_per_data"] < 0.7, loss_free
    # It counts the segments that came ahead of a hole: none without loss,
    # some with it (a drop in the stream leaves one).
    assert loss_free["mnet_out_of_order_share"] == 0, loss_free
    assert 0 < lossy["mnet_out_of_order_share"] <= 1, lossy
    # The repair column is empty exactly where nothing was repaired.  Loss-free
    # that is the rule, but a real loopback may stall a peer past the probe
    # timeout or reorder a burst (the sender moved between CPUs): then a stray
    # repair goes, which the sender finds spurious, never a go-back pass.
    stats = [
        t["sender"]["recovery_stats"]
        for t in transfers
        if t["proto"] == "mnet" and t["loss_pct"] == 0
    ]
    repaired = any(s["repairs_answered"] for s in stats)
    assert (loss_free["mnet_repair_wait"] is None) is not repaired, (loss_free, stats)
    assert all(s["retransmissions"] <= 2 and not s["go_back_passes"] for s in stats), stats
    assert 0 < lossy["mnet_repair_wait"] < 1, lossy
    # Probe-timeout waits, as a share of each transfer's time (a busy
    # machine may stall even a clean transfer past one).
    for row in (loss_free, lossy):
        assert 0 <= row["mnet_timeout_wait_share"] < 1, row
    # Without holes nothing outstanding is held past one: the window binds first.
    assert loss_free["mnet_bound_wait_share"] == 0, loss_free
    assert 0 <= lossy["mnet_bound_wait_share"] < 1, lossy
    # CPU per MB delivered (of the busier peer) and how busy that peer was.
    for row in (loss_free, lossy):
        assert row["mnet_cpu_per_mb"] > 0, row
        assert 0 < row["mnet_busiest_peer"] < 1.5, row
    # One round: its share is its lossy transfer's goodput over its loss-free one's.
    goodput = {(t["loss_pct"], t["proto"]): t["goodput"] for t in transfers}
    assert loss_free["mnet_round_shares"] == [1.0]
    assert lossy["mnet_round_shares"] == [pytest.approx(goodput[5, "mnet"] / goodput[0, "mnet"])]


def test_a_rate_cap_shapes_both_protocols(tmp_path: Path) -> None:
    """``--rate-cap-mbit`` shapes the loopback: neither protocol gets past the cap.

    Unshaped, this loopback carries tens of MB/s or more; shaping can only
    slow a transfer, so the bound cannot fail on a slow machine.
    """
    report = run_bench(
        tmp_path, "--no-bottleneck", "--mib", "1", "--loss", "0", "--rounds", "1",
        "--timeout", "60", "--rate-cap-mbit", "40",
    )  # fmt: skip
    assert report["settings"]["rate_cap_mbit"] == 40
    transfers = report["loss"]["transfers"]
    assert sorted(t["proto"] for t in transfers) == ["mnet", "tcp"]
    for t in transfers:
        assert t["complete"] and t["checksum_ok"] is True, t["proto"]
        # 40 Mbit/s is 5 MB/s; the 64 KB bucket lets a little more through at first.
        assert 0 < t["goodput"] < 8, (t["proto"], t["goodput"])


def test_bottleneck_flows_are_counted(tmp_path: Path) -> None:
    """Each phase of the shaped-link scenario counts bytes for every flow in it."""
    report = run_bench(
        tmp_path,
        *("--bottleneck", "--seconds", "0.5", "--shared-rounds", "1", "--startup-slack", "2.5"),
    )
    assert "loss" not in report
    phases = report["bottleneck"]["phases"]
    assert [sorted(p["flows"]) for p in phases] == [["mnet"], ["tcp"], ["mnet", "tcp"]]
    for phase in phases:
        assert phase["error"] is None, phase["error"]
        flows = phase["flows"]
        # The peers had time to start (Python and Twisted take most of a
        # second each to start on a loaded 2-CPU VM; 0.8 s was not enough).
        assert all(flow["late_start"] < 0.25 for flow in flows.values()), flows
        for proto, flow in flows.items():
            assert flow["bytes_received"] > 0, proto
            # Nothing much beyond the link rate can get through a 20 Mbit/s shaper.
            assert flow["share_of_link"] < 1.2, proto


def test_round_shares_pair_each_round_with_its_own_loss_free_transfer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shares round by round compare transfers that ran one after the other."""
    bench = load_bench("lossy_netns.py", monkeypatch)

    def transfer(round_: int, level: float, proto: str, goodput: float) -> dict[str, Any]:
        return {"round": round_, "loss_pct": level, "proto": proto, "goodput": goodput}

    transfers = [
        transfer(0, 0, "mnet", 100.0), transfer(0, 0, "tcp", 50.0),
        transfer(0, 1, "mnet", 90.0), transfer(0, 1, "tcp", 10.0),
        transfer(1, 0, "mnet", 200.0), transfer(1, 0, "tcp", 40.0),
        transfer(1, 1, "mnet", 120.0), transfer(1, 1, "tcp", 20.0),
        transfer(2, 0, "mnet", 0.0),  # a round without a loss-free figure counts for nothing
        transfer(2, 1, "mnet", 50.0),
    ]  # fmt: skip
    assert bench.round_shares(transfers, "mnet", 1) == [0.9, 0.6]
    assert bench.round_shares(transfers, "tcp", 1) == [0.2, 0.5]
    assert bench.round_shares(transfers, "mnet", 0) == [1.0, 1.0]
