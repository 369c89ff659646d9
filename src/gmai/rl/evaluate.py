"""Score a checkpoint on R1 question files: accuracy under the eval suite's rule + format-valid rate.

Generation is the evaluation suite's loop (:func:`gmai.eval.runner.generate_predictions`: batched
:mod:`gmai.infer` generation, images decoded ahead of the batch, an unreadable image a failed question);
correctness is :func:`gmai.rl.rewards.is_correct`, i.e. ``gmai.eval.scoring.judge`` under ``gmai@1``
(box/numeric questions at IoU >= 0.5 / tolerance). Every model gets the same R1 prompt (question,
options, answer hint, format instruction), so the numbers of a model that never learnt the format are
comparable: the extraction falls back to the whole reply when there is no ``<answer>`` block.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from gmai.rl.questions import LETTERS, Question
from gmai.rl.rewards import format_valid, is_correct


def as_bench_item(q: Question, reasoning_prompt: bool = True):
    """The question as an evaluation item whose prompt is the exact R1 prompt."""
    from gmai.eval.benchmarks import BenchItem, ImageRef

    return BenchItem(qid=q.id, question=q.question, answer=q.answer, answer_type=q.answer_type,
                     images=[ImageRef(path=str(q.image), name=Path(q.image).name)],
                     options={LETTERS[i]: text for i, text in enumerate(q.options)}, benchmark="r1",
                     split=q.split, modality=q.modality, question_type=q.question_type,
                     meta={"prompt": q.prompt(reasoning=reasoning_prompt)})


def evaluate_questions(backend, questions: list[Question], max_new_tokens: int = 64,
                       batch_size: int = 16, reasoning_prompt: bool = True) -> dict[str, Any]:
    """Greedy replies to ``questions``; accuracy, format-valid rate and per-type accuracy.
    ``reasoning_prompt=False`` drops the format instruction (a model never taught the format)."""
    from gmai.eval.runner import generate_predictions
    from gmai.infer import GenerationConfig

    if not questions:
        return {"n": 0, "accuracy": None, "format_valid": None, "by_type": {}, "correct": [], "ids": [], "examples": [],
                "failed": []}
    items = [as_bench_item(q, reasoning_prompt) for q in questions]
    preds = generate_predictions(backend, items, GenerationConfig(max_new_tokens=max_new_tokens),
                                 batch_size=batch_size)
    replies = [preds[q.id]["prediction"] or "" for q in questions]
    correct = [preds[q.id]["error"] is None and is_correct(r, q.to_json()) for r, q in zip(replies, questions)]
    valid = [format_valid(r) for r in replies]
    totals, hits = Counter(q.answer_type for q in questions), Counter()
    for q, ok in zip(questions, correct):
        hits[q.answer_type] += ok
    return {"n": len(questions), "accuracy": sum(correct) / len(questions), "format_valid": sum(valid) / len(questions),
            "by_type": {t: {"n": totals[t], "accuracy": hits[t] / totals[t]} for t in sorted(totals)},
            "correct": correct, "ids": [q.id for q in questions],  # per question, for paired comparisons
            "failed": [{"id": q.id, "error": preds[q.id]["error"]} for q in questions if preds[q.id]["error"]],
            "examples": [{"id": q.id, "reply": r, "gold": q.answer, "correct": c}
                         for q, r, c in list(zip(questions, replies, correct))[:3]]}


def evaluate_checkpoint(model: str | Path, splits: dict[str, list[Question]], max_new_tokens: int = 64,
                        batch_size: int = 16, reasoning_prompt: bool = True) -> dict[str, Any]:
    """``{split name: evaluate_questions(...)}`` for one checkpoint folder."""
    from gmai.infer import load_backend

    backend = load_backend(str(model))
    return {name: evaluate_questions(backend, qs, max_new_tokens, batch_size, reasoning_prompt)
            for name, qs in splits.items()}
