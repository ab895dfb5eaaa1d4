"""Build the package, with its sans-IO core compiled by mypyc where possible.

The core below is plain, fully typed Python; mypyc turns the same source into
C extension modules that run it two to three times faster (README, "Speed
against Twisted TCP").  Compiling is an optimisation, never a requirement:
without mypy, without a C compiler or Python's headers, or with
``MNET_PURE_PYTHON=1`` in the environment, the build installs the pure-Python
modules alone, which behave identically.  ``python -c "import
mnet_twisted; print(mnet_twisted.compiled)"`` says which one is installed.

Metadata lives in setup.cfg; this file only adds the optional extensions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The protocol engine: no Twisted imports, nothing monkeypatched at run time.
# The Twisted adapters stay interpreted (they spend their time in Twisted).
COMPILED_MODULES = [
    "wire",
    "seqnum",
    "sendbuf",
    "recvbuf",
    "rtt",
    "pacing",
    "congestion",
    "habits",
    "receiver",
    "sender",
    "session",
    "demux",
    "peerprogress",
    "pmtud",
    "counts",
    "events",
    "config",
    "cookie",
    "ratelimit",
]


def _say(message: str) -> None:
    print(f"mnet_twisted build: {message}", file=sys.stderr)


def _extensions() -> list[Any]:
    if os.environ.get("MNET_PURE_PYTHON"):
        _say("MNET_PURE_PYTHON is set: pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not available: pure Python")
        return []
    sources = [f"mnet_twisted/{name}.py" for name in COMPILED_MODULES]
    if not all(Path(source).is_file() for source in sources):
        return []  # building from an sdist without the sources: nothing to do
    try:
        return list(mypycify(sources, opt_level="3", debug_level="0", group_name="mnet_twisted"))
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        _say(f"mypyc could not translate the core ({exc!r}): pure Python")
        return []


class OptionalBuildExt(build_ext):  # type: ignore[misc]
    """Build the extensions if the machine can; otherwise leave pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python.h, ...
            _say(f"compiling failed ({exc}): pure Python")
            self._remove_partial_outputs()

    def _remove_partial_outputs(self) -> None:
        # A half-built set would mix compiled and interpreted modules of one
        # mypyc group, which cannot import each other: take them all away.
        for extension in self.extensions:
            path = self.get_ext_fullpath(extension.name)
            if os.path.exists(path):
                os.remove(path)
        self.extensions = []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
