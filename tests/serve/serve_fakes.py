"""Test helpers: a stand-in backend (no model) and a cheap decompression-bomb PNG."""

from __future__ import annotations

import struct
import threading
import time
import zlib

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


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all black, built row by row: tens of KB on the wire."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    packer, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
