"""What every benchmark here measures, defined once.

- CPU seconds: user + system time of this process and of its children that have finished (been waited for)
  by the end of the window (``resource.getrusage`` SELF + CHILDREN). Every benchmark joins the processes it
  starts inside the window it times (worker pools closed, subprocesses waited for), so a window's CPU seconds
  are all the compute its work cost, whatever else the machine runs. Threads are included (per process).
  A server measured from outside (the serve benchmarks) is counted the same way from its side: the server
  process and its live children (decoding and validation workers), ``server_cpu_seconds``.
- Peak memory: max RSS of this process (``ru_maxrss``); a side that must be measured alone runs in its own
  subprocess and reports its own.
- Load: the 1/5/15-minute load averages (as ``uptime`` prints them), recorded with every result: on a shared
  machine the wall times mostly measure the neighbours.
- Rounds: every setting runs once per round, the settings interleaved within a round, and the result keeps
  every round plus the median (a burst of load hits one round of every setting alike).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU so far of a running process and its live children (a server and its worker pools)."""
    import psutil

    total = 0.0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # a child that ended between listing and reading
            pass
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Window:
    """Wall and CPU seconds of a ``with`` block."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def __enter__(self) -> "Window":
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s, self.cpu_s = time.perf_counter() - self._wall, cpu_seconds() - self._cpu


def interleaved_rounds(settings: Sequence[str], rounds: int, run: Callable[[str, int], dict[str, Any]],
                       rotate: bool = True) -> dict[str, list[dict[str, Any]]]:
    """``run(setting, round)`` for every setting in every round; the order rotates between rounds (when
    ``rotate``) so that no setting always runs first, on a cold cache or right after another one."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    for r in range(rounds):
        order = list(settings[r % len(settings):]) + list(settings[:r % len(settings)]) if rotate else list(settings)
        for setting in order:
            result = run(setting, r)
            result["round"], result["load_avg"] = r, load_average()
            out[setting].append(result)
    return out


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def machine() -> dict[str, Any]:
    import platform

    load, cpus = load_average(), os.cpu_count() or 1
    busy = load[0] > 0.25 * cpus
    return {"cpus": cpus, "platform": platform.platform(), "python": platform.python_version(), "load_avg": load,
            "note": ("BUSY machine (1-min load above 0.25 per CPU): wall times include the neighbours' share; "
                     "not quiet-machine numbers") if busy else "1-min load at most 0.25 per CPU"}
