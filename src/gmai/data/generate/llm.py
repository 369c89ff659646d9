"""The LLM generator: annotation-guided text from any OpenAI-compatible chat endpoint.

The prompt is the record's own description (``Record.describe()``, pixels and file refs left
out) plus the paper's rules: JSON output, every statement grounded in the annotation, the true
label stated, no other label of the dataset asserted, no general textbook facts, nothing vague,
boxes copied exactly, region captions starting with "This region".

Each reply is parsed and checked by :mod:`gmai.data.generate.verify`; a failing reply is asked
again (``max_retries``), then the record falls back to the template generator. Transport errors
and 429/5xx answers are retried with exponential backoff; requests are spaced to ``rate`` per
second (per process: the build divides the rate by its worker count); replies are cached on disk
keyed by a hash of the request, so a rerun or a resumed build does not pay twice.
Perception questions (modality, organ, location, count, grounding) come from the templates:
they are facts of the record, and a model can only get them wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gmai.data.generate import Sample
from gmai.data.generate import verify as V
from gmai.data.generate.templates import BANKS, TemplateGenerator, box_tag
from gmai.data.records import Box, Record
from gmai.data.write import reason_kind

SYSTEM_PROMPT = """You write training text for a medical vision-language model, from a dataset annotation.
Rules:
1. Reply with one JSON object and nothing else.
2. Ground every statement in the annotation: its labels, modality, organ, boxes and mask facts.
3. State the true label(s) with the annotation's exact words. Never assert any other label of the
   label set; you may mention one only negated ("not benign").
