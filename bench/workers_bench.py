"""
Several MNET worker processes on one UDP port: aggregate bulk throughput and
handshake rate with 1 and 2 workers, and what happens when a worker dies.

    .venv/bin/python bench/workers_bench.py [--rounds 3] [--json workers.json]

The workers are ``python -m mnet_twisted.workers -n K [--restart] --
python bench/_workers_peer.py server``: each listens with
``MNETServerEndpoint(reusePort=True, cookieSecretFile=F)`` on one port (what
``mnet-echo --listen mnet:P:reusePort=yes:secretFile=F`` does).  Every
client session has its own UDP port, so the kernel's reuseport hash spreads
them; each session learns from the worker's first byte where it landed.

- **bulk**: ``--bulk-clients`` processes times ``--bulk-sessions`` sessions
  each send ``--bulk-mib`` MiB at once (started together by a signal); the
  worker answers the SHA-256 of what arrived, which must match.  Aggregate
  MB/s = all bytes / (last answer - first write).
- **rate**: ``--rate-clients`` processes times ``--rate-parallel`` loops of
  connect, one 64-byte echo (checked), close, for ``--rate-seconds``.
  Bulk, then rate, run on one group of workers per round and worker count.
- **death**: ``--death-workers`` (2) workers under ``--restart``, binding
  0.2 s apart so that their order in the kernel's reuseport group is known;
  ``--death-sessions`` sessions (over 2 client processes) echo a 64-byte
  message every 100 ms; one worker is SIGKILLed (the one that bound first,
  then the one that bound last: the group is rearranged differently for
  the two); a lost session is replaced at once.  Reported: sessions lost
  and how, ms from the kill, what the other workers' sessions lost, how
  long until the replacements echo, and what the launcher's restart of the
  worker (1 s later) does to the sessions then open.

What the kernel does (Linux, UDP, no reuseport BPF program): it picks a
socket of the group by a hash of the peer's address scaled to the number of
sockets; a socket that closes is replaced in its slot by the group's last
one, and a new socket joins at the end.  So a death changes the count (and
so where peers go) and, for any but the last, moves the last socket; the
death scenario measures what that does to MNET sessions.

Each scenario reports the CPU seconds of every worker and client process and
of the whole machine over the measurement: with 2 cores, clients and
workers compete, and other load on the machine shows.  Medians of
``--rounds``.  Needs no root; loopback only; Linux (``SO_REUSEPORT``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import queue
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _netns_runner import Peers  # noqa: E402
from _workers_death import analyse_death, death_rows  # noqa: E402

PEER = str(HERE / "_workers_peer.py")
#: How long the launcher waits before restarting a worker that died young.
RESTART_DELAY = 1.0
#: Death scenario: worker N binds (N-1) times this late, so the bind order is known.
STAGGER = 0.2


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a running process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all CPUs of the machine have spent busy since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_count(peers: Peers, name: str, kind: str, count: int, timeout: float) -> list[Any]:
    """The first ``count`` ``kind`` events of one peer (fewer if it ended or time ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in peers.seen[name] if e["event"] == kind]
        if len(found) >= count or any(e["event"] in ("error", "exit") for e in peers.seen[name]):
            return found
        try:
            who, event = peers.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            peers.notes.append(f"{name}: {len(found)} of {count} {kind!r} within {timeout:.0f} s")
            return found
        peers.seen[who].append(event)


