"""OmniMedVQA (Hu et al. 2024): one JSON per source dataset under ``QA_information/<access>/``."""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, load_json, missing, register, require_dir
from gmai.eval.scoring import normalize_text

NAME = "omnimedvqa"


@register(NAME, "OmniMedVQA multiple choice over 73 datasets (Open-access subset by default)",
          fetch="Fetch OmniMedVQA (Hugging Face foreverbeliever/OmniMedVQA: QA_information/ and Images/) "
                "and pass the folder that holds both.")
def load(path: str | Path, split: str = "test", access: str = "Open-access") -> list[BenchItem]:
    root = require_dir(NAME, path)
    qa_dir = root / "QA_information" / access
    files = sorted(qa_dir.glob("*.json"))
    if not files:
        raise missing(NAME, root, f"QA_information/{access}/*.json")
    items = []
    for f in files:
        for row in load_json(f, NAME):
            options = {k[-1]: str(row[k]).strip() for k in sorted(row) if k.startswith("option_") and row[k]}
            gold = [k for k, v in options.items() if normalize_text(v) == normalize_text(row["gt_answer"])]
            if len(gold) != 1:
                raise ValueError(f"{f}: question {row.get('question_id')} gold {row['gt_answer']!r} "
                                 f"matches {len(gold)} options {options}")
            items.append(BenchItem(
                qid=str(row["question_id"]), question=str(row["question"]).strip(), answer=gold[0],
                answer_type="choice", options=options,
                images=[ImageRef(path=str(root / row["image_path"]), name=row["image_path"])],
                benchmark=NAME, split=split, modality=str(row.get("modality_type", "")),
                question_type=str(row.get("question_type", "")), meta={"dataset": row.get("dataset", f.stem)}))
    return items
