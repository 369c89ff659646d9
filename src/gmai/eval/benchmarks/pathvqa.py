"""PathVQA (He et al. 2020), Hugging Face parquet layout (``flaviagiammarino/path-vqa``)."""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, closed_or_open, find_split_parquet, missing, parquet_image,
                                       read_parquet_rows, register, require_dir)

NAME = "pathvqa"


@register(NAME, "PathVQA pathology VQA (closed yes/no + open)",
          fetch="Fetch the Hugging Face dataset flaviagiammarino/path-vqa (data/{train,validation,test}-*.parquet) "
                "and pass that folder.",
          splits=("test", "validation", "train"), has_train=True)
def load(path: str | Path, split: str = "test") -> list[BenchItem]:
    root = require_dir(NAME, path)
    files = find_split_parquet(root, split)
    if not files:
        raise missing(NAME, root, f"data/{split}-*.parquet")
    items = []
    for i, row in enumerate(read_parquet_rows(files)):
        answer = str(row["answer"]).strip()
        items.append(BenchItem(qid=f"{split}-{i:05d}", question=str(row["question"]).strip(), answer=answer,
                               answer_type=closed_or_open(answer),
                               images=[parquet_image(row.get("image"), f"{split}-{i}")],
                               benchmark=NAME, split=split, modality="pathology"))
    return items
