"""The one way to ask a model something, batched.

A local checkpoint (any Hugging Face image-text-to-text folder, ours included) and an
OpenAI-compatible HTTP endpoint sit behind the same call, used by data generation (LLM),
rejection sampling, evaluation and the server::

    backend = load_backend("runs/demo/stage3")            # or "http://127.0.0.1:8000/v1"
    replies = backend.generate([ChatRequest("What modality is this?", [image])],
                               GenerationConfig(max_new_tokens=32))
"""

from __future__ import annotations

from gmai.infer.types import Backend, ChatRequest, Completion, GenerationConfig, PromptTooLongError


def load_backend(model: str, *, api_key: str | None = None, model_name: str | None = None,
                 device: str | None = None, timeout: float = 120.0, trust_remote_code: bool = False) -> Backend:
    """``model`` is a local checkpoint folder, or an ``http(s)://.../v1`` OpenAI-compatible base URL."""
    if model.startswith(("http://", "https://")):
        from gmai.infer.openai_backend import OpenAIBackend

        return OpenAIBackend(model, api_key=api_key, model_name=model_name, timeout=timeout)
    from gmai.infer.local import LocalBackend

    return LocalBackend.from_checkpoint(model, device=device, trust_remote_code=trust_remote_code)


__all__ = ["Backend", "ChatRequest", "Completion", "GenerationConfig", "PromptTooLongError", "load_backend"]
