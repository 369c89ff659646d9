"""What every benchmark here measures, defined once.

- CPU seconds: user + system time of this process and of its children that have finished (been waited for)
  by the end of the window (``resource.getrusage`` SELF + CHILDREN). Every benchmark joins the processes it
  starts inside the window it times (worker pools closed, subprocesses waited for), so a window's CPU seconds
  are all the compute its work cost, whatever else the machine runs. Threads are included (per process).
  A server measured from outside (the serve benchmarks) is counted the same way from its side: the server
  process and its live children (decoding and validation workers), ``server_cpu_seconds``.
- Peak memory: max RSS of this process (``ru_maxrss``); a side that must be measured alone runs in its own
  subprocess and reports its own.
- Load: the 1/5/15-minute load averages (as ``uptime`` prints them), recorded with every result; they count
  the benchmark's own threads too (a 2-thread benchmark alone makes a load of ~2). Whether the machine was
  quiet is judged on the neighbours alone: the CPU seconds the whole machine spent busy since the benchmark
  started, minus the benchmark's own (``neighbour_cpu``); above 10% of the machine's CPU it is flagged BUSY.
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


def own_cpu_seconds() -> float:
    """``cpu_seconds`` plus the live children's (worker pools and subprocesses not yet waited for)."""
    import psutil

    me = psutil.Process()
    return cpu_seconds() + server_cpu_seconds(me.pid) - sum(me.cpu_times()[:2])


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (every process, every CPU) has spent busy since boot (/proc/stat)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _snapshot() -> tuple[float, float, float]:
    return time.monotonic(), machine_busy_seconds(), own_cpu_seconds()


_START = _snapshot()  # taken when a benchmark script imports this module, i.e. at its start


def neighbour_cpu(start: tuple[float, float, float] = _START) -> dict[str, float]:
    """CPU the rest of the machine used since ``start``: the machine's busy seconds minus this process
    tree's. ``share`` is that over the machine's CPU seconds in the window (wall x CPUs)."""
    wall, busy, own = (now - then for now, then in zip(_snapshot(), start))
    others = max(0.0, busy - own)
    return {"wall_s": round(wall, 1), "others_cpu_s": round(others, 1),
            "share": round(others / (wall * (os.cpu_count() or 1)), 3) if wall > 0 else 0.0}


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


BUSY_SHARE = 0.10  # of the machine's CPU, used by other processes while the benchmark ran


def machine(start: tuple[float, float, float] = _START) -> dict[str, Any]:
    """The machine, its load averages, and whether other processes made it busy since ``start``."""
    import platform

    others = neighbour_cpu(start)
    pct = f"{100 * others['share']:.1f}% of the machine's CPU ({others['others_cpu_s']} s in {others['wall_s']} s)"
    note = (f"BUSY machine: other processes used {pct} while this benchmark ran; wall times include their share, "
            "not quiet-machine numbers") if others["share"] > BUSY_SHARE else (
            f"quiet machine: other processes used {pct} while this benchmark ran")
    return {"cpus": os.cpu_count() or 1, "platform": platform.platform(), "python": platform.python_version(),
            "load_avg": load_average(), "neighbours": others, "note": note}
