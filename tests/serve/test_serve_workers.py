"""Worker pools (gmai.serve.workers): a task's budget is CPU time, not wall time; a task over it is
stopped alone (its own process), and its neighbour in the other slot finishes; a task that cannot
finish in wall time on a busy machine is a 503, not the input's fault."""

import asyncio
import time

from serve_fakes import spin_cpu

from gmai.serve.errors import APIError
from gmai.serve.workers import WorkerPool


def _pool(**overrides) -> WorkerPool:
    return WorkerPool("test work", **{"workers": 2, "timeout_s": 30, "memory_mb": 0, **overrides})


async def _outcome(pool: WorkerPool, fn, *args, budget: float):
    try:
        return await pool.run(fn, *args, timeout_s=budget)
    except APIError as err:
        return err


def test_a_task_waiting_past_its_budget_is_not_stopped_one_spinning_past_it_is_alone():
    pool = _pool()
    pool.start()

    async def both():
        return await asyncio.gather(_outcome(pool, time.sleep, 2.5, budget=1.0),  # wall 2.5 s, ~0 CPU
                                    _outcome(pool, spin_cpu, 20.0, budget=1.0))
    try:
        slept, spun = asyncio.run(both())
        assert slept is None  # time.sleep's result: it ran to the end
        assert isinstance(spun, APIError) and (spun.status, spun.code) == (400, "over_time_budget"), spun
        assert "CPU seconds" in spun.message and pool.restarts == 1
        assert asyncio.run(_outcome(pool, spin_cpu, 0.1, budget=5.0)) == 0.1  # the stopped slot was replaced
    finally:
        pool.shutdown()


def test_a_task_over_the_wall_time_backstop_is_a_503():
    pool = _pool(workers=1, wall_timeout_s=0.5)
    pool.start()
    try:
        err = asyncio.run(_outcome(pool, time.sleep, 3.0, budget=10.0))
        assert isinstance(err, APIError) and err.status == 503, err
    finally:
        pool.shutdown()
