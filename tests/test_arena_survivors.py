"""tools/arena_survivors.py: it finds what a wave left in the pools it made."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from arena_survivors import available  # noqa: E402

usable, why = available()
pytestmark = pytest.mark.skipif(not usable, reason=f"arena survivors: {why}")

# In a fresh interpreter: what earlier tests left in memory would blur it.
WAVE = """
import json, sys
sys.path.insert(0, {tools!r})
from arena_survivors import ArenaSurvivors

survivors = ArenaSurvivors()
wave = [("wave-%d-" % index) * 3 for index in range(200_000)]
kept = [wave[50_000], wave[150_000]]
del wave
report = survivors.report(limit=1000)
print(json.dumps(report))
"""


def _run(source: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", source.format(tools=str(TOOLS))],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_objects_a_wave_left_are_found_with_their_holder_and_the_rest_is_not() -> None:
    report = _run(WAVE)
    values = [entry.get("repr") for entry in report["listed"]]
    for index in (50_000, 150_000):
        assert repr(f"wave-{index}-" * 3) in values
    # 200,000 strings came and went: only the two kept and a few of the
    # walk's own numbers are left in the pools they filled.
    assert report["by_type"]["str"] <= 3
    assert report["blocks"] < 50
    kept = next(
        entry for entry in report["listed"] if entry.get("repr") == repr("wave-50000-" * 3)
    )
    assert kept["held_by"] == ["list"]
    assert set(report["by_arena"]) and report["arenas"] == len(report["by_arena"])


def test_nothing_made_since_the_snapshot_means_nothing_reported() -> None:
    report = _run(
        WAVE.replace(
            'wave = [("wave-%d-" % index) * 3 for index in range(200_000)]', "wave = []"
        ).replace("kept = [wave[50_000], wave[150_000]]", "kept = ()")
    )
    assert report["by_type"].get("str", 0) == 0
    assert report["blocks"] < 20
