"""RL questions -> the parquet layouts of verl and EasyR1, for users who scale out on Ray.

- verl (``verl/<split>.parquet``, its multimodal GRPO examples' layout): ``data_source``,
  ``prompt`` (chat messages, ``<image>`` in the user text), ``images`` (list of ``{"bytes",
  "path"}``), ``ability``, ``reward_model`` ``{"style": "rule", "ground_truth"}``, ``extra_info``
  (split, index, answer type, options, question type, modality).
- EasyR1 (``easyr1/<split>.parquet``, its ``geometry3k``-style layout): ``problem`` (with
  ``<image>``), ``answer``, ``images``, plus our metadata columns.

Images are embedded as PNG/JPEG bytes (the file's own bytes), so the parquet is self-contained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gmai.rl.questions import Question, load_questions


def _image_entry(path: str) -> dict[str, Any]:
    return {"bytes": Path(path).read_bytes(), "path": Path(path).name}


def verl_row(q: Question, index: int, split: str) -> dict[str, Any]:
    return {"data_source": f"gmai/{q.source}", "prompt": [{"role": "user", "content": "<image>" + q.prompt()}],
            "images": [_image_entry(q.image)], "ability": f"medical/{q.question_type}",
            "reward_model": {"style": "rule", "ground_truth": q.answer},
            "extra_info": {"split": split, "index": index, "id": q.id, "answer_type": q.answer_type,
                           "options": json.dumps(q.options), "question_type": q.question_type,
                           "modality": q.modality, "gold_text": q.gold_text()}}


def easyr1_row(q: Question) -> dict[str, Any]:
    return {"problem": "<image>" + q.prompt(), "answer": q.answer, "images": [_image_entry(q.image)], "id": q.id,
            "answer_type": q.answer_type, "options": json.dumps(q.options), "source": q.source, "modality": q.modality}


def export_parquet(questions_path: str | Path, out: str | Path, split: str = "train") -> dict[str, str]:
    """Write ``OUT/verl/<split>.parquet`` and ``OUT/easyr1/<split>.parquet``; returns their paths."""
    from datasets import Dataset, Features, Image, Sequence, Value

    questions = load_questions(questions_path)
    if not questions:
        raise ValueError(f"{questions_path}: no questions to export")
    out = Path(out)
    images = Sequence(Image())
    verl_features = Features({
        "data_source": Value("string"), "prompt": [{"role": Value("string"), "content": Value("string")}],
        "images": images, "ability": Value("string"),
        "reward_model": {"style": Value("string"), "ground_truth": Value("string")},
        "extra_info": {"split": Value("string"), "index": Value("int64"), "id": Value("string"),
                       "answer_type": Value("string"), "options": Value("string"), "question_type": Value("string"),
                       "modality": Value("string"), "gold_text": Value("string")}})
    easy_features = Features({"problem": Value("string"), "answer": Value("string"), "images": images,
                              "id": Value("string"), "answer_type": Value("string"), "options": Value("string"),
                              "source": Value("string"), "modality": Value("string")})
    paths = {"verl": out / "verl" / f"{split}.parquet", "easyr1": out / "easyr1" / f"{split}.parquet"}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list([verl_row(q, i, split) for i, q in enumerate(questions)], features=verl_features) \
        .to_parquet(str(paths["verl"]))
    Dataset.from_list([easyr1_row(q) for q in questions], features=easy_features).to_parquet(str(paths["easyr1"]))
    return {k: str(v) for k, v in paths.items()}
