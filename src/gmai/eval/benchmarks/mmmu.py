"""MMMU (Yue et al. 2024), Health & Medicine subjects, Hugging Face parquet layout (``MMMU/MMMU``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, find_split_parquet, missing, parquet_image, read_parquet_rows,
                                       register, require_dir)

NAME = "mmmu"
HEALTH_AND_MEDICINE = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                       "Pharmacy", "Public_Health")


@register(NAME, "MMMU Health & Medicine (5 subjects; validation split by default)",
          fetch="Fetch the Hugging Face dataset MMMU/MMMU subject folders "
                f"({', '.join(HEALTH_AND_MEDICINE)}), each with validation-*.parquet, and pass their parent folder.",
          splits=("validation", "dev"))
def load(path: str | Path, split: str = "validation",
         subjects: tuple[str, ...] = HEALTH_AND_MEDICINE) -> list[BenchItem]:
    root = require_dir(NAME, path)
    items = []
    for subject in subjects:
        files = find_split_parquet(root / subject, split)
        if not files:
            raise missing(NAME, root, f"{subject}/{split}-*.parquet")
        for row in read_parquet_rows(files):
            items.append(_item(row, subject, split))
    return items


def _item(row: dict, subject: str, split: str) -> BenchItem:
    images = [parquet_image(row[f"image_{k}"], f"{row['id']}#image_{k}")
              for k in range(1, 8) if row.get(f"image_{k}")]
    raw = row.get("options") or "[]"
    try:
        option_list = ast.literal_eval(raw) if isinstance(raw, str) else list(raw)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"mmmu {row['id']}: unreadable options {raw!r}") from err
    options = {chr(ord("A") + i): str(o) for i, o in enumerate(option_list)}
    choice = row.get("question_type", "multiple-choice") == "multiple-choice" and bool(options)
    question = re.sub(r"<image (\d)>", r"[image \1]", str(row["question"]))
    return BenchItem(qid=str(row["id"]), question=question.strip(), answer=str(row["answer"]).strip(),
                     answer_type="choice" if choice else "open", options=options if choice else {},
                     images=images, benchmark=NAME, split=split, question_type=subject,
                     modality=str(row.get("img_type", "") or ""), meta={"subfield": row.get("subfield", "")})
