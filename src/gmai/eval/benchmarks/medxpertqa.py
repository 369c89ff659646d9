"""MedXpertQA, multimodal subset (Zuo et al. 2025): ``MM/test.jsonl`` + ``images/``."""

from __future__ import annotations

import json
from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, missing, register, require_dir

NAME = "medxpertqa-mm"


@register(NAME, "MedXpertQA MM: expert multiple choice (5 options) with images",
          fetch="Fetch the Hugging Face dataset TsinghuaC3I/MedXpertQA (MM/test.jsonl, MM/dev.jsonl and images.zip "
                "unzipped to images/) and pass that folder.",
          splits=("test", "dev"))
def load(path: str | Path, split: str = "test") -> list[BenchItem]:
    root = require_dir(NAME, path)
    jsonl = next((p for p in (root / "MM" / f"{split}.jsonl", root / f"{split}.jsonl") if p.is_file()), None)
    if jsonl is None:
        raise missing(NAME, root, f"MM/{split}.jsonl")
    image_dir = root / "images"
    items = []
    for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{jsonl}:{n}: not JSON: {err}") from err
        question = str(row["question"]).split("\nAnswer Choices:")[0].strip()  # options are rendered by us
        items.append(BenchItem(
            qid=str(row["id"]), question=question, answer=str(row["label"]).strip().upper(), answer_type="choice",
            options={k: str(v) for k, v in row["options"].items()},
            images=[ImageRef(path=str(image_dir / name), name=name) for name in row.get("images", [])],
            benchmark=NAME, split=split, organ=str(row.get("body_system", "")),
            question_type=str(row.get("question_type", "")), meta={"medical_task": row.get("medical_task", "")}))
    return items
