"""VQA-RAD (Lau et al. 2018): the preprocessed JSON release, or the Hugging Face parquet layout."""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, ImageRef, closed_or_open, find_split_parquet, load_json,
                                       missing, parquet_image, read_parquet_rows, register, require_dir)

NAME = "vqa-rad"


@register(NAME, "VQA-RAD radiology VQA (451 test / 3,064 train; closed yes/no + open)",
          fetch="Fetch either the preprocessed JSON release (testset.json, trainset.json, images/) or the "
                "Hugging Face dataset flaviagiammarino/vqa-rad (data/test-*.parquet, data/train-*.parquet) "
                "and pass that folder.",
          splits=("test", "train"), has_train=True)
def load(path: str | Path, split: str = "test") -> list[BenchItem]:
    root = require_dir(NAME, path)
    json_file = root / f"{split}set.json"
    if json_file.is_file():
        return _from_json(root, json_file, split)
    parquet = find_split_parquet(root, split)
    if parquet:
        return _from_parquet(parquet, split)
    raise missing(NAME, root, f"{json_file.name} (JSON layout) or data/{split}-*.parquet (HF layout)")


def _from_json(root: Path, json_file: Path, split: str) -> list[BenchItem]:
    items = []
    for row in load_json(json_file, NAME):
        answer = str(row["answer"]).strip()
        items.append(BenchItem(
            qid=str(row["qid"]), question=str(row["question"]).strip(), answer=answer,
            answer_type=str(row.get("answer_type", closed_or_open(answer))).strip().lower(),
            images=[ImageRef(path=str(root / "images" / row["image_name"]), name=row["image_name"])],
            benchmark=NAME, split=split, organ=str(row.get("image_organ", "")),
            question_type=str(row.get("question_type", "")),
            meta={"phrase_type": row.get("phrase_type", "")}))
    return items


def _from_parquet(files: list[Path], split: str) -> list[BenchItem]:
    items = []
    for i, row in enumerate(read_parquet_rows(files)):
        answer = str(row["answer"]).strip()
        items.append(BenchItem(
            qid=f"{split}-{i:05d}", question=str(row["question"]).strip(), answer=answer,
            answer_type=closed_or_open(answer), images=[parquet_image(row.get("image"), f"{split}-{i}")],
            benchmark=NAME, split=split))
    return items
