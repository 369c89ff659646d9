"""Request and config types shared by every inference backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image


@dataclass
class ChatRequest:
    """One conversation to continue.

    ``prompt`` is the user's text for a single turn, with ``images`` attached to it. For multi-turn
    input give ``messages`` instead (OpenAI roles; string contents; the images attach to the first
    user turn, in order).
    """

    prompt: str = ""
    images: list[Image.Image] = field(default_factory=list)
    messages: list[dict[str, Any]] | None = None
    system: str | None = None

    def to_messages(self) -> list[dict[str, Any]]:
        """HF processor style: content parts, ``{"type": "image"}`` placeholders first."""
        turns = list(self.messages) if self.messages else [{"role": "user", "content": self.prompt}]
        if self.system:
            turns = [{"role": "system", "content": self.system}] + turns
        out, images_placed = [], False
        for turn in turns:
            content = turn["content"]
            if isinstance(content, str):
                parts = [{"type": "text", "text": content}]
            else:
                parts = list(content)
            if turn["role"] == "user" and not images_placed:
                parts = [{"type": "image"} for _ in self.images] + parts
                images_placed = True
            out.append({"role": turn["role"], "content": parts})
        return out


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy, deterministic
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    num_return_sequences: int = 1
    seed: int | None = None


@dataclass
class Completion:
    """One generated reply with the facts an API response reports (OpenAI's ``finish_reason``, usage)."""

    text: str
    finish_reason: str = "stop"  # "stop" (end token or stop string) | "length" (max_new_tokens reached)
    prompt_tokens: int = 0  # image tokens included
    completion_tokens: int = 0


class PromptTooLongError(ValueError):
    """The prompt plus ``max_new_tokens`` does not fit the model's context window."""


class Backend(Protocol):
    name: str

    def generate(self, requests: list[ChatRequest], config: GenerationConfig | None = None,
                 batch_size: int = 16) -> list[str] | list[list[str]]:
        """One reply per request (a list of ``num_return_sequences`` replies when that is > 1)."""
        ...


def truncate_at_stop(text: str, stop: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
