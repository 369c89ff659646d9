"""MMMU (Yue et al. 2024), Health & Medicine subjects, Hugging Face parquet layout (``MMMU/MMMU``):
``<Subject>/{dev,validation,test}-00000-of-00001.parquet``. ``dev`` is MMMU's own few-shot split (5 items
per subject), ``validation`` the 30-per-subject split papers report, ``test`` has its answers withheld
(such rows are counted as failures with that reason)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, Loaded, find_split_parquet, missing, parquet_image,
                                       read_parquet_rows, register, require_dir)

NAME = "mmmu"
HEALTH_AND_MEDICINE = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                       "Pharmacy", "Public_Health")


@register(NAME, "MMMU Health & Medicine (5 subjects; validation split by default)",
          fetch="Fetch the Hugging Face dataset MMMU/MMMU subject folders "
                f"({', '.join(HEALTH_AND_MEDICINE)}), each with {{dev,validation,test}}-*.parquet, and pass their "
                "parent folder.",
          splits=("validation", "dev", "test"))
def load(path: str | Path, split: str = "validation",
         subjects: tuple[str, ...] = HEALTH_AND_MEDICINE) -> Loaded:
    root = require_dir(NAME, path)
    items = Loaded()
    for subject in subjects:
        files = find_split_parquet(root / subject, split)
        if not files:
            raise missing(NAME, root, f"{subject}/{split}-*.parquet")
        for row in read_parquet_rows(files):
            try:
                items.append(_item(row, subject, split))
            except ValueError as err:
                items.fail(row.get("id", "?"), str(err))
    return items


def _item(row: dict, subject: str, split: str) -> BenchItem:
    images = [parquet_image(row[f"image_{k}"], f"{row['id']}#image_{k}")
              for k in range(1, 8) if row.get(f"image_{k}")]
    raw = row.get("options") or "[]"
    try:
        option_list = ast.literal_eval(raw) if isinstance(raw, str) else list(raw)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"unreadable options {raw!r}") from err
    options = {chr(ord("A") + i): str(o) for i, o in enumerate(option_list)}
    choice = row.get("question_type", "multiple-choice") == "multiple-choice" and bool(options)
    question = re.sub(r"<image (\d)>", r"[image \1]", str(row["question"]))
    return BenchItem(qid=str(row["id"]), question=question.strip(), answer=str(row["answer"]).strip(),
                     answer_type="choice" if choice else "open", options=options if choice else {},
                     images=images, benchmark=NAME, split=split, question_type=subject,
                     modality=str(row.get("img_type", "") or ""), meta={"subfield": row.get("subfield", "")})