class Group:
    """K workers under ``mnet-workers`` on a fresh port, and client processes."""

    def __init__(self, workers: int, restart: bool, directory: str, stagger: float = 0.0) -> None:
        self.port = free_udp_port()
        # Peers runs ``python SCRIPT ARGS``; with "-m" that is the launcher module.
        self.launcher = Peers("-m")
        self.clients = Peers(PEER)
        secret = str(Path(directory) / f"secret-{self.port}")
        command = ["mnet_twisted.workers", "-n", str(workers), *(["--restart"] * restart)]
        server = [sys.executable, PEER, "server", "--port", str(self.port), "--secret", secret]
        server += ["--stagger", str(stagger)]
        self.launcher.start("launcher", None, *command, "--", *server)
        self.workers = wait_count(self.launcher, "launcher", "listening", workers, 30)
        if len(self.workers) < workers:
            self.close()
            said = self.launcher.stderr_text.get("launcher", "")[-2000:]
            raise RuntimeError(f"workers did not start: {self.problems()}\n{said}")
        self.started = 0
        self.phase: dict[str, Any] = {}

    def start_clients(self, role: str, count: int, *args: str) -> list[str]:
        """Start ``count`` clients of one role; their names."""
        names = [f"{role}{self.started + index}" for index in range(count)]
        self.started += count
        for name in names:
            self.clients.start(name, None, role, "--port", str(self.port), *args)
        return names

    def ready(self, names: list[str]) -> None:
        if any(self.clients.wait_for(name, "ready", 60) is None for name in names):
            raise RuntimeError(f"clients not ready: {self.problems()}")

    def go(self, names: list[str]) -> None:
        """SIGUSR1: a bulk or rate client starts, a hold client stops."""
        for name in names:
            os.kill(self.clients.processes[name].pid, signal.SIGUSR1)

    def begin(self) -> None:
        """Start measuring CPU."""
        self.phase = {
            "at": time.monotonic(),
            "machine": machine_busy(),
            "workers": {w["pid"]: process_cpu(w["pid"]) for w in self.workers},
        }

    def results(self, names: list[str], timeout: float) -> list[dict[str, Any]]:
        found = [self.clients.wait_for(name, "result", timeout) for name in names]
        if any(r is None for r in found):
            raise RuntimeError(f"clients gave no result: {self.problems()}")
        return [r for r in found if r is not None]

    def cpu(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """CPU seconds since ``begin``: each worker (still running), clients, whole machine."""
        wall = time.monotonic() - self.phase["at"]
        workers = {}
        for pid, before in self.phase["workers"].items():
            after = process_cpu(pid)
            if before is not None and after is not None:
                workers[str(pid)] = round(after - before, 2)
        return {
            "wall_seconds": round(wall, 2),
            "cpus": os.cpu_count(),
            "workers": workers,
            "clients": [round(r["cpu_seconds"], 2) for r in results],
            "machine_busy": round(machine_busy() - self.phase["machine"], 2),
        }

    def problems(self) -> str:
        return "\n".join(p for p in (self.launcher.problems(), self.clients.problems()) if p)

    def close(self) -> None:
        process = self.launcher.processes.get("launcher")
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        self.clients.close()
        self.launcher.close()


def load_once(options: argparse.Namespace, workers: int, directory: str) -> list[dict[str, Any]]:
    """Bulk, then rate, on one group of ``workers`` (all clients start at once)."""
    only = options.only.split(",")
    group = Group(workers, False, directory)
    try:
        size = str(options.bulk_mib * 1024 * 1024)
        bulk = ["--sessions", str(options.bulk_sessions), "--bytes", size]
        rate = ["--parallel", str(options.rate_parallel), "--seconds", str(options.rate_seconds)]
        names = {
            scenario: group.start_clients(scenario, count, *args) if scenario in only else []
            for scenario, count, args in (
                ("bulk", options.bulk_clients, bulk),
                ("rate", options.rate_clients, rate),
            )
        }
        group.ready(names["bulk"] + names["rate"])
        records = []
        for scenario in ("bulk", "rate"):
            if not names[scenario]:
                continue
            group.begin()
            group.go(names[scenario])
            results = group.results(names[scenario], options.rate_seconds + 300)
            figures = (bulk_figures if scenario == "bulk" else rate_figures)(results)
            cpu = group.cpu(results)
            # What the workers themselves spent: MB, or sessions, per CPU-second of theirs.
            done = figures["bytes"] / 1e6 if scenario == "bulk" else figures["sessions"]
            spent = sum(cpu["workers"].values())
            figures["per_worker_cpu_second"] = done / spent if spent else None
            records.append({"scenario": scenario, "workers": workers, **figures, "cpu": cpu})
    finally:
        group.close()
    return records


def bulk_figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    sessions = [s for r in results for s in r["sessions"]]
    seconds = max(s["done"] for s in sessions) - min(s["started"] for s in sessions)
    total = sum(s["bytes"] for s in sessions)
    return {
        "ok": all(s["hash_ok"] for s in sessions),
        "mb_per_s": total / seconds / 1e6,
        "bytes": total,
        "seconds": seconds,
        "hashes_ok": sum(s["hash_ok"] for s in sessions),
        "sessions": len(sessions),
        "per_worker": _split(s["worker"] for s in sessions),
    }


def rate_figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(r["sessions"] for r in results)
    per_worker: dict[str, int] = {}
    failures: dict[str, int] = {}
    for result in results:
        for key, count in result["per_worker"].items():
            per_worker[key] = per_worker.get(key, 0) + count
        for key, count in result["failures"].items():
            failures[key] = failures.get(key, 0) + count
    seconds = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return {
        "ok": total > 0 and "wrong echo" not in failures,
        "per_second": total / seconds,
        "sessions": total,
        "seconds": seconds,
        "per_worker": dict(sorted(per_worker.items())),
        "failures": failures,
    }


def death_once(options: argparse.Namespace, victim_kind: str, directory: str) -> dict[str, Any]:
    count = options.death_workers
    group = Group(count, True, directory, STAGGER)
    try:
        half = options.death_sessions // 2
        names = [
            *group.start_clients("hold", 1, "--sessions", str(half)),
            *group.start_clients("hold", 1, "--sessions", str(options.death_sessions - half)),
        ]
        group.ready(names)
        group.begin()
        time.sleep(options.death_before)
        ordered = sorted(group.workers, key=lambda w: w["bound_at"])
        # Certain only if no worker began binding before the previous one had bound.
        order_certain = all(
            later["binding_at"] > earlier["bound_at"]
            for earlier, later in itertools.pairwise(ordered)
        )
        victim = ordered[0] if victim_kind == "first" else ordered[-1]
        survivors = [w for w in ordered if w is not victim]
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        back = wait_count(group.launcher, "launcher", "listening", count + 1, RESTART_DELAY + 15)
        restarted = back[count] if len(back) > count else None
        end = killed_at + options.death_after
        if restarted is not None:
            end = max(end, restarted["bound_at"] + options.death_settle)
        time.sleep(max(0.0, end - time.monotonic()))
        group.go(names)
        results = group.results(names, 30)
        cpu = group.cpu(results)
    finally:
        group.close()
    records = []
    for client, result in enumerate(results):
        for record in result["records"]:
            # Slots are numbered per client process.
            records.append({**record, "slot": f"{client}.{record['slot']}"})
    report = analyse_death(records, killed_at, victim, survivors, restarted)
    report.update(scenario="death", killed=victim_kind, workers=count, cpu=cpu, records=records)
    report["bind_order_certain"] = order_certain
    return report


def _split(workers: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in workers:
        counts[str(worker)] = counts.get(str(worker), 0) + 1
    return dict(sorted(counts.items()))


def median_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get("ok") and r.get(key) is not None]
    return statistics.median(values) if values else None


def _cpu_line(records: list[dict[str, Any]]) -> str:
    """The CPU seconds of the last record, as a reader can check the ratio against."""
    cpu = records[-1]["cpu"]
    ours = sum(cpu["workers"].values()) + sum(cpu["clients"])
    workers = " + ".join(f"{v:.2f}" for v in cpu["workers"].values())
    clients = " + ".join(f"{v:.2f}" for v in cpu["clients"])
    return (
        f"over {cpu['wall_seconds']:.2f} s: workers {workers} s, clients {clients} s, rest of"
        f" machine {max(0.0, cpu['machine_busy'] - ours):.2f} s; machine busy"
        f" {cpu['machine_busy']:.2f} of {cpu['wall_seconds'] * cpu['cpus']:.2f} CPU-s"
    )


def print_table(runs: dict[str, list[dict[str, Any]]], options: argparse.Namespace) -> dict:
    summary: dict[str, Any] = {}
    print(
        f"\nMedians of {options.rounds} round(s); {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}:"
    )
    units = (("bulk", "mb_per_s", "MB/s", "MB"), ("rate", "per_second", "/s", "sessions"))
    for scenario, key, unit, what in units:
        records = runs.get(scenario)
        if not records:
            continue
        figures: dict[str, Any] = {"per_worker_cpu_second": {}}
        for workers in options.workers:
            mine = [r for r in records if r["workers"] == workers]
            if not mine:
                continue
            value = median_of(mine, key)
            ok = sum(1 for r in mine if r["ok"])
            splits = "; ".join(
                "/".join(str(n) for n in r["per_worker"].values()) if "per_worker" in r else "-"
                for r in mine
            )
            shown = f"{value:10.1f}" if value is not None else f"{'n/a':>10}"
            print(
                f" {scenario:5} {workers} worker(s): {shown} {unit:4} | {ok}/{len(mine)} ok"
                f" | sessions per worker {splits}"
            )
            cost = median_of(mine, "per_worker_cpu_second")
            if cost is not None:
                print(f"       {cost:.0f} {what} per CPU-second of the workers' own")
            measured = [r for r in mine if "cpu" in r]
            if measured:
                print(f"       CPU (last round) {_cpu_line(measured)}")
            for record in mine:
                if record.get("error"):
                    print(f"       FAILED: {record['error']}")
            figures[str(workers)] = value
            figures["per_worker_cpu_second"][str(workers)] = cost
        if figures.get("1") and figures.get("2"):
            figures["ratio"] = figures["2"] / figures["1"]
            print(f"       2 workers / 1 worker: {figures['ratio']:.2f}x")
        summary[scenario] = figures
    for line, key, figure in death_rows(runs.get("death", [])):
        print(line)
        summary[key] = figure
    for record in runs.get("death", []):
        if record.get("error"):
            print(f" death, killed the worker bound {record['killed']}: FAILED: {record['error']}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="bulk,rate,death", help="comma-separated scenarios")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="bulk and rate: worker counts to compare",
    )
    parser.add_argument("--bulk-clients", type=int, default=4)
    parser.add_argument("--bulk-sessions", type=int, default=2, help="per bulk client")
    parser.add_argument("--bulk-mib", type=int, default=32, help="per session")
    parser.add_argument("--rate-clients", type=int, default=4)
    parser.add_argument("--rate-parallel", type=int, default=16, help="loops per rate client")
    parser.add_argument("--rate-seconds", type=float, default=4.0)
    parser.add_argument("--death-sessions", type=int, default=40)
    parser.add_argument("--death-workers", type=int, default=2, help="workers in the group")
    parser.add_argument("--death-before", type=float, default=1.0, help="s of echoes before")
    parser.add_argument("--death-after", type=float, default=3.0, help="s watched after the kill")
    parser.add_argument(
        "--death-settle", type=float, default=1.5, help="s watched after the restart"
    )
    parser.add_argument(
        "--death-kill", default="first,last", help="which worker to kill, by bind order"
    )
    parser.add_argument("--json", type=Path, help="write every raw figure here")
    options = parser.parse_args()
    only = options.only.split(",")
    started = {"load": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in only}
    with tempfile.TemporaryDirectory(prefix="mnet-workers-bench-") as directory:
        for round_ in range(options.rounds):
            jobs: list[tuple[str, Any]] = []
            if "bulk" in only or "rate" in only:
                jobs += [("load", workers) for workers in options.workers]
            if "death" in only:
                jobs += [("death", kind) for kind in options.death_kill.split(",")]
            for job, parameter in jobs:
                try:
                    if job == "load":
                        records = load_once(options, parameter, directory)
                    else:
                        records = [death_once(options, parameter, directory)]
                except RuntimeError as error:
                    scenarios = (
                        [s for s in ("bulk", "rate") if s in only] if job == "load" else [job]
                    )
                    key = "killed" if job == "death" else "workers"
                    records = [
                        {"scenario": s, "ok": False, "error": str(error), key: parameter}
                        for s in scenarios
                    ]
                for record in records:
                    runs[record["scenario"]].append(record)
                    brief = json.dumps(
                        {k: v for k, v in record.items() if k not in ("cpu", "records")}
                    )
                    print(f"  round {round_ + 1}: {brief[:400]}", file=sys.stderr)

    summary = print_table(runs, options)
    if options.json:
        report = {
            "command": sys.argv,
            "when": started["when"],
            "machine": {
                "node": platform.node(),
                "cpus": os.cpu_count(),
                "usable_cpus": len(os.sched_getaffinity(0)),
                "kernel": platform.release(),
                "load_before": started["load"],
                "load_after": os.getloadavg(),
            },
            "summary": summary,
            "runs": runs,
        }
        options.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
