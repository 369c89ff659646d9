"""Fixtures for the serving tests: a tiny random-weight checkpoint, a fake backend, Chromium."""

from __future__ import annotations

import inspect
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
    from debian import install_or_skip

    install_or_skip("chromium", lambda: Path(CHROMIUM).exists())
    return CHROMIUM
