"""Run `gmai serve` as a child process on a free loopback port (tests, benchmarks, notebooks)::

    with ServerProcess("runs/tiny", api_key="k") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k")

The key reaches the child through its environment (GMAI_API_KEY), never its command line, which
any local user can read in /proc/PID/cmdline.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def gmai_executable() -> list[str]:
    """The `gmai` console script next to this interpreter, else `python -m gmai.cli`."""
    script = Path(sys.executable).with_name("gmai")
    if script.exists():
        return [str(script)]
    found = shutil.which("gmai")
    return [found] if found else [sys.executable, "-m", "gmai.cli"]


class ServerProcess:
    def __init__(self, checkpoint: str | Path, *, api_key: str | None = None, args: list[str] | None = None,
                 log_path: str | Path | None = None, startup_timeout: float = 120.0, command: str = "serve",
                 ready_path: str = "/health"):
        self.port = free_port()
        self.api_key = api_key
        self.command = [*gmai_executable(), command, str(checkpoint), "--port", str(self.port), *(args or [])]
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout, self.ready_path = startup_timeout, ready_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "ServerProcess":
        import httpx

        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        if self.api_key:
            env["GMAI_API_KEY"] = self.api_key
        self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(self.command)}` exited with {self.proc.returncode} during startup"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"server did not answer {self.ready_path} within {self.startup_timeout:g} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
