"""PMC-VQA (Zhang et al. 2023): CSV with four choices per question + ``images/``."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, missing, register, require_dir

NAME = "pmc-vqa"
_PREFIX = re.compile(r"^\s*[A-D]\s*[:.)]\s*")  # choices are stored as "A:Brain stem"


@register(NAME, "PMC-VQA multiple choice (4 options)",
          fetch="Fetch PMC-VQA (Hugging Face xmcmic/PMC-VQA: test_2.csv / test.csv, train_2.csv / train.csv, and "
                "images.zip unzipped to images/) and pass that folder.",
          splits=("test", "train"), has_train=True)
def load(path: str | Path, split: str = "test") -> list[BenchItem]:
    root = require_dir(NAME, path)
    candidates = [root / f"{split}_2.csv", root / f"{split}.csv"]
    csv_file = next((c for c in candidates if c.is_file()), None)
    if csv_file is None:
        raise missing(NAME, root, " or ".join(c.name for c in candidates))
    image_dir = next((d for d in (root / "images", root / "figures") if d.is_dir()), root / "images")
    items = []
    with csv_file.open(newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            try:
                options = {k: _PREFIX.sub("", row[f"Choice {k}"]).strip() for k in "ABCD"}
                label = row["Answer_label"].strip().upper()
                figure = row["Figure_path"].strip()
            except KeyError as err:
                raise ValueError(f"{csv_file}: row {i + 2} lacks column {err}") from err
            items.append(BenchItem(qid=f"{split}-{i:06d}", question=row["Question"].strip(), answer=label,
                                   answer_type="choice", options=options,
                                   images=[ImageRef(path=str(image_dir / figure), name=figure)],
                                   benchmark=NAME, split=split, meta={"answer_text": row.get("Answer", "").strip()}))
    return items
