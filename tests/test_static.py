"""Static checks: ruff over the whole tree, mypy --strict over the sans-IO core."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CORE_MODULES = [
    "wire",
    "seqnum",
    "cookie",
    "secretfile",
    "rtt",
    "congestion",
    "pacing",
    "pmtud",
    "sockopts",
    "sendbuf",
    "recvbuf",
    "ratelimit",
    "trace",
    "sender",
    "receiver",
    "session",
    "demux",
    "config",
    "events",
    "errors",
]


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ruff_clean() -> None:
    """`ruff check` reports nothing on the package, the tests and the Twisted plugin."""
    _require("ruff")
    targets = [
        t for t in ("mnet_twisted", "tests", "twisted", "bench", "examples") if (ROOT / t).exists()
    ]
    result = _run("ruff", "check", *targets)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_core() -> None:
    """`mypy --strict` passes on every sans-IO core module."""
    _require("mypy")
    files = [f"mnet_twisted/{name}.py" for name in CORE_MODULES]
    missing = [f for f in files if not (ROOT / f).exists()]
    assert not missing, f"core modules missing: {missing}"
    # Strict for the sans-IO core only; what it imports is checked, not reported.
    result = _run("mypy", "--strict", "--no-incremental", "--follow-imports=silent", *files)
    assert result.returncode == 0, result.stdout + result.stderr
