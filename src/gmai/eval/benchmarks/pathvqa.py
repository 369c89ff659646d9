"""PathVQA (He et al. 2020) in either release layout.

- Hugging Face ``flaviagiammarino/path-vqa``: ``data/{train,validation,test}-0000K-of-0000N-*.parquet``
  (columns ``image``, ``question``, ``answer``; 19,654 / 6,259 / 6,719 rows).
- The authors' archive ``pvqa/``: ``qas/{train,val,test}/{split}_qa.pkl`` (a list of ``{"image",
  "question", "answer"}``) and ``images/{split}/<image>.jpg``. The Hugging Face copy was made from these
  pickles by dropping duplicate image-question-answer triplets (its ``scripts/processing.py``); we drop
  them the same way, so both layouts hold the same questions in the same order and the same qids
  (``<split>-<row>``, split named as on Hugging Face).
"""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, ImageRef, Loaded, closed_or_open, find_split_parquet,
                                       load_plain_pickle, missing, parquet_image, read_parquet_rows, register,
                                       require_dir)

NAME = "pathvqa"
HF_SPLIT = {"test": "test", "validation": "validation", "val": "validation", "train": "train"}  # -> HF name
ARCHIVE_SPLIT = {"test": "test", "validation": "val", "val": "val", "train": "train"}  # -> pvqa/ folder name


@register(NAME, "PathVQA pathology VQA (closed yes/no + open)",
          fetch="Fetch the Hugging Face dataset flaviagiammarino/path-vqa (data/{train,validation,test}-*.parquet) "
                "or the authors' pvqa archive (qas/<split>/<split>_qa.pkl + images/<split>/) and pass that folder.",
          splits=tuple(HF_SPLIT), has_train=True)
def load(path: str | Path, split: str = "test") -> Loaded:
    root = require_dir(NAME, path)
    hf_split = HF_SPLIT[split]
    files = find_split_parquet(root, hf_split)
    if files:
        rows = [(r["question"], r["answer"], parquet_image(r.get("image"), f"{hf_split}-{i}"))
                for i, r in enumerate(read_parquet_rows(files))]
    else:
        rows = _archive_rows(root, ARCHIVE_SPLIT[split])
    items = Loaded()
    for i, (question, answer, image) in enumerate(rows):
        answer = str(answer).strip()
        items.append(BenchItem(qid=f"{hf_split}-{i:05d}", question=str(question).strip(), answer=answer,
                               answer_type=closed_or_open(answer), images=[image], benchmark=NAME, split=hf_split,
                               modality="pathology"))
    return items


def _archive_rows(root: Path, split: str) -> list[tuple[str, str, ImageRef]]:
    base = next((b for b in (root, root / "pvqa") if (b / "qas" / split / f"{split}_qa.pkl").is_file()), None)
    if base is None:
        raise missing(NAME, root, f"data/{HF_SPLIT[split]}-*.parquet (HF layout) or "
                                  f"qas/{split}/{split}_qa.pkl (pvqa archive layout)")
    pkl = base / "qas" / split / f"{split}_qa.pkl"
    rows, seen = [], set()
    for row in load_plain_pickle(pkl, NAME):
        triplet = (str(row["image"]), str(row["question"]), str(row["answer"]))
        if triplet in seen:  # the duplicates the HF copy dropped (pandas drop_duplicates keeps the first)
            continue
        seen.add(triplet)
        image = base / "images" / split / f"{triplet[0]}.jpg"
        rows.append((triplet[1], triplet[2], ImageRef(path=str(image), name=image.name)))
    return rows
