"""SLAKE (Liu et al. 2021): ``{train,validation,test}.json`` + ``imgs/``; English questions by default."""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, load_json, missing, register, require_dir

NAME = "slake"


@register(NAME, "SLAKE bilingual radiology VQA (English subset by default)",
          fetch="Fetch the SLAKE release (Hugging Face BoKelvin/SLAKE: train.json, validation.json, test.json "
                "and imgs.zip unzipped to imgs/) and pass that folder.",
          splits=("test", "validation", "train"), has_train=True)
def load(path: str | Path, split: str = "test", language: str = "en") -> list[BenchItem]:
    root = require_dir(NAME, path)
    split = {"val": "validation", "dev": "validation"}.get(split, split)
    json_file = root / f"{split}.json"
    if not json_file.is_file():
        raise missing(NAME, root, json_file.name)
    items = []
    for row in load_json(json_file, NAME):
        if language != "all" and row.get("q_lang", "en") != language:
            continue
        items.append(BenchItem(
            qid=str(row["qid"]), question=str(row["question"]).strip(), answer=str(row["answer"]).strip(),
            answer_type=str(row.get("answer_type", "open")).strip().lower(),
            images=[ImageRef(path=str(root / "imgs" / row["img_name"]), name=row["img_name"])],
            benchmark=NAME, split=split, organ=str(row.get("location", "")), modality=str(row.get("modality", "")),
            question_type=str(row.get("content_type", "")), meta={"q_lang": row.get("q_lang", "")}))
    return items
