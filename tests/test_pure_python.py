"""
Where the build compiled the engine (setup.py), the pure-Python engine
still gets tested: the same sources, run by the interpreter, are what a
machine without a C compiler installs.  This runs, in a child pytest
against the checkout's sources, the tests that can only watch an
interpreted engine (marked ``internals``) and the engine's own tests
(``ENGINE_TESTS``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import mnet_twisted

ROOT = Path(__file__).resolve().parent.parent
#: The simulated-network and engine-part tests, which drive most of the
#: engine's rules in seconds, and the hot-path tests (sans-IO and real
#: sockets), which hold its fast paths to the rules.
ENGINE_TESTS = [
    "tests/test_core_parts.py",
    "tests/test_sim_loss_recovery.py",
    "tests/test_hot_path.py",
]


def _child_pytest(*arguments: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["MNET_EXPECT_PURE_PYTHON"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    not mnet_twisted.compiled, reason="the engine is pure Python here: the suite itself ran it"
)
@pytest.mark.parametrize(
    "selection",
    [("-m", "internals", "tests"), tuple(ENGINE_TESTS)],
    ids=["internals", "engine"],
)
def test_the_pure_python_engine_passes_too(selection: tuple[str, ...]) -> None:
    result = _child_pytest(*selection)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout, result.stdout[-4000:]


@pytest.mark.timeout(300)
def test_a_machine_that_cannot_compile_gets_the_pure_python_engine(tmp_path: Path) -> None:
    """setup.py's fallback: a compiler that fails leaves no extension behind, and says so."""
    pytest.importorskip("setuptools")
    pytest.importorskip("mypyc")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mnet_twisted", source / "mnet_twisted")
    built = tmp_path / "lib"
    env = dict(os.environ, CC="false", PYTHONDONTWRITEBYTECODE="1")
    env.pop("MNET_PURE_PYTHON", None)
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(built)],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mnet_twisted build: compiling failed" in result.stderr
    assert "pure Python" in result.stderr
    assert [path.name for path in built.rglob("*.so")] == []


def _can_compile() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "").split()
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(compiler) and shutil.which(compiler[0]) is not None and headers.is_file()


@pytest.mark.skipif(
    bool(os.environ.get("MNET_PURE_PYTHON")), reason="MNET_PURE_PYTHON asked for pure Python"
)
@pytest.mark.skipif(not _can_compile(), reason="no C compiler or no Python.h here")
def test_a_machine_that_can_compile_got_the_compiled_engine() -> None:
    """The build falls back quietly: this notices a core mypyc stopped translating.

    (A type error anywhere mypy follows from the engine does that.)  A
    checkout run without installing (``python -m pytest`` over an editable
    pure install) is exempt: it tests the sources, not a build.
    """
    installed = Path(mnet_twisted.__file__).resolve().parent
    if installed == ROOT / "mnet_twisted":
        pytest.skip("the checkout's own sources, not an installed build")
    assert mnet_twisted.compiled, f"{installed} holds no compiled engine"
