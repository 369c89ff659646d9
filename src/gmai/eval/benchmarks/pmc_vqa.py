"""PMC-VQA (Zhang et al. 2023) as released on Hugging Face ``xmcmic/PMC-VQA``; the split names are the
CSV file names:

- ``test_clean`` (default): ``test_clean.csv``, the 2,000-question clean test set papers report;
- ``test`` / ``train``: ``test.csv`` / ``train.csv`` (version 1; images in ``images.zip`` -> ``images/``);
- ``test_2`` / ``train_2``: ``test_2.csv`` / ``train_2.csv`` (version 2; ``images_2.zip`` ->
  ``images_2/figures/``).

Version-1 columns: ``Figure_path,Question,Answer,Choice A..D,Answer_label`` (answer text + letter);
version-2 columns: ``index,Figure_path,Caption,Question,Choice A..D,Answer,split`` (``Answer`` is the
letter). Choices are stored as ``"A:text"``, sometimes with spaces around.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, Loaded, missing, register, require_dir

NAME = "pmc-vqa"
SPLITS = ("test_clean", "test", "test_2", "train", "train_2")
_PREFIX = re.compile(r"^\s*[A-D]\s*[:.)]\s*")
_IMAGE_DIRS = {1: ("images", "figures", "images_2/figures", "images_2"),
               2: ("images_2/figures", "images_2", "figures", "images")}


@register(NAME, "PMC-VQA multiple choice (4 options); splits are the release's CSV names",
          fetch="Fetch PMC-VQA (Hugging Face xmcmic/PMC-VQA: test_clean.csv, test.csv, train.csv with images.zip "
                "unzipped to images/; test_2.csv, train_2.csv with images_2.zip unzipped to images_2/) and pass "
                "that folder.",
          splits=SPLITS, has_train=True)
def load(path: str | Path, split: str = "test_clean") -> Loaded:
    root = require_dir(NAME, path)
    csv_file = root / f"{split}.csv"
    if not csv_file.is_file():
        raise missing(NAME, root, csv_file.name)
    items = Loaded()
    with csv_file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        version = 2 if "Answer_label" not in (reader.fieldnames or []) else 1
        image_dir = next((root / d for d in _IMAGE_DIRS[version] if (root / d).is_dir()), root / "images")
        for i, row in enumerate(reader):
            qid = str(row.get("index") or f"{split}-{i:06d}").strip()
            try:
                items.append(_item(row, qid, version, image_dir, split))
            except KeyError as err:
                raise ValueError(f"{csv_file}: row {i + 2} lacks column {err}") from err
    return items


def gold_label(row: dict, options: dict[str, str]) -> str:
    """The gold letter: ``Answer_label`` (v1), else ``Answer`` when it is a letter (v2), else the letter of
    the option whose text is the answer (the dataset card spells the column ``Anwser``)."""
    if (row.get("Answer_label") or "").strip():
        return row["Answer_label"].strip().upper()
    answer = (row.get("Answer") or row.get("Anwser") or "").strip()
    if len(answer) == 1 and answer.upper() in options:
        return answer.upper()
    matches = [k for k, v in options.items() if v and v.lower() == _PREFIX.sub("", answer).strip().lower()]
    return matches[0] if len(matches) == 1 else answer.upper()


def _item(row: dict, qid: str, version: int, image_dir: Path, split: str) -> BenchItem:
    options = {k: _PREFIX.sub("", row[f"Choice {k}"] or "").strip() for k in "ABCD"}
    label = gold_label(row, options)
    answer_text = (row.get("Answer") or row.get("Anwser") or "") if version == 1 else options.get(label, "")
    figure = row["Figure_path"].strip()
    return BenchItem(qid=qid, question=row["Question"].strip(), answer=label, answer_type="choice",
                     options=options, images=[ImageRef(path=str(image_dir / figure), name=figure)],
                     benchmark=NAME, split=split, meta={"answer_text": (answer_text or "").strip()})
