"""A small pool of worker processes with a time and memory budget per task.

Image/DICOM decoding and the validation of large request bodies are CPU- and memory-heavy and hold
the GIL; in a worker process they cannot stall the event loop or the model thread. Each worker
caps its own address space (RLIMIT_AS: its size after imports + ``memory_mb``), so a task that
needs more memory fails with MemoryError in the worker, not the server. Each worker is a slot of
its own: a task running past its CPU-time budget is stopped by the kernel, its process alone (a fresh
one is spawned at once), so tasks in the other slots are not disturbed. Workers return freed memory to the system
after each task and are replaced after ``tasks_per_worker`` tasks, so RSS comes back after a peak.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import signal
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from gmai.serve.errors import APIError, overloaded

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(memory_mb: int, preload: tuple[str, ...], nice: int = 0) -> None:
    import importlib
    import resource

    if nice:
        os.nice(nice)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a worker stopped by its CPU budget leaves no core file
    map_large_allocations()
    for name in _THREAD_VARS:
        os.environ[name] = "1"
    for module in preload:
        importlib.import_module(module)
    if memory_mb > 0:
        size = _vm_size_bytes()
        if size:
            limit = size + memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def map_large_allocations(threshold: int = 1 << 20) -> None:
    """Serve allocations over ``threshold`` bytes (decoded images, request bodies) with their own
    memory maps, returned to the system when freed. glibc otherwise raises this threshold after the
    first large free, and later images land in heap arenas that keep RSS at its peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def release_free_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it in its arenas otherwise, so RSS stays at its peak)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cpu_used() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_task(fn: Callable, args: tuple, cpu_budget_s: float | None = None) -> Any:
    """Run one task; with ``cpu_budget_s``, the kernel stops this process (SIGXCPU) once the task
    has used that many CPU seconds (rounded up to whole seconds, RLIMIT_CPU's unit). CPU time, not
    wall time: a task is not cut short because the machine is busy."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_budget_s:
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(_cpu_used() + cpu_budget_s), hard))
    try:
        return fn(*args)
    except MemoryError:
        raise APIError(400, "input needs more memory than this server's per-request budget",
                       code="over_memory_budget") from None
    finally:
        if cpu_budget_s:
            resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        release_free_memory()


def _exit_signal(process, wait_s: float = 1.0) -> int | None:
    process.join(wait_s)
    code = process.exitcode
    return -code if code is not None and code < 0 else None


class _Slot:
    """One worker process of a pool (its own one-process executor), so that stopping a runaway
    task kills that task's process only, never a neighbour's. A task's time budget starts once
    the process has started and imported (``ready``): start-up on a busy machine is not the
    input's fault. After ``tasks_per_worker`` tasks the process is retired and a fresh one started
    at once, so its memory goes back to the system."""

    def __init__(self, pool: "WorkerPool"):
        self.pool = pool
        self.executor: ProcessPoolExecutor | None = None
        self.ready = None  # a future, done once the process has started and imported
        self.tasks = 0

    def ensure(self) -> ProcessPoolExecutor:
        if self.executor is None:
            pool = self.pool
            self.executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker,
                                                initargs=(pool.memory_mb, pool.preload, pool.nice))
            self.ready, self.tasks = self.executor.submit(int), 0  # spawn and import now
        return self.executor

    def retire(self) -> None:
        """Let the process exit after its task; a fresh one starts now, off the next task's budget."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        self.ensure()

    def kill(self) -> None:
        executor, self.executor = self.executor, None
        if executor is None:
            return
        for process in _processes(executor):
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def pids(self) -> list[int]:
        return [p.pid for p in _processes(self.executor) if p.pid and p.is_alive()]


def _processes(executor: ProcessPoolExecutor | None) -> list:
    """The executor's worker processes (ProcessPoolExecutor keeps them in a private dict; none before it starts)."""
    return list((getattr(executor, "_processes", None) or {}).values()) if executor is not None else []


