"""Any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, our own server, a hosted API)."""

from __future__ import annotations

import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from gmai.infer.types import ChatRequest, GenerationConfig


def image_to_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(request: ChatRequest) -> list[dict]:
    messages = []
    for turn in request.to_messages():
        parts, images = [], iter(request.images)
        for part in turn["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_to_data_url(next(images))}})
            else:
                parts.append(part)
        messages.append({"role": turn["role"], "content": parts})
    return messages


class OpenAIBackend:
    def __init__(self, base_url: str, api_key: str | None = None, model_name: str | None = None,
                 timeout: float = 120.0, retries: int = 3):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.name = model_name or ""
        self.retries = retries
        key = api_key or os.environ.get("GMAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def _model_name(self) -> str:
        if not self.name:
            models = self.client.get(f"{self.base_url}/models")
            models.raise_for_status()
            self.name = models.json()["data"][0]["id"]
        return self.name

    def _complete(self, request: ChatRequest, config: GenerationConfig) -> list[str]:
        body = {"model": self._model_name(), "messages": to_openai_messages(request),
                "max_tokens": config.max_new_tokens, "temperature": config.temperature, "top_p": config.top_p,
                "n": config.num_return_sequences}
        if config.stop:
            body["stop"] = config.stop
        if config.seed is not None:
            body["seed"] = config.seed
        for attempt in range(self.retries + 1):
            response = self.client.post(f"{self.base_url}/chat/completions", json=body)
            retryable = response.status_code == 429 or response.status_code >= 500
            if response.status_code == 200 or not retryable or attempt == self.retries:
                break
            time.sleep(min(2 ** attempt, 10))
        if response.status_code != 200:
            raise RuntimeError(f"{self.base_url}/chat/completions answered {response.status_code}: "
                               f"{response.text[:300]}")
        return [choice["message"]["content"] or "" for choice in response.json()["choices"]]

    def generate(self, requests: list[ChatRequest], config: GenerationConfig | None = None,
                 batch_size: int = 16) -> list[str] | list[list[str]]:
        config = config or GenerationConfig()
        self._model_name()  # resolve once, before the threads start
        with ThreadPoolExecutor(max_workers=max(1, batch_size)) as pool:
            replies = list(pool.map(lambda r: self._complete(r, config), requests))
        if config.num_return_sequences == 1:
            return [r[0] for r in replies]
        return replies
