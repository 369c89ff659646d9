"""Annotation-guided text generation: a Record becomes LLaVA-style conversations.

Two generators share one interface, ``Generator.generate(record, rng) -> list[Sample]``:

- ``template`` (default, offline, deterministic for a seed): many phrasings per format.
- ``llm``: any OpenAI-compatible ``/v1/chat/completions`` endpoint, prompted with the paper's rules;
  every reply goes through :mod:`gmai.data.generate.verify` and falls back to the template
  generator when it keeps failing.

A Sample belongs to one of the paper's subsets (MM-Caption, MM-Instruct, MM-Percept) and carries
enough metadata (format, question/answer type, gold answer) for training mixtures and for the
held-out evaluation split.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from gmai.data.records import Record

SUBSETS = ("MM-Caption", "MM-Instruct", "MM-Percept")


@dataclass
class Sample:
    """One training sample: a conversation about one image, plus what it was made from."""

    subset: str  # one of SUBSETS
    conversations: list[dict[str, str]]  # [{"from": "human"|"gpt", "value": ...}, ...]
    format: str  # "caption", "region_caption", "qa_open", "qa_yesno", "qa_choice", "percept_modality", ...
    templates: list[str] = field(default_factory=list)  # template ids used (for the usage distribution)
    question_type: str = ""  # e.g. "label", "modality", "organ", "location", "count" (single-turn Q&A)
    answer_type: str = ""  # "open" | "closed" | "choice" for single-turn Q&A, "" otherwise
    answer: str = ""  # gold answer for single-turn Q&A (a letter for "choice")
    options: list[str] = field(default_factory=list)  # "A. label", ... for multiple choice
    generator: str = "template"  # "template" | "llm" | "template-fallback" | "passthrough"

    def to_json(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict deep-copies and was a visible cost per record
        return {"subset": self.subset, "conversations": [dict(t) for t in self.conversations],
                "format": self.format, "templates": list(self.templates), "question_type": self.question_type,
                "answer_type": self.answer_type, "answer": self.answer, "options": list(self.options),
                "generator": self.generator}


class Generator(Protocol):
    """What the build needs from a generator. ``stats`` counts events (e.g. LLM fallbacks)."""

    name: str
    stats: Counter

    def generate(self, record: Record, rng: random.Random) -> list[Sample]: ...


def get_generator(name: str, options: dict[str, Any] | None = None) -> Generator:
    """Build a generator by name: ``template`` or ``llm`` (options: base_url, model, api_key, ...)."""
    options = dict(options or {})
    if name == "template":
        from gmai.data.generate.templates import TemplateGenerator

        return TemplateGenerator(**options)
    if name == "llm":
        from gmai.data.generate.llm import LLMGenerator

        return LLMGenerator(**options)
    raise ValueError(f"unknown generator {name!r}; use 'template' or 'llm'")
