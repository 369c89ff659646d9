"""Dynamic batching with a fake backend: grouping, bounds, isolation of a failing request."""

import asyncio
import time

import pytest
from serve_fakes import FakeBackend, NoPrepareBackend

from gmai.infer.types import ChatRequest, GenerationConfig
from gmai.serve.batching import DynamicBatcher, QueueFullError


def _run(coro):
    return asyncio.run(coro)


async def _with_batcher(backend, fn, **kwargs):
    batcher = DynamicBatcher(backend, **kwargs)
    batcher.start()
    try:
        return await fn(batcher)
    finally:
        batcher.stop()


def _req(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])


def test_concurrent_requests_share_one_generate_call():
    backend = FakeBackend(delay=0.05)
    config = GenerationConfig(max_new_tokens=8)

    async def go(batcher):
        return await asyncio.gather(*(batcher.complete(_req(f"q{i}"), config, timeout=10) for i in range(12)))

    results = _run(_with_batcher(backend, go, max_batch=16, wait_ms=50))
    assert [r[0].text for r in results] == [f"echo q{i} images=0" for i in range(12)]  # order kept
    assert sum(backend.batches) == 12 and max(backend.batches) >= 6  # batched, not one by one


def test_batching_off_runs_one_request_per_call():
    backend = FakeBackend()

    async def go(batcher):
        return await asyncio.gather(*(batcher.complete(_req("x"), GenerationConfig(), timeout=10) for _ in range(5)))

    _run(_with_batcher(backend, go, max_batch=1))
    assert backend.batches == [1] * 5


def test_different_generation_params_are_not_mixed():
    backend = FakeBackend(delay=0.02)
    a, b = GenerationConfig(max_new_tokens=8), GenerationConfig(max_new_tokens=16)

    async def go(batcher):
        return await asyncio.gather(*(batcher.complete(_req("x"), a if i % 2 else b, timeout=10) for i in range(8)))

    _run(_with_batcher(backend, go, max_batch=16, wait_ms=30))
    assert sum(backend.batches) == 8 and len(backend.batches) >= 2


def test_stop_strings_do_not_split_batches_and_apply_per_request():
    backend = FakeBackend(delay=0.02)

    async def go(batcher):
        return await asyncio.gather(
            batcher.complete(_req("alpha beta"), GenerationConfig(stop=["beta"]), timeout=10),
            batcher.complete(_req("alpha beta"), GenerationConfig(), timeout=10))

    stopped, full = _run(_with_batcher(backend, go, max_batch=16, wait_ms=50))
    assert stopped[0].text == "echo alpha" and stopped[0].finish_reason == "stop"
    assert full[0].text == "echo alpha beta images=0"
    assert backend.batches == [2]


def test_queue_is_bounded():
    backend = FakeBackend(delay=0.3)

    async def go(batcher):
        tasks = [asyncio.ensure_future(batcher.complete(_req("x"), GenerationConfig(), timeout=10)) for _ in range(6)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results

    results = _run(_with_batcher(backend, go, max_batch=1, max_queue=2))
    refused = [r for r in results if isinstance(r, QueueFullError)]
    assert refused and len(refused) < 6


def test_timeout_raises_and_skips_queued_work():
    backend = FakeBackend(delay=0.3)

    async def go(batcher):
        first = asyncio.ensure_future(batcher.complete(_req("slow"), GenerationConfig(), timeout=10))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await batcher.complete(_req("late"), GenerationConfig(max_new_tokens=3), timeout=0.1)
        await first
        await asyncio.sleep(0.1)

    _run(_with_batcher(backend, go, max_batch=4, wait_ms=0))
    assert backend.batches == [1]  # the timed-out request never reached the model


def test_a_failing_request_does_not_fail_its_batch():
    backend = FakeBackend(delay=0.02, fail_on="poison")

    async def go(batcher):
        return await asyncio.gather(*(batcher.complete(_req(t), GenerationConfig(), timeout=10)
                                      for t in ("ok1", "poison", "ok2")), return_exceptions=True)

    ok1, bad, ok2 = _run(_with_batcher(backend, go, max_batch=8, wait_ms=50))
    assert isinstance(bad, RuntimeError)
    assert ok1[0].text.startswith("echo ok1") and ok2[0].text.startswith("echo ok2")
    # the batch, then the two good ones together (found by prepare, no model call): not one by one
    assert backend.batches == [3, 2]


def test_a_failing_batch_costs_at_most_3_model_calls_without_prepare():
    backend = NoPrepareBackend(delay=0.02, fail_on="poison")
    texts = [f"ok{i}" for i in range(15)] + ["poison"]

    async def go(batcher):
        return await asyncio.gather(*(batcher.complete(_req(t), GenerationConfig(), timeout=10) for t in texts),
                                    return_exceptions=True)

    results = _run(_with_batcher(backend, go, max_batch=16, wait_ms=200))
    assert backend.batches == [16, 8, 8]  # not 17 calls
    assert all(not isinstance(r, Exception) for r in results[:8])  # the clean half is answered
    assert isinstance(results[-1], RuntimeError)


def test_an_abandoned_request_stops_at_the_next_token_in_its_batch():
    backend = FakeBackend(token_s=0.002)
    config = GenerationConfig(max_new_tokens=400)

    async def go(batcher):
        keep = asyncio.ensure_future(batcher.complete(_req("keep"), config, timeout=30))
        drop = asyncio.ensure_future(batcher.complete(_req("drop"), config, timeout=30))
        await asyncio.sleep(0.2)
        drop.cancel()  # the API does this when the client disconnects
        return await keep

    kept = _run(_with_batcher(backend, go, max_batch=4, wait_ms=50))
    assert kept[0].text == "echo keep images=0" and backend.batches == [2]
    assert backend.tokens_generated < 400 + 200  # the dropped row stopped well before its 400 tokens


def test_stream_yields_pieces_then_the_completion():
    backend = FakeBackend()

    async def go(batcher):
        items = []
        async for item in await batcher.stream(_req("hello"), GenerationConfig(), time.monotonic() + 10):
            items.append(item)
        return items

    items = _run(_with_batcher(backend, go))
    assert "".join(i for i in items if isinstance(i, str)) == "echo hello images=0"
    assert items[-1].finish_reason == "stop"


def test_seeded_sampling_requests_run_alone():
    backend = FakeBackend(delay=0.02)
    seeded = GenerationConfig(temperature=1.0, seed=7)

    async def go(batcher):
        return await asyncio.gather(*(batcher.complete(_req("x"), seeded, timeout=10) for _ in range(3)))

    _run(_with_batcher(backend, go, max_batch=16, wait_ms=50))
    assert backend.batches == [1, 1, 1]
