"""Dynamic batching: concurrent requests share one ``generate`` call.

One worker thread owns the model. Requests wait in a bounded queue; the worker takes the oldest,
then waits up to ``wait_ms`` for more requests with the same generation parameters (up to
``max_batch``) and answers them with one batched ``complete`` call. Requests with other
parameters stay queued for a later batch. Streaming requests run alone (a token streamer follows
one sequence). With ``max_batch=1`` this is the plain one-request-at-a-time server, the baseline
of ``benchmarks/serve_load.py``.

Bounded: the queue refuses work beyond ``max_queue`` (the API answers 503), a request that
timed out or whose client went away is skipped if it has not started, and stops generating at the
next token if it has (streaming, and batched requests on backends whose ``complete`` takes
``should_stop``). A failing batch costs at most 3 model calls:
with a backend that can ``prepare`` a request alone (no model call), the requests that fail it get
their own error and the others run once more, together; otherwise each half runs once, and the
members of a half that fails get its error. (The API refuses bad requests before they are queued,
with the same ``prepare``, so a bad request normally costs its batch no model call at all.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from gmai.infer.types import ChatRequest, Completion, GenerationConfig, truncate_at_stop
from gmai.serve.workers import release_free_memory

log = logging.getLogger("gmai.serve")
_END = object()


class QueueFullError(Exception):
    """The bounded queue is full: the caller should answer 503 and let the client retry."""


@dataclass
class _Job:
    request: ChatRequest
    config: GenerationConfig
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    chunks: asyncio.Queue | None = None  # set for streaming jobs
    stop: list[str] = field(default_factory=list)  # batched jobs: applied after generation
    deadline: float = float("inf")  # time.monotonic() after which nobody waits for the answer
    cancelled: threading.Event = field(default_factory=threading.Event)
    prepared: Any = None  # the backend's prepare() output, when the API made one

    def abandoned(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline

    def batch_key(self) -> tuple:
        # Stop strings are applied per request after generation, so they do not split batches.
        # A seeded sampled request runs alone: its samples must not depend on its batch companions.
        c = self.config
        alone = id(self) if c.seed is not None and c.temperature > 0 else None
        return (c.max_new_tokens, c.temperature, c.top_p, c.num_return_sequences, c.seed, alone)


class DynamicBatcher:
    def __init__(self, backend: Any, *, max_batch: int = 16, wait_ms: float = 10.0, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.backend = backend
        self.max_batch, self.wait_s, self.max_queue = max_batch, wait_ms / 1000.0, max_queue
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="gmai-batcher", daemon=True)
        self.batches_run = 0  # model calls (a failing batch's retries included)
        self.requests_run = 0
        self.generating = 0  # requests in the model call running now
        accepted = _parameters(getattr(backend, "complete", None))
        self._takes_prepared, self._takes_should_stop = "prepared" in accepted, "should_stop" in accepted
        self._stream_takes_prepared = "prepared" in _parameters(getattr(backend, "stream", None))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ submitting (event loop side)
    def _enqueue(self, job: _Job) -> None:
        with self._cond:
            if self._stopped:
                raise QueueFullError("server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFullError(f"request queue is full ({self.max_queue} waiting)")
            self._pending.append(job)
            self._cond.notify()

    async def complete(self, request: ChatRequest, config: GenerationConfig, timeout: float,
                       prepared: Any = None) -> list[Completion]:
        """``num_return_sequences`` completions for one request. Raises QueueFullError,
        asyncio.TimeoutError, or the backend's error for this request. Cancelling the caller
        abandons the request (skipped if queued, stopped at the next token if running)."""
        loop = asyncio.get_running_loop()
        job = _Job(request, _without_stop(config), loop, loop.create_future(), stop=list(config.stop),
                   deadline=time.monotonic() + timeout, prepared=prepared)
        self._enqueue(job)
        try:
            completions = await asyncio.wait_for(asyncio.shield(job.future), timeout)
        finally:
            job.cancelled.set()  # no effect once done; skips the work if still queued
            if job.future.done():  # the model thread is done with it: drop its images and tensors now,
                job.request = job.prepared = None  # even if a reference cycle keeps the job itself
        return [_apply_stop(c, job.stop) for c in completions]

    async def stream(self, request: ChatRequest, config: GenerationConfig,
                     deadline: float, prepared: Any = None) -> AsyncIterator[str | Completion]:
        """Text pieces of one reply, then (for backends that report it) a :class:`Completion` with
        the finish reason and token counts. Raises QueueFullError at once if the queue is full;
        the iterator raises asyncio.TimeoutError once ``deadline`` (``time.monotonic()``) passes."""
        loop = asyncio.get_running_loop()
        job = _Job(request, config, loop, loop.create_future(), chunks=asyncio.Queue(), deadline=deadline,
                   prepared=prepared)
        self._enqueue(job)
        return self._drain(job, deadline)

    async def _drain(self, job: _Job, deadline: float) -> AsyncIterator[str | Completion]:
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise asyncio.TimeoutError()
                item = await asyncio.wait_for(job.chunks.get(), remaining)
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()  # client gone, timed out or done: stop generating at the next token

    # ------------------------------------------------------------------ the worker thread
    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while True:
                if not self._pending and not self._stopped:
                    self._cond.release()  # idle: return the burst's freed memory (RSS falls after a peak)
                    try:
                        release_free_memory()
                    finally:
                        self._cond.acquire()
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return None
                first = self._pending.popleft()
                if not first.abandoned():
                    break
            if first.chunks is not None or self.max_batch == 1:
                return [first]
            batch, key = [first], first.batch_key()
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                for job in list(self._pending):
                    if len(batch) >= self.max_batch:
                        break
                    if job.chunks is None and job.batch_key() == key and not job.abandoned():
                        self._pending.remove(job)
                        batch.append(job)
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or self._stopped:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch[0].chunks is not None:
                self._run_stream(batch[0])
            else:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        error = self._call(batch)
        if error is None:
            return
        if len(batch) == 1:
            _resolve(batch[0], error=error)
            return
        log.warning("batch of %d failed (%s); isolating the failing request", len(batch), type(error).__name__)
        if callable(getattr(self.backend, "prepare", None)):
            self._retry_without_culprits(batch, error)
        else:
            self._retry_halves(batch)

    def _retry_without_culprits(self, batch: list[_Job], error: Exception) -> None:
        """Find the failing requests with ``prepare`` (no model call); the rest run once more together."""
        survivors = []
        for job in batch:
            try:
                self.backend.prepare(job.request, job.config)
            except Exception as own:  # noqa: BLE001 - this request's own error
                _resolve(job, error=own)
            else:
                survivors.append(job)
        live = [job for job in survivors if not job.abandoned()]
        if len(live) == len(batch):  # no culprit found: the batch fails as one
            for job in batch:
                _resolve(job, error=error)
            return
        retry_error = self._call(live) if live else None
        for job in survivors if retry_error is not None else []:
            _resolve(job, error=retry_error)

    def _retry_halves(self, batch: list[_Job]) -> None:
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            live = [job for job in half if not job.abandoned()]
            half_error = self._call(live) if live else None
            for job in half if half_error is not None else []:
                _resolve(job, error=half_error)

    def _call(self, batch: list[_Job]) -> Exception | None:
        """One model call; resolves every job on success, returns the error otherwise."""
        self.batches_run += 1
        self.requests_run += len(batch)
        self.generating = len(batch)
        kwargs: dict[str, Any] = {}
        if self._takes_prepared and all(j.prepared is not None for j in batch):
            kwargs["prepared"] = [j.prepared for j in batch]
        if self._takes_should_stop:
            kwargs["should_stop"] = [j.abandoned for j in batch]
        try:
            results = self.backend.complete([j.request for j in batch], batch[0].config, batch_size=len(batch),
                                            **kwargs)
        except Exception as err:  # noqa: BLE001 - the caller isolates the failing request
            return err
        finally:
            self.generating = 0
        for job, completions in zip(batch, results):
            _resolve(job, result=completions)
        return None

    def _run_stream(self, job: _Job) -> None:
        self.batches_run += 1
        self.requests_run += 1

        def send(item: Any) -> None:
            job.loop.call_soon_threadsafe(job.chunks.put_nowait, item)

        final: Completion | None = None
        try:
            prepared = {"prepared": job.prepared} if job.prepared is not None and self._stream_takes_prepared else {}
            pieces = self.backend.stream(job.request, job.config, should_stop=job.abandoned, **prepared)
            while True:
                try:
                    piece = next(pieces)
                except StopIteration as end:
                    final = end.value
                    break
                send(piece)
                if job.abandoned():
                    pieces.close()  # stops generation at the next token
                    break
            if isinstance(final, Completion):
                send(final)
            send(_END)
        except Exception as err:  # noqa: BLE001 - delivered to the client's stream
            send(err)


def _resolve(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the event loop has closed (shutdown): nobody is waiting
        pass


def _parameters(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _without_stop(config: GenerationConfig) -> GenerationConfig:
    return replace(config, stop=[])


def _apply_stop(completion: Completion, stop: list[str]) -> Completion:
    cut = truncate_at_stop(completion.text, stop)
    if len(cut) == len(completion.text):
        return completion
    return replace(completion, text=cut.strip(), finish_reason="stop")
