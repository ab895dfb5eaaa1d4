"""
CPU instructions a Python run takes, counted by valgrind's callgrind.

Timings on these shared machines swing by a factor of two or three from
one hour to the next; the instructions a run executes do not.  The
benchmarks that offer ``--instructions`` run themselves twice under
callgrind, a short pass and a long one, each in a process of its own, and
report the difference per unit of work, so that start-up (the interpreter,
the imports, a handshake) cancels out.  Only user-space instructions are
counted: what the kernel does for a syscall is not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

__all__ = ["available", "instructions", "per_unit"]


def available() -> bool:
    """Whether valgrind is installed (Debian's ``valgrind`` package)."""
    return shutil.which("valgrind") is not None


def instructions(script: str, *arguments: str) -> tuple[int, str]:
    """(instructions executed, standard output) of ``python script arguments``."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            script,
            *arguments,
        ],
        capture_output=True,
        text=True,
        check=True,
        # One hash seed, so that dicts and sets lay out alike on every run
        # (random seeds move the count by about 1 %).
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output: {result.stderr}")
    return int(found.group(1)), result.stdout


def per_unit(script: str, arguments: Callable[[int], list[str]], short: int, long: int) -> float:
    """Instructions per unit of work: a pass of ``short`` units and one of ``long``, differenced.

    ``arguments(n)`` are the script's arguments for a pass of ``n`` units.
    """
    fewer, _ = instructions(script, *arguments(short))
    more, _ = instructions(script, *arguments(long))
    return (more - fewer) / (long - short)
