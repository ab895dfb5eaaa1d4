"""
What ``bench/workers_bench.py``'s death scenario saw, from the hold clients'
session records: one record per session a slot opened, with the worker that
answered, when its first echo came back, when it was lost and why (see
``hold`` in ``bench/_workers_peer.py``).
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

#: What Twisted puts before the MNET reason in every ConnectionLost.
_BOILERPLATE = "Connection to the other side was lost in a non-clean fashion: "


def _alive(record: dict[str, Any], at: float) -> bool:
    first = record["first_echo"]
    return first is not None and first <= at and (record["lost"] is None or record["lost"] > at)


def _ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _replacement(records: list[dict[str, Any]], lost: dict[str, Any]) -> dict[str, Any] | None:
    """The session of the same slot that first echoed after ``lost`` ended."""
    later = [
        r
        for r in records
        if r["slot"] == lost["slot"]
        and r["incarnation"] > lost["incarnation"]
        and r["first_echo"] is not None
    ]
    return min(later, key=lambda r: r["incarnation"]) if later else None


def _losses(
    records: list[dict[str, Any]],
    group: list[dict[str, Any]],
    since: float,
    until: float | None = None,
) -> dict[str, Any]:
    """How the sessions of ``group`` lost before ``until`` went, and how their slots recovered."""
    end = float("inf") if until is None else until
    lost = [r for r in group if r["lost"] is not None and r["lost"] < end]
    comebacks = [(r, _replacement(records, r)) for r in lost]
    slots = {r["slot"] for r in lost}
    return {
        "sessions": len(group),
        "lost": len(lost),
        "reasons": dict(Counter(str(r["reason"]).replace(_BOILERPLATE, "") for r in lost)),
        "ms_to_loss": _ms([(r["lost"] - since) * 1e3 for r in lost]),
        "replaced": sum(1 for _, new in comebacks if new is not None),
        "ms_loss_to_replacement_echo": _ms(
            [(new["first_echo"] - old["lost"]) * 1e3 for old, new in comebacks if new]
        ),
        "replacement_workers": dict(Counter(str(new["worker"]) for _, new in comebacks if new)),
        "failed_connects": sum(
            1
            for r in records
            if str(r["reason"]).startswith("connect failed")
            and r["slot"] in slots
            and r["attempt"] >= since
        ),
    }


def analyse_death(
    records: list[dict[str, Any]],
    killed_at: float,
    victim: dict[str, Any],
    survivors: list[dict[str, Any]],
    restarted: dict[str, Any] | None,
) -> dict[str, Any]:
    """The figures of one death run (``victim``, ``survivors``, ``restarted``: the
    workers' listening events)."""
    restart_at = restarted["bound_at"] if restarted is not None else None
    at_kill = [r for r in records if _alive(r, killed_at)]
    on_victim = [r for r in at_kill if r["worker"] == victim["worker"]]
    numbers = {w["worker"] for w in survivors}
    on_survivors = [r for r in at_kill if r["worker"] in numbers]
    victims = _losses(records, on_victim, killed_at)
    # Worker numbers differ between runs; where the replacements went, by role.
    victims["replaced_on_survivors"] = sum(
        n for worker, n in victims["replacement_workers"].items() if int(worker) in numbers
    )
    report: dict[str, Any] = {
        "victim": {"worker": victim["worker"], "pid": victim["pid"]},
        "survivors": [{"worker": w["worker"], "pid": w["pid"]} for w in survivors],
        "sessions_at_kill": len(at_kill),
        "victim_sessions": victims,
        # Until the restart: what the death alone did to the other workers' sessions.
        "survivor_sessions": _losses(records, on_survivors, killed_at, restart_at),
        "survivor_max_echo_ms": round(
            max((r["max_rtt"] for r in on_survivors), default=0) * 1e3, 1
        ),
        "restart_ms": round((restart_at - killed_at) * 1e3) if restart_at is not None else None,
    }
    if restart_at is not None:
        at_restart = [r for r in records if _alive(r, restart_at)]
        originals = [r for r in at_restart if r["incarnation"] == 1]
        replacements = [r for r in at_restart if r["incarnation"] > 1]
        report["after_restart"] = {
            "originals": _losses(records, originals, restart_at),
            "replacements": _losses(records, replacements, restart_at),
        }
    ended = [r for r in records if r["first_echo"] is not None and r["lost"] is None]
    report["at_end"] = {
        "slots_with_a_session": len({r["slot"] for r in ended}),
        "slots": len({r["slot"] for r in records}),
        "per_worker": dict(Counter(str(r["worker"]) for r in ended)),
        # Echoes a session still open at the end never got, or got wrong.
        "lost_echoes": sum(r["unanswered"] for r in ended),
        "wrong_echoes": sum(r["bad"] for r in records),
    }
    report["ok"] = (
        report["at_end"]["slots_with_a_session"] == report["at_end"]["slots"]
        and report["at_end"]["wrong_echoes"] == 0
    )
    return report


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _get(figures: dict[str, float] | None, key: str) -> float | None:
    return figures[key] if figures is not None else None


def _reasons(groups: list[dict[str, Any]]) -> str:
    """Why sessions ended, counted over all rounds."""
    counts: Counter[str] = Counter()
    for group in groups:
        counts.update(group["reasons"])
    text = ", ".join(f"{n} x {reason}" for reason, n in counts.most_common())
    return f"all rounds: {text}" if text else "none"


def death_rows(records: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """Printable lines and summary figures (medians over rounds) per kind of kill."""
    rows: list[tuple[str, str, Any]] = []
    for kind in ("first", "last"):
        runs = [r for r in records if r.get("killed") == kind and "victim_sessions" in r]
        if not runs:
            continue
        victims = [r["victim_sessions"] for r in runs]
        others = [r["survivor_sessions"] for r in runs]
        replaced = [v["ms_loss_to_replacement_echo"] for v in victims]
        figures: dict[str, Any] = {
            "runs": len(runs),
            "ok": sum(1 for r in runs if r["ok"]),
            "bind_order_certain": sum(1 for r in runs if r.get("bind_order_certain")),
            "workers": runs[0]["workers"],
            "sessions": _median([r["sessions_at_kill"] for r in runs]),
            "on_victim": _median([v["sessions"] for v in victims]),
            "victim_lost": _median([v["lost"] for v in victims]),
            "ms_kill_to_loss_median": _median([_get(v["ms_to_loss"], "median") for v in victims]),
            "ms_kill_to_loss_max": _median([_get(v["ms_to_loss"], "max") for v in victims]),
            "ms_loss_to_replacement_median": _median([_get(v, "median") for v in replaced]),
            "ms_loss_to_replacement_max": _median([_get(v, "max") for v in replaced]),
            "replaced": _median([v["replaced"] for v in victims]),
            "replaced_on_survivors": _median([v["replaced_on_survivors"] for v in victims]),
            "on_survivors": _median([o["sessions"] for o in others]),
            "survivors_lost_before_restart_worst": max(o["lost"] for o in others),
            "lost_echoes_worst": max(r["at_end"]["lost_echoes"] for r in runs),
            "survivor_max_echo_ms": _median([r["survivor_max_echo_ms"] for r in runs]),
            "restart_ms": _median([r["restart_ms"] for r in runs]),
        }
        restarts = [r["after_restart"] for r in runs if "after_restart" in r]
        after = [_get(a[g]["ms_to_loss"], "max") for a in restarts for g in a]
        figures["ms_restart_to_loss_max"] = max((v for v in after if v is not None), default=None)
        for group in ("originals", "replacements"):
            figures[f"{group}_at_restart"] = _median([a[group]["sessions"] for a in restarts])
            figures[f"{group}_lost_after_restart"] = _median([a[group]["lost"] for a in restarts])
        text = _death_text(kind, figures, victims, others, restarts)
        rows.append((text, f"death.killed_{kind}", figures))
    return rows


def _death_text(
    kind: str,
    f: dict[str, Any],
    victims: list[dict[str, Any]],
    others: list[dict[str, Any]],
    restarts: list[dict[str, Any]],
) -> str:
    def n(value: float | None) -> str:
        return "n/a" if value is None else f"{value:g}"

    lines = [
        f" death, {f['workers']} workers, killed the one that bound {kind}"
        f" ({f['ok']}/{f['runs']} ok, bind order certain in {f['bind_order_certain']}; medians):",
        f"   {n(f['on_victim'])} of {n(f['sessions'])} sessions were on it; {n(f['victim_lost'])}"
        f" ended {n(f['ms_kill_to_loss_median'])} ms after the kill (max"
        f" {n(f['ms_kill_to_loss_max'])}): {_reasons(victims)}",
        f"   replacements echo {n(f['ms_loss_to_replacement_median'])} ms after the loss (max"
        f" {n(f['ms_loss_to_replacement_max'])}); {n(f['replaced_on_survivors'])} of"
        f" {n(f['replaced'])} on the other workers",
        f"   other workers: {f['survivors_lost_before_restart_worst']} of their"
        f" {n(f['on_survivors'])} sessions lost before the restart (worst round):"
        f" {_reasons(others)}; echo max {n(f['survivor_max_echo_ms'])} ms;"
        f" {f['lost_echoes_worst']} echoes lost on sessions open at the end",
    ]
    if restarts:
        groups = [a[g] for a in restarts for g in ("originals", "replacements")]
        lines.append(
            f"   restarted worker listening {n(f['restart_ms'])} ms after the kill; then lost:"
            f" {n(f['originals_lost_after_restart'])} of {n(f['originals_at_restart'])} original"
            f" sessions, {n(f['replacements_lost_after_restart'])} of"
            f" {n(f['replacements_at_restart'])} replacements, up to"
            f" {n(f['ms_restart_to_loss_max'])} ms after it listened: {_reasons(groups)}"
        )
    return "\n".join(lines)
