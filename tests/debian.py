"""Debian packages a test needs (chromium, tesseract-ocr): installed with apt-get when missing, else the
test is skipped with the reason. One helper for every such fixture."""

import shutil
import subprocess
from collections.abc import Callable

import pytest


def install_or_skip(package: str, present: Callable[[], bool]) -> None:
    if present():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip(f"{package} is not installed and apt-get is not available to install it")
    try:
        install = [apt, "install", "-y", "-q", package]
        if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
            subprocess.run([apt, "update", "-q"], check=True, capture_output=True, timeout=300)
            subprocess.run(install, check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, PermissionError) as err:
        pytest.skip(f"could not install {package} with apt-get ({type(err).__name__}); "
                    f"install it with `apt-get install -y {package}`")
    if not present():
        pytest.skip(f"apt-get ran but {package} is still absent")
