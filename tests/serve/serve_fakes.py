"""A stand-in backend for fast serving tests (no model)."""

from __future__ import annotations

import threading
import time

from gmai.infer.types import Completion, GenerationConfig, truncate_at_stop


class FakeBackend:
    """Echoes the last user text; records batch sizes. Stands in for a model in fast tests."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def _reply(self, request) -> str:
        if self.fail_on and self.fail_on in str(request.messages):
            raise RuntimeError("poisoned request")
        text = request.messages[-1]["content"] if request.messages else request.prompt
        return f"echo {text} images={len(request.images)}"

    def complete(self, requests, config: GenerationConfig, batch_size: int = 16):
        with self.lock:
            self.batches.append(len(requests))
        time.sleep(self.delay)
        out = []
        for r in requests:
            text = truncate_at_stop(self._reply(r), config.stop)
            out.append([Completion(text, "stop", 10, len(text.split())) for _ in range(config.num_return_sequences)])
        return out

    def stream(self, request, config: GenerationConfig, should_stop=None):
        text = self._reply(request)
        for i in range(0, len(text), 3):  # 3-character pieces: stop strings straddle pieces
            if should_stop and should_stop():
                break
            yield text[i:i + 3]
        return Completion("", "stop", 10, len(text.split()))
