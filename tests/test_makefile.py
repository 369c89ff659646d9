"""The Makefile's test targets pass pytest's exit status through: CI (.ci/run) calls `make test`, so a run
that collects no tests (pytest exit code 5) must fail there, not pass."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make(tmp_path: Path, target: str, pytest_exit: int) -> subprocess.CompletedProcess:
    """`make TARGET` against a stand-in venv whose python exits with ``pytest_exit`` (install step already done)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho fake pytest \"$@\"\nexit {pytest_exit}\n")
    python.chmod(0o755)
    stamp = venv / ".installed"
    stamp.touch()
    newer = max(python.stat().st_mtime, (ROOT / "pyproject.toml").stat().st_mtime) + 10
    os.utime(stamp, (newer, newer))  # up to date: make must not try to install
    return subprocess.run(["make", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["test", "test-fast"])
@pytest.mark.parametrize("pytest_exit, ok", [(0, True), (1, False), (5, False)])
def test_make_test_fails_unless_pytest_passes(tmp_path, target, pytest_exit, ok):
    result = _make(tmp_path, target, pytest_exit)
    assert "fake pytest -m pytest -q" in result.stdout
    assert (result.returncode == 0) is ok, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_writes_where_out_says(tmp_path):
    """README: `make demo OUT=elsewhere` writes somewhere else."""
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", f"VENV={venv}", "OUT=elsewhere"],
                            capture_output=True, text=True, timeout=60)
    assert f"{venv}/bin/gmai demo --out elsewhere" in result.stdout
