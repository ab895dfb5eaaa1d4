"""The API reference builds from the docstrings without errors (pydoctor, as Twisted's)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("pydoctor") is None, reason="pydoctor not installed")
def test_api_reference_builds_without_docstring_errors(tmp_path: Path) -> None:
    # The README's command, writing elsewhere.
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pydoctor", "--docformat=restructuredtext"),
            *("--project-name=mnet_twisted", f"--html-output={tmp_path}", "mnet_twisted"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "bad docstring" not in output and "syntax errors" not in output, output
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "mnet_twisted.endpoints.MNETServerEndpoint.html").exists()
