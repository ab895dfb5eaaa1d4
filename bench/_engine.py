"""Which ``mnet_twisted`` the benchmarks measure: always this checkout's code.

Compiled where that can be had: when the installed package (``pip install
.``, which compiles the engine with mypyc where the machine can, see
setup.py) holds exactly this checkout's sources, the benchmarks and their
peer processes import it; otherwise they import the checkout's sources,
interpreted.  A worktree of another commit so measures its own code, never
the installed one's.  An editable install compiles into the checkout
itself: those modules are measured, and refused once older than their
sources.  Each benchmark prints which it measured.
"""

from __future__ import annotations

import filecmp
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
_SOURCES = REPOSITORY / "mnet_twisted"


def _installed_package() -> Path | None:
    """The ``mnet_twisted`` directory on ``sys.path`` outside this checkout, if any."""
    for entry in sys.path:
        if not entry:
            continue
        root = Path(entry).resolve()
        if root in (REPOSITORY, REPOSITORY / "bench", REPOSITORY / "tests"):
            continue
        candidate = root / "mnet_twisted"
        if (candidate / "__init__.py").is_file():
            return candidate
    return None


def _is_compiled(package: Path) -> bool:
    return any((package / f"session{suffix}").is_file() for suffix in EXTENSION_SUFFIXES)


def _same_sources(package: Path) -> bool:
    sources = sorted(path.name for path in _SOURCES.glob("*.py"))
    installed = sorted(path.name for path in package.glob("*.py"))
    if sources != installed:
        return False
    _, mismatch, errors = filecmp.cmpfiles(_SOURCES, package, sources, shallow=False)
    return not mismatch and not errors


def _stale_modules(package: Path) -> list[str]:
    """Compiled modules of the checkout older than their sources."""
    stale = []
    for source in package.glob("*.py"):
        for suffix in EXTENSION_SUFFIXES:
            built = source.with_name(source.stem + suffix)
            if built.is_file() and built.stat().st_mtime < source.stat().st_mtime:
                stale.append(source.name)
    return stale


def _choose() -> tuple[str, str]:
    if _is_compiled(_SOURCES):
        # An editable install builds the extensions into the checkout itself.
        stale = _stale_modules(_SOURCES)
        if stale:
            raise SystemExit(
                f"{_SOURCES} holds compiled modules older than their sources"
                f" ({', '.join(sorted(stale))}): rebuild them, or delete the *.so files"
            )
        return str(REPOSITORY), f"compiled engine (mypyc), built into {_SOURCES}"
    package = _installed_package()
    if package is not None and _is_compiled(package) and _same_sources(package):
        return str(package.parent), f"compiled engine (mypyc), installed in {package}"
    reason = "no compiled build of this checkout is installed"
    return str(REPOSITORY), f"pure Python, {_SOURCES} ({reason})"


#: The directory to put first on ``sys.path`` (and peers' ``PYTHONPATH``),
#: and a line saying what it holds.
ENGINE_PATH, ENGINE = _choose()


def use_engine() -> None:
    """Put the measured ``mnet_twisted`` first on this process's ``sys.path``."""
    if ENGINE_PATH not in sys.path[:1]:
        sys.path.insert(0, ENGINE_PATH)