4. No general medical knowledge: no textbook facts, causes, epidemiology or treatment.
5. Nothing vague: no hedging such as "may or may not" or "it is unclear".
6. Copy box coordinates exactly as given: [x1, y1, x2, y2], normalised to 0-1.
7. Region captions start with "This region"."""

REPLY_FORMAT = ('{"caption": "<one or two sentences about the whole image>", '
                '"regions": [{"box": [x1, y1, x2, y2], "label": "<label>", "caption": "This region ..."}], '
                '"qa": [{"question": "...", "answer": "..."}]}')
TEMPLATE_FORMATS = ("grounding", "percept_modality", "percept_organ", "percept_location", "percept_count")


class LLMError(RuntimeError):
    """The endpoint could not be reached or kept failing."""


def describe_for_prompt(record: Record) -> dict[str, Any]:
    """``record.describe()`` without file references and free-form metadata, boxes rounded."""
    data = record.describe()
    for key in ("ref", "meta", "conversations", "image_shape", "split"):
        data.pop(key, None)
    data["boxes"] = [{"label": b.label, "box": b.rounded(3)} for b in record.boxes]
    data["mask_facts"] = [{"label": f.label, "box": f.box.rounded(3), "area_fraction": round(f.area_fraction, 4),
                           "location": f.location, "components": f.components} for f in record.mask_facts]
    return {k: v for k, v in data.items() if v not in ("", [], {}, None)}


def build_messages(record: Record) -> list[dict[str, str]]:
    annotation = json.dumps(describe_for_prompt(record), ensure_ascii=False, sort_keys=True)
    user = (f"Annotation of one image:\n{annotation}\n\nWrite a caption, one region caption per box (if any), and "
            f"2-4 question-answer pairs (open and yes/no) about this image. Reply as JSON: {REPLY_FORMAT}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


class LLMGenerator:
    name = "llm"

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str = "gpt-4o-mini", api_key: str = "",
                 rate: float = 2.0, max_retries: int = 2, http_retries: int = 4, backoff: float = 0.5,
                 timeout: float = 60.0, cache_dir: str | None = ".cache/gmai-llm", temperature: float = 0.7,
                 seed: int = 0, max_tokens: int = 800) -> None:
        self.base_url = str(base_url).rstrip("/")
        self.model = str(model)
        self.api_key = str(api_key or os.environ.get("OPENAI_API_KEY", ""))
        self.min_interval = 1.0 / float(rate) if float(rate) > 0 else 0.0
        self.max_retries = int(max_retries)
        self.http_retries = int(http_retries)
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.max_tokens = int(max_tokens)
        self.template = TemplateGenerator()
        self.stats: Counter = Counter()
        self._last_request = 0.0
        self._client: Any = None

    # ---------------------------------------------------------------- generation
    def generate(self, record: Record, rng: random.Random) -> list[Sample]:
        template_samples = self.template.generate(record, rng)
        if record.task in ("vqa", "conversation", "report", "volume") or not (record.labels or record.boxes):
            # dataset text passes through; nothing for a model to ground; a volume's questions (several images) are
            # the template's, whose answers come from the masks
            return template_samples
        messages = build_messages(record)
        for attempt in range(self.max_retries + 1):
            try:
                reply = self.complete(messages, attempt)
            except LLMError as error:
                self.stats["llm_http_failed"] += 1
                self.stats[f"llm_error: {str(error)[:60]}"] += 1
                break
            samples, problems = self.parse_reply(reply, record, rng)
            if not problems:
                self.stats["llm_ok"] += 1
                self.stats["llm_ok_after_retry"] += attempt > 0
                return samples + [s for s in template_samples if s.format in TEMPLATE_FORMATS]
            self.stats["llm_verify_failed"] += 1
            for problem in sorted({reason_kind(p) for p in problems}):
                self.stats[f"verify: {problem}"] += 1
        self.stats["llm_fallback_to_template"] += 1
        for sample in template_samples:
            if sample.generator == "template":
                sample.generator = "template-fallback"
        return template_samples

    def parse_reply(self, reply: str, record: Record, rng: random.Random) -> tuple[list[Sample], list[str]]:
        """Reply text -> samples, and every problem the verifier finds (empty list = accepted)."""
        data, problems = V.check_json(reply)
        if data is None:
            return [], problems
        samples: list[Sample] = []
        caption = str(data.get("caption", "")).strip()
        if not caption:
            problems.append("reply has no caption")
        else:
            samples.append(Sample("MM-Caption", self._conv(self._prompt(rng, "caption.prompt"), caption), "caption",
                                  ["llm.caption"], generator="llm"))
        for region in data.get("regions") or []:
            sample, region_problems = self._region_sample(region, record, rng)
            problems += region_problems
            if sample:
                samples.append(sample)
        for qa in data.get("qa") or []:
            if not isinstance(qa, dict) or not str(qa.get("question", "")).strip() or not str(qa.get("answer", "")).strip():
                problems.append("malformed qa item")
                continue
            samples.append(self._qa_sample(str(qa["question"]).strip(), str(qa["answer"]).strip()))
        for sample in samples:
            problems += V.verify_sample(sample, record)
        return samples, sorted(set(problems))

    @staticmethod
    def _conv(question: str, answer: str) -> list[dict[str, str]]:
        return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]

    @staticmethod
    def _prompt(rng: random.Random, family: str, **words: str) -> str:
        bank = BANKS[family]
        return bank[rng.randrange(len(bank))].format(noun="image", **words)

    def _region_sample(self, region: Any, record: Record, rng: random.Random) -> tuple[Sample | None, list[str]]:
        if not isinstance(region, dict):
            return None, ["malformed region item"]
        coords = region.get("box")
        text = str(region.get("caption", "")).strip()
        if not (isinstance(coords, list) and len(coords) == 4 and all(isinstance(v, (int, float)) for v in coords)):
            return None, [f"region box {coords!r} is not [x1, y1, x2, y2]"]
        if not text:
            return None, ["region without caption"]
        problems = V.check_boxes("", record, extra=[[float(v) for v in coords]])
        box = Box(str(region.get("label", "")), *[float(v) for v in coords])
        prompt = self._prompt(rng, "region.prompt", box=box_tag([box]))
        return Sample("MM-Caption", self._conv(prompt, text), "region_caption", ["llm.region"], generator="llm"), problems

    def _qa_sample(self, question: str, answer: str) -> Sample:
        head = answer.lower()
        closed = head.startswith("yes") or head.startswith("no")
        if closed:
            gold = "yes" if head.startswith("yes") else "no"
            return Sample("MM-Instruct", self._conv(question, answer), "qa_yesno", ["llm.qa"], "label", "closed", gold,
                          generator="llm")
        return Sample("MM-Instruct", self._conv(question, answer), "qa_open", ["llm.qa"], "", "open", answer,
                      generator="llm")

    # ---------------------------------------------------------------- transport
    def _payload(self, messages: list[dict[str, str]], attempt: int) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed + attempt,
                "response_format": {"type": "json_object"}}

    def _cache_path(self, payload: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps({"url": self.base_url, **payload}, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def complete(self, messages: list[dict[str, str]], attempt: int = 0) -> str:
        """The assistant text for these messages (cached); raises LLMError when the endpoint keeps failing."""
        payload = self._payload(messages, attempt)
        cache = self._cache_path(payload)
        if cache is not None and cache.exists():
            self.stats["llm_cache_hit"] += 1
            return json.loads(cache.read_text(encoding="utf-8"))["content"]
        content = self._post(payload)
        self.stats["llm_requests"] += 1
        if cache is not None:
            from gmai.data.write import write_atomic

            write_atomic(cache, json.dumps({"content": content}).encode())
        return content

    def _wait_for_rate(self) -> None:
        wait = self._last_request + self.min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()

    def _post(self, payload: dict[str, Any]) -> str:
        import httpx

        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(timeout=self.timeout, headers=headers)
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.http_retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
            self._wait_for_rate()
            try:
                response = self._client.post(url, json=payload)
            except httpx.HTTPError as error:  # connection refused, timeout, ...
                last = f"{type(error).__name__}: {error}"
                self.stats["llm_http_retry"] += 1
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                self.stats["llm_http_retry"] += 1
                continue
            if response.status_code != 200:
                raise LLMError(f"HTTP {response.status_code} from {url}: {response.text[:200]}")
            try:
                return str(response.json()["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise LLMError(f"{url} returned no choices[0].message.content") from None
        raise LLMError(f"{url} failed after {self.http_retries + 1} tries ({last})")
