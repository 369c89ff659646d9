"""Rejection sampling: reasoning chains from a teacher, kept only when verifiably right.

For each question, ``k`` chains are sampled from a teacher (a local checkpoint or any
OpenAI-compatible endpoint, through :mod:`gmai.infer`) in the ``<think>..</think><answer>..</answer>``
format. A chain is accepted when its format is valid (:func:`gmai.rl.rewards.format_valid`) and
its extracted answer is correct by the evaluation suite's rule (:func:`gmai.rl.rewards.is_correct`,
i.e. ``gmai.eval.scoring`` under ``gmai@1``). Near-duplicate chains of one question are dropped and
at most ``max_per_question`` are kept. The output is SFT data in the trainer's LLaVA JSONL format,
with a report of acceptance rate and pass@k by source, modality and question type, and the list of
questions no chain solved.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gmai.data.write import write_jsonl
from gmai.rl.questions import SFT_FILE, Question, llava_row, load_questions
from gmai.rl.rewards import format_valid, is_correct

SYNTH_REPORT, UNSOLVED_FILE = "synth-report.json", "unsolved.jsonl"


@dataclass
class SynthConfig:
    k: int = 4  # chains sampled per question
    temperature: float = 0.9
    top_p: float = 1.0
    max_new_tokens: int = 256
    max_per_question: int = 2  # chains kept per question
    dedup_threshold: float = 0.8  # Jaccard similarity of word 3-grams above which a chain is a near-duplicate
    batch_size: int = 8
    seed: int = 0
    template_fallback: bool = False  # add the template chain (flagged) for questions no teacher chain solved


@dataclass
class ChainVerdict:
    text: str
    format_ok: bool
    correct: bool
    kept: bool = False
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.format_ok and self.correct


@dataclass
class QuestionResult:
    question: Question
    chains: list[ChainVerdict] = field(default_factory=list)

    @property
    def solved(self) -> bool:
        return any(c.accepted for c in self.chains)


# ---------------------------------------------------------------------------------------------
# Judging and near-duplicate removal
# ---------------------------------------------------------------------------------------------


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = text.lower().split()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def judge_chains(question: Question, chains: list[str], config: SynthConfig) -> QuestionResult:
    """Verdict per chain; keep accepted, non-duplicate chains up to the cap (in sampling order)."""
    result = QuestionResult(question)
    kept_shingles: list[set] = []
    q = question.to_json()
    for text in chains:
        verdict = ChainVerdict(text, format_valid(text), is_correct(text, q))
        if verdict.accepted:
            sh = shingles(text)
            if any(jaccard(sh, other) >= config.dedup_threshold for other in kept_shingles):
                verdict.duplicate = True
            elif len(kept_shingles) < config.max_per_question:
                verdict.kept = True
                kept_shingles.append(sh)
        result.chains.append(verdict)
    return result


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def sample_chains(backend, questions: list[Question], config: SynthConfig, progress=None) -> list[list[str]]:
    """``k`` chains per question from ``backend`` (a :mod:`gmai.infer` backend), in batches."""
    from PIL import Image

    from gmai.infer import ChatRequest, GenerationConfig

    gen = GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                           num_return_sequences=config.k, seed=config.seed)
    out: list[list[str]] = []
    for start in range(0, len(questions), config.batch_size):
        batch = questions[start:start + config.batch_size]
        requests = []
        for q in batch:
            with Image.open(q.image) as im:
                requests.append(ChatRequest(q.prompt(reasoning=True), [im.convert("RGB")]))
        replies = backend.generate(requests, gen, batch_size=config.batch_size)
        out.extend([r] if isinstance(r, str) else list(r) for r in replies)
        if progress is not None:
            progress(len(batch))
    return out


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _bucket() -> dict[str, float]:
    return {"questions": 0, "chains": 0, "format_ok": 0, "correct": 0, "accepted": 0, "kept": 0, "solved": 0}


def summarise(results: list[QuestionResult], k: int) -> dict[str, Any]:
    """Acceptance rate (accepted / sampled chains) and pass@k (questions with >= 1 accepted chain
    among the k sampled) overall and per source, modality and question type."""
    groups: dict[str, dict[str, dict[str, float]]] = {"source": defaultdict(_bucket), "modality": defaultdict(_bucket),
                                                      "answer_type": defaultdict(_bucket), "all": defaultdict(_bucket)}
    for r in results:
        q = r.question
        keys = {"source": q.source, "modality": q.modality or "-", "answer_type": q.answer_type, "all": "all"}
        for group, key in keys.items():
            b = groups[group][key]
            b["questions"] += 1
            b["chains"] += len(r.chains)
            b["format_ok"] += sum(c.format_ok for c in r.chains)
            b["correct"] += sum(c.correct for c in r.chains)
            b["accepted"] += sum(c.accepted for c in r.chains)
            b["kept"] += sum(c.kept for c in r.chains)
            b["solved"] += r.solved
    table = {}
    for group, buckets in groups.items():
        table[group] = {}
        for key, b in sorted(buckets.items()):
            chains = max(b["chains"], 1)
            table[group][key] = {**b, "acceptance_rate": b["accepted"] / chains, "format_rate": b["format_ok"] / chains,
                                 "answer_correct_rate": b["correct"] / chains,
                                 f"pass@{k}": b["solved"] / max(b["questions"], 1)}
    return table


def print_report(report: dict[str, Any], k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rejection sampling (k={k})")
    for col in ("group", "value", "questions", "chains", "format ok", "answer ok", "accept rate", f"pass@{k}", "kept"):
        table.add_column(col)
    for group in ("all", "source", "modality", "answer_type"):
        for key, b in report["by"][group].items():
            table.add_row(group, key, str(int(b["questions"])), str(int(b["chains"])), f"{b['format_rate']:.2f}",
                          f"{b['answer_correct_rate']:.2f}", f"{b['acceptance_rate']:.2f}", f"{b[f'pass@{k}']:.2f}",
                          str(int(b["kept"])))
    Console().print(table)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def synthesise(questions_path: str | Path, teacher: str | Any, out: str | Path, config: SynthConfig | None = None,
               max_questions: int = 0, show_progress: bool = True, **backend_kwargs: Any) -> dict[str, Any]:
    """Sample, judge, filter and write ``OUT/R1-SFT.jsonl`` + ``OUT/synth-report.json`` +
    ``OUT/unsolved.jsonl``. ``teacher`` is a checkpoint folder, an ``http(s)://.../v1`` URL, or a
    backend object with :mod:`gmai.infer`'s ``generate``."""
    config = config or SynthConfig()
    out = Path(out)
    questions = load_questions(questions_path)
    if max_questions:
        questions = questions[:max_questions]
    if not questions:
        raise ValueError(f"{questions_path}: no questions to synthesise chains for")
    if isinstance(teacher, (str, Path)):
        from gmai.infer import load_backend

        backend, teacher_name = load_backend(str(teacher), **backend_kwargs), str(teacher)
    else:
        backend, teacher_name = teacher, getattr(teacher, "name", type(teacher).__name__)
    chains = _sample_with_progress(backend, questions, config, show_progress)
    results = [judge_chains(q, c, config) for q, c in zip(questions, chains)]
    rows = []
    for r in results:
        for i, c in enumerate(c for c in r.chains if c.kept):
            rows.append(llava_row(r.question, c.text, out, chain_source=f"teacher:{teacher_name}", chain_index=i))
        if not r.solved and config.template_fallback:
            rows.append(llava_row(r.question, r.question.reasoning, out, chain_source="template"))
    write_jsonl(out / SFT_FILE, rows)
    unsolved = [r.question for r in results if not r.solved]
    write_jsonl(out / UNSOLVED_FILE, [llava_row(q, q.answer, out) for q in unsolved])
    report = {"teacher": teacher_name, "config": asdict(config), "questions": len(results),
              "sft_rows": len(rows), "teacher_rows": sum(1 for r in rows if r["chain_source"] != "template"),
              "template_rows": sum(1 for r in rows if r["chain_source"] == "template"),
              "unsolved": [q.id for q in unsolved], "by": summarise(results, config.k),
              "examples": [{"id": r.question.id, "chain": c.text, "format_ok": c.format_ok, "correct": c.correct}
                           for r in results[:5] for c in r.chains[:2]]}
    (out / SYNTH_REPORT).write_text(json.dumps(report, indent=2))
    return report


def _sample_with_progress(backend, questions: list[Question], config: SynthConfig, show: bool) -> list[list[str]]:
    if not show:
        return sample_chains(backend, questions, config)
    from rich.progress import Progress

    with Progress() as progress:
        task = progress.add_task(f"sampling {config.k} chains x {len(questions)} questions", total=len(questions))
        return sample_chains(backend, questions, config, progress=lambda n: progress.advance(task, n))