class WorkerPool:
    """``await pool.run(fn, *args)``: at most ``workers`` tasks at once, ``max_waiting`` more wait
    (beyond: 503), each bounded by its CPU-time budget (``timeout_s``, or less per task: a 400),
    the workers' memory budget (a 400) and ``wall_timeout_s`` of wall time (a busy machine: 503).
    Each worker is its own slot: a task past its budget kills its own process only (a fresh one
    is spawned at once), so the other slots' tasks carry on. ``nice``
    lowers the workers' CPU priority (a lane for costly inputs yields the CPU to cheap ones)."""

    def __init__(self, name: str, workers: int, *, timeout_s: float, memory_mb: int, max_waiting: int = 64,
                 preload: tuple[str, ...] = (), tasks_per_worker: int = 50, nice: int = 0,
                 startup_timeout_s: float = 120.0, wall_timeout_s: float = 120.0):
        self.name, self.workers, self.timeout_s, self.memory_mb = name, workers, timeout_s, memory_mb
        self.max_waiting, self.preload, self.tasks_per_worker, self.nice = max_waiting, preload, tasks_per_worker, nice
        self.startup_timeout_s, self.wall_timeout_s = startup_timeout_s, wall_timeout_s
        self._free: list[_Slot] = [_Slot(self) for _ in range(workers)]
        self._slots: asyncio.Semaphore | None = None
        self.waiting = 0
        self.restarts = 0
        self.tasks = 0  # submitted so far

    def start(self) -> None:
        """Spawn the workers now (they take about a second to import) rather than on first use."""
        for slot in self._free:
            slot.ensure()

    def shutdown(self) -> None:
        for slot in self._all_slots():
            slot.kill()

    def _all_slots(self) -> list[_Slot]:
        return list(self._free) + list(getattr(self, "_busy", []))

    def pids(self) -> list[int]:
        """The live worker processes (benchmarks add their memory to the server's)."""
        return [pid for slot in self._all_slots() for pid in slot.pids()]

    async def run(self, fn: Callable, *args: Any, timeout_s: float | None = None) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
            self._busy: list[_Slot] = []
        if self.waiting >= self.max_waiting:
            raise overloaded(f"too many requests waiting for {self.name}; retry shortly")
        budget = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        self.waiting += 1
        try:
            async with self._slots:
                slot = next((s for s in self._free if s.ready is not None and s.ready.done()), self._free[-1])
                self._free.remove(slot)  # a started worker first
                self._busy.append(slot)
                try:
                    return await self._run_in(slot, budget, fn, args)
                finally:
                    self._busy.remove(slot)
                    self._free.append(slot)
        finally:
            self.waiting -= 1

    async def _run_in(self, slot: _Slot, budget: float, fn: Callable, args: tuple) -> Any:
        executor = slot.ensure()
        try:
            await asyncio.wait_for(asyncio.wrap_future(slot.ready), self.startup_timeout_s)
        except (asyncio.TimeoutError, BrokenProcessPool):
            self._restart(slot)
            raise overloaded(f"{self.name} workers are starting; retry shortly") from None
        processes = _processes(executor)
        future = executor.submit(_run_task, fn, args, budget)
        self.tasks += 1
        slot.tasks += 1
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), self.wall_timeout_s)
            if slot.tasks >= self.tasks_per_worker:
                slot.retire()
            return result
        except asyncio.TimeoutError:  # within its CPU budget but not done: the machine is too busy
            self._restart(slot)
            raise overloaded(f"{self.name} did not finish within {self.wall_timeout_s:g} s; the server is busy, "
                             f"retry shortly") from None
        except BrokenProcessPool:
            stopped_by_cpu_budget = any(_exit_signal(p) == signal.SIGXCPU for p in processes)
            self._restart(slot)
            if stopped_by_cpu_budget:
                raise APIError(400, f"{self.name} took longer than this request's budget of {budget:.3g} CPU "
                                    f"seconds", code="over_time_budget") from None
            raise APIError(400, f"{self.name} failed: the input exceeded this server's memory "
                                f"budget or crashed its worker", code="over_memory_budget") from None

    def _restart(self, slot: _Slot) -> None:
        slot.kill()
        self.restarts += 1
        slot.ensure()
