"""SLAKE (Liu et al. 2021) as released: ``train.json``, ``validate.json`` (renamed ``validation.json`` on the
Hugging Face copy BoKelvin/SLAKE), ``test.json`` and ``imgs/``; English questions (``q_lang == "en"``) by
default. Official English counts: test 1,061, validation 1,053, train 4,919."""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, Loaded, load_json, missing, register, require_dir

NAME = "slake"
# split -> the file names it has in the releases (Slake1.0 zip / GitHub: validate.json; HF: validation.json)
FILES = {"test": ("test.json",), "validation": ("validation.json", "validate.json"),
         "validate": ("validate.json", "validation.json"), "train": ("train.json",)}


@register(NAME, "SLAKE bilingual radiology VQA (English subset by default; language='all' for both)",
          fetch="Fetch the SLAKE release (Hugging Face BoKelvin/SLAKE or the Slake1.0 zip: train.json, "
                "validate.json or validation.json, test.json, and imgs.zip unzipped to imgs/) and pass that folder.",
          splits=tuple(FILES), has_train=True)
def load(path: str | Path, split: str = "test", language: str = "en") -> Loaded:
    root = require_dir(NAME, path)
    json_file = next((root / f for f in FILES[split] if (root / f).is_file()), None)
    if json_file is None:
        raise missing(NAME, root, " or ".join(FILES[split]))
    image_root = next((d for d in (root / "imgs", root / "Slake1.0" / "imgs") if d.is_dir()), root / "imgs")
    items = Loaded()
    for row in load_json(json_file, NAME):
        if language != "all" and row.get("q_lang", "en") != language:
            continue
        items.append(BenchItem(
            qid=str(row["qid"]), question=str(row["question"]).strip(), answer=str(row["answer"]).strip(),
            answer_type=str(row.get("answer_type", "open")).strip().lower(),
            images=[ImageRef(path=str(image_root / row["img_name"]), name=row["img_name"])],
            benchmark=NAME, split=split, organ=str(row.get("location", "")), modality=str(row.get("modality", "")),
            question_type=str(row.get("content_type", "")), meta={"q_lang": row.get("q_lang", "")}))
    return items
