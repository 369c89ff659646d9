"""Fixtures for the serving tests: a tiny random-weight checkpoint, a fake backend, Chromium."""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import pytest

from serve_fakes import FakeBackend


def _ascii_corpus() -> list[str]:
    # Source lines of a few stdlib modules: a tokenizer trained on them is mostly ASCII merges, so
    # even random weights reply in readable (meaningless) ASCII, and stop strings can be tested.
    import argparse
    import json
    import textwrap

    return [line for m in (json, argparse, textwrap) for line in inspect.getsource(m).splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny LLaVA checkpoint with random weights (synthetic: it answers gibberish)."""
    from gmai.model import create_model, save_checkpoint

    model, processor = create_model("tiny", corpus=_ascii_corpus(), seed=1)
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("serve-ckpt") / "tiny")


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium, installed with apt-get when missing; skips with the reason when it cannot be."""
    if not Path(CHROMIUM).exists():
        apt = shutil.which("apt-get")
        if apt is None:
            pytest.skip("chromium is not installed and apt-get is not available to install it")
        try:
            install = [apt, "install", "-y", "-q", "chromium"]
            if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
                subprocess.run([apt, "update", "-q"], check=True, capture_output=True, timeout=300)
                subprocess.run(install, check=True, capture_output=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, PermissionError) as err:
            pytest.skip(f"could not install chromium with apt-get ({type(err).__name__}); "
                        f"install it with `apt-get install -y chromium`")
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get ran but /usr/bin/chromium is still absent")
    return CHROMIUM
