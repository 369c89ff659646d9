"""A small pool of worker processes with a time and memory budget per task.

Image/DICOM decoding and the validation of large request bodies are CPU- and memory-heavy and hold
the GIL; in a worker process they cannot stall the event loop or the model thread. Each worker
caps its own address space (RLIMIT_AS: its size after imports + ``memory_mb``), so a task that
needs more memory fails with MemoryError in the worker, not the server. A task running past its
time is stopped by killing the pool's processes (a fresh pool starts on the next task; tasks that
shared the killed pool get a 503 and may retry). Workers return freed memory to the system
after each task and are replaced after ``tasks_per_worker`` tasks, so RSS comes back after a peak.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from gmai.serve.errors import APIError, overloaded

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(memory_mb: int, preload: tuple[str, ...]) -> None:
    import importlib
    import resource

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


def _run_task(fn: Callable, args: tuple) -> Any:
    try:
        return fn(*args)
    except MemoryError:
        raise APIError(400, "input needs more memory than this server's per-request budget",
                       code="over_memory_budget") from None
    finally:
        release_free_memory()


class WorkerPool:
    """``await pool.run(fn, *args)``: at most ``workers`` tasks at once, ``max_waiting`` more wait
    (beyond: 503), each bounded by ``timeout_s`` and the workers' memory budget."""

    def __init__(self, name: str, workers: int, *, timeout_s: float, memory_mb: int, max_waiting: int = 64,
                 preload: tuple[str, ...] = (), tasks_per_worker: int = 50):
        self.name, self.workers, self.timeout_s, self.memory_mb = name, workers, timeout_s, memory_mb
        self.max_waiting, self.preload, self.tasks_per_worker = max_waiting, preload, tasks_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self.waiting = 0
        self.restarts = 0
        self.tasks = 0  # submitted so far

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.memory_mb, self.preload),
                                             max_tasks_per_child=self.tasks_per_worker)
        return self._pool

    def start(self) -> None:
        """Spawn the workers now (they take about a second to import) rather than on first use."""
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(int)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._kill(self._pool)
            self._pool = None

    @staticmethod
    def _kill(pool: ProcessPoolExecutor) -> None:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable, *args: Any) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        if self.waiting >= self.max_waiting:
            raise overloaded(f"too many requests waiting for {self.name}; retry shortly")
        self.waiting += 1
        try:
            async with self._slots:
                pool = self._executor()
                future = pool.submit(_run_task, fn, args)
                self.tasks += 1
                try:
                    return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
                except asyncio.TimeoutError:
                    if self._pool is pool:  # stop the runaway task: its process dies with the pool
                        self._pool, self.restarts = None, self.restarts + 1
                        self._kill(pool)
                    raise APIError(400, f"{self.name} took longer than this server's limit of "
                                        f"{self.timeout_s:g} s", code="over_time_budget") from None
                except BrokenProcessPool:
                    if self._pool is not pool:  # another task's runaway killed the pool: not this input's fault
                        raise overloaded(f"{self.name} restarted; retry shortly") from None
                    self._pool, self.restarts = None, self.restarts + 1
                    self._kill(pool)
                    raise APIError(400, f"{self.name} failed: the input exceeded this server's memory "
                                        f"budget or crashed its worker", code="over_memory_budget") from None
        finally:
            self.waiting -= 1
