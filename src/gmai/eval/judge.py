"""An optional LLM judge for multiple-choice replies the rule-based extractor cannot read.

Any OpenAI-compatible ``/v1/chat/completions`` endpoint works (vLLM, our own server, a hosted API),
called with plain httpx and a bounded timeout. The judge only maps a reply to an option letter; it never
sees the gold answer. Every raw judge reply is kept in a JSONL cache (key = hash of model + prompt),
so a rerun costs nothing and an audit can read exactly what the judge said.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

from gmai.eval.scoring import extract_choice, judge as rule_judge

JUDGE_RULE = "gmai+judge@1"
JUDGE_RULE_DESCRIPTION = ("gmai@1, but a multiple-choice reply the rules cannot map to a letter is mapped by "
                          "an LLM judge (which never sees the gold); the judge's raw replies are cached")

_PROMPT = """You are given a multiple-choice question, its options, and a model's reply.
Which option does the reply choose? Answer with the option letter only, or "None" if the reply
chooses no option or several.

Question: {question}
Options:
{options}
Reply: {reply}

Letter:"""


class ChoiceJudge:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, cache_path: str | Path | None = None,
                 timeout: float = 60.0, transport=None):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        key = api_key or os.environ.get("GMAI_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}
        self.calls = 0
        if self.cache_path and self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry

    def describe(self) -> dict[str, str]:
        return {"base_url": self.base_url, "model": self.model, "cache": str(self.cache_path or "")}

    def prompt(self, question: str, options: Mapping[str, str], reply: str) -> str:
        return _PROMPT.format(question=question, options="\n".join(f"{k}. {v}" for k, v in options.items()),
                              reply=reply)

    def pick(self, question: str, options: Mapping[str, str], reply: str) -> str | None:
        """The letter the judge reads in ``reply`` (None when it finds none)."""
        prompt = self.prompt(question, options, reply)
        key = hashlib.sha256(json.dumps([self.model, prompt]).encode()).hexdigest()
        if key not in self.cache:
            raw = self._ask(prompt)
            entry = {"key": key, "model": self.model, "prompt": prompt, "raw": raw,
                     "letter": extract_choice(raw, options)}
            self.cache[key] = entry
            if self.cache_path:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return self.cache[key]["letter"]

    def _ask(self, prompt: str) -> str:
        self.calls += 1
        response = self.client.post(f"{self.base_url}/chat/completions", json={
            "model": self.model, "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "max_tokens": 8})
        if response.status_code != 200:
            raise RuntimeError(f"judge endpoint {self.base_url} answered HTTP {response.status_code}: "
                               f"{response.text[:200]}")
        return str(response.json()["choices"][0]["message"]["content"] or "")


def judge_choice(pred: str, gold: str, options: Mapping[str, str], question: str,
                 judge: ChoiceJudge | None) -> tuple[bool, str]:
    """(correct, how): ``how`` is "rule" when the rules read a letter, "judge" when the judge did."""
    from gmai.eval.scoring import gold_letter

    letter = extract_choice(pred or "", options)
    how = "rule"
    if letter is None and judge is not None and pred:
        letter, how = judge.pick(question, options, pred), "judge"
    want = gold_letter(gold, options)
    return (want is not None and letter == want), how


def judged_verdict(pred: str, gold: str, answer_type: str, options: Mapping[str, str], question: str,
                   judge: ChoiceJudge | None):
    """The ``gmai+judge@1`` verdict: ``gmai@1`` everywhere, judge fallback for multiple choice."""
    from gmai.eval.scoring import Verdict

    if answer_type != "choice":
        return rule_judge(pred, gold, answer_type, options, rule="gmai@1")
    correct, _ = judge_choice(pred, gold, options, question, judge)
    return Verdict(correct, "choice")
