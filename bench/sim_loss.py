"""
Loss recovery on the deterministic simulated network, as a table.

    .venv/bin/python bench/sim_loss.py [--seeds 1,2,3,4,5] [--json out.json]

Runs every scenario of ``tests/sim_scenarios.py`` at full size (fast path at
0-10 % loss, a 50 ms / 100 Mbit/s path, reordering, clean paths) plus our
sender against a stand-in reference sender into a receiver that discards
out-of-order segments, and prints medians over the seeds, the targets the
tests assert (met or not), and the wall time each scenario took.

Times are *simulated* seconds (the simulator's clock jumps from event to
event), so the figures are the same on every machine and every run; only
the wall times vary.  The tests (``tests/test_sim_loss_recovery.py``) use
the same scenario code, so a row here and its test cannot disagree.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import _engine

_ROOT = Path(__file__).resolve().parent.parent
# The scenarios live with the simulator they drive, in tests/; the package
# is this tree's code (compiled, if a build of it is installed: _engine).
sys.path[:0] = [str(_ROOT / "tests"), _engine.ENGINE_PATH]

import sim_scenarios as sim  # noqa: E402  (needs the sys.path entries above)

#: Losses of the interop row, as in tests/test_interop_reference.py.
INTEROP_LOSSES = (0.0, 0.02, 0.05, 0.10)
#: One figure of one transfer; a table cell is its median over the seeds.
Figure = Callable[[sim.Transfer], float | None]


def _recovery(key: str, scale: float = 1.0) -> Figure:
    def figure(run: sim.Transfer) -> float | None:
        value = run.recovery.get(key)
        return None if value is None else value * scale

    return figure


#: The per-transfer columns: header, figure, format, and the recovery_stats()
#: key behind it (None: measured by the harness, never by the engine).
COLUMNS: list[tuple[str, Figure, str, str | None]] = [
    ("sim s", lambda run: run.seconds, "{:.3f}", None),
    ("Mbit/s", lambda run: run.goodput * 8 / 1e6, "{:.1f}", None),
    ("sent/need", lambda run: run.overhead, "{:.3f}", None),
    ("retx", _recovery("retransmissions"), "{:.0f}", "retransmissions"),
    ("RTOs", _recovery("timeouts"), "{:.0f}", "timeouts"),
    ("max wait ms", _recovery("longest_timeout_wait", 1000), "{:.1f}", "longest_timeout_wait"),
    ("sum wait s", lambda run: run.timeout_wait_total, "{:.3f}", None),
    ("lost", lambda run: run.link_losses, "{:.0f}", None),
    ("q drops", lambda run: run.queue_drops, "{:.0f}", None),
    ("go-back", _recovery("go_back_passes"), "{:.0f}", "go_back_passes"),
    ("undos", _recovery("spurious_undos"), "{:.0f}", "spurious_undos"),
    ("cwnd cuts", _recovery("congestion_reductions"), "{:.0f}", "congestion_reductions"),
]


def _cell(row: sim.Row, figure: Figure, fmt: str, key: str | None) -> str:
    value = row.median(figure)
    if value is None:
        return "-"
    observed = key is not None and not all(key in run.from_engine for run in row.runs)
    return fmt.format(value) + ("*" if observed else "")


def _baseline_cells(row: sim.Row) -> tuple[str, str]:
    """Median baseline time and median goodput share of the baseline (blank without one)."""
    if not row.baseline:
        return "", ""
    base = sim.median([run.seconds for run in row.baseline])
    return f"{base:.3f}", f"{sim.median(row.baseline_share()):.1%}"


def _line(row: sim.Row, wall: str) -> list[str]:
    return [
        row.scenario,
        row.case,
        sim.size_label(row.size),
        *_baseline_cells(row),
        *(_cell(row, figure, fmt, key) for _, figure, fmt, key in COLUMNS),
        wall,
    ]


def _print_cross_check(rows: Sequence[sim.Row]) -> None:
    """Where the engine's counters and the harness's own observation disagree, say so.

    They need not agree exactly (the engine knows which timer fired and what
    it calls a pass), but a large gap is worth a look on either side.
    """
    lines = []
    for row in rows:
        for key in sim.RECOVERY_KEYS:
            if key not in row.runs[0].observed or not all(key in r.from_engine for r in row.runs):
                continue
            engine = row.median(_recovery(key))
            seen = sim.median([run.observed[key] for run in row.runs])
            if engine is not None and abs(engine - seen) > 1e-9:
                lines.append([row.title, key, f"{engine:.4g}", f"{seen:.4g}"])
    if lines:
        print("\nrecovery_stats() against what the harness saw (medians, where they differ):")
        print(_table(["row", "key", "engine", "observed"], lines, left=2))


def _table(header: Sequence[str], lines: Sequence[Sequence[str]], left: int) -> str:
    """Plain text columns; the first ``left`` columns are left-aligned, the rest right."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)
    ]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def _jsonable(value: Any) -> Any:
    """JSON has no NaN, infinity or sets: map them to null and sorted lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def _row_json(row: sim.Row, wall: float) -> dict[str, Any]:
    return {
        "scenario": row.scenario,
        "case": row.case,
        "size": row.size,
        "wall_seconds": wall,
        "medians": {header: row.median(figure) for header, figure, _, _ in COLUMNS},
        "baseline_share": list(row.baseline_share()) if row.baseline else None,
        "checks": [
            {
                "name": check.name,
                "target": check.describe(),
                "median": check.median,
                "per_seed": list(check.per_seed),
                "met": check.met,
                "source": check.source,
            }
            for check in row.checks
        ],
        "runs": [asdict(run) for run in row.runs],
        "baseline": [asdict(run) for run in row.baseline],
    }


def main(seeds: Sequence[int], json_path: Path | None) -> None:
    """Run everything and print the tables (targets not met are reported, not an error)."""
    started = time.perf_counter()
    rows: list[tuple[sim.Row, float]] = []
    for thunk in sim.bench_rows(seeds):
        before = time.perf_counter()
        row = thunk()
        rows.append((row, time.perf_counter() - before))
        print(f"  ran {row.title} in {rows[-1][1]:.1f} s wall", file=sys.stderr, flush=True)
    interop: list[tuple[sim.InteropRow, float]] = []
    for loss in INTEROP_LOSSES:
        before = time.perf_counter()
        interop.append((sim.interop(loss, seeds=seeds), time.perf_counter() - before))
    total_wall = time.perf_counter() - started

    seed_list = ",".join(map(str, seeds))
    print(f"Loss recovery on the simulated network: medians over seeds {seed_list}")
    print("(times are simulated seconds; % base = goodput share of the baseline, same seed)\n")
    header = ["scenario", "case", "size", "base s", "% base", *(c[0] for c in COLUMNS), "wall s"]
    lines: list[list[str]] = []
    shown: list[tuple[sim.Transfer, ...]] = []
    for row, wall in rows:
        baseline = row.baseline_row()
        if baseline is not None and baseline.runs not in (*shown, row.runs):
            # A baseline gets a line of its own the first time, unless it is a row itself.
            lines.append(_line(baseline, ""))
            shown.append(baseline.runs)
        lines.append(_line(row, f"{wall:.1f}"))
        shown.append(row.runs)
    print(_table(header, lines, left=3))
    print(
        "\nbase s, % base: the row's baseline on the same seeds (the loss-0% row, or the"
        " '(baseline)' line above; its wall time counts in the first row that needed it)."
        "\n* not from Session.recovery_stats(): retx is Session.retransmissions, the others"
        " are observed from outside the engine; - not known."
        "\nsum wait: always observed, the time the sender was stuck before its timer fired."
        "\nlost: random link losses; q drops: drop-tail at the bottleneck queue (both ways)."
    )

    _print_cross_check([row for row, _ in rows])

    print("\nTargets (asserted by tests/test_sim_loss_recovery.py):")
    failed = 0
    for row, _ in rows:
        for check in row.checks:
            failed += not check.met
            print(f"  {'PASS' if check.met else 'FAIL'}  {check.message(row.title)}")

    print(
        "\nInto a receiver that discards out-of-order segments (tests/test_interop_reference.py):"
    )
    interop_lines = [
        [
            f"{row.loss:.0%}",
            sim.size_label(row.size),
            f"{sim.median(row.ours):.3f}",
            f"{max(row.ours):.3f}",
            f"{sim.median(row.reference):.3f}",
            f"{row.ratio_of_sums:.3f}",
            "<= 1.1" if row.loss == 0 else "<= 0.8",
            f"{wall:.1f}",
        ]
        for row, wall in interop
    ]
    print(
        _table(
            [
                "loss",
                "size",
                "ours s",
                "ours max s",
                "reference s",
                "ours/ref (sums)",
                "test bound",
                "wall s",
            ],
            interop_lines,
            left=2,
        )
    )
    print(f"\nwall time: {total_wall:.1f} s; targets not met: {failed}")

    if json_path is not None:
        document = {
            "seeds": list(seeds),
            "wall_seconds": total_wall,
            "rows": [_row_json(row, wall) for row, wall in rows],
            "interop": [
                {**asdict(row), "ratio_of_sums": row.ratio_of_sums, "wall_seconds": wall}
                for row, wall in interop
            ],
        }
        json_path.write_text(json.dumps(_jsonable(document), indent=2) + "\n")
        print(f"wrote {json_path}")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from exc
    if not seeds:
        raise argparse.ArgumentTypeError("need at least one seed")
    return seeds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=list(sim.SEEDS),
        help="comma-separated simulation seeds (default 1,2,3,4,5)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure and run to this file")
    arguments = parser.parse_args()
    main(arguments.seeds, arguments.json)
