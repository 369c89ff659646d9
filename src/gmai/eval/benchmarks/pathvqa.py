"""PathVQA (He et al. 2020) in either release layout.

- Hugging Face ``flaviagiammarino/path-vqa``: ``data/{train,validation,test}-0000K-of-0000N-*.parquet``
  (columns ``image``, ``question``, ``answer``; 19,654 / 6,259 / 6,719 rows).
- The authors' archive ``pvqa/``: ``qas/{train,val,test}/{split}_qa.pkl`` (a list of ``{"image",
  "question", "answer"}``) and ``images/{split}/<image>.jpg``. The Hugging Face copy was made from these
  pickles by dropping duplicate image-question-answer triplets (its ``scripts/processing.py``); we drop
  them the same way, so both layouts hold the same questions in the same order and the same qids
  (``<split>-<row>``, split named as on Hugging Face). Where only ``qas/{split}_vqa.pkl`` is present
  (the archive's LXMERT-format file), its official ``question_id`` and ``answer_type`` are used.
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
    for i, (question, answer, image, *official) in enumerate(rows):  # official: (qid, closed/open) if released
        answer = str(answer).strip()
        qid, kind = official if official else (f"{hf_split}-{i:05d}", closed_or_open(answer))
        items.append(BenchItem(qid=qid, question=str(question).strip(), answer=answer, answer_type=kind,
                               images=[image], benchmark=NAME, split=hf_split, modality="pathology"))
    return items


def _archive_rows(root: Path, split: str) -> list[tuple[str, str, ImageRef]]:
    bases = (root, root / "pvqa")
    base = next((b for b in bases if (b / "qas" / split / f"{split}_qa.pkl").is_file()), None)
    if base is None:
        vqa = next((b for b in bases if (b / "qas" / f"{split}_vqa.pkl").is_file()), None)
        if vqa is not None:
            return _vqa_pickle_rows(vqa, split)
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


def _vqa_pickle_rows(base: Path, split: str) -> list[tuple[str, str, ImageRef, str, str]]:
    """The archive's other file, ``qas/{split}_vqa.pkl`` (LXMERT format: ``img_id``, ``sent``, ``label``
    {answer: score}, ``question_id``, ``answer_type`` yes/no | other), used when ``{split}_qa.pkl`` is
    absent: duplicates dropped the same way; the official ``question_id`` is the qid and the dataset's
    own ``answer_type`` the closed/open label."""
    rows, seen = [], set()
    for row in load_plain_pickle(base / "qas" / f"{split}_vqa.pkl", NAME):
        answer = next(iter(row["label"]), "") if isinstance(row.get("label"), dict) else str(row.get("label", ""))
        triplet = (str(row["img_id"]), str(row["sent"]), str(answer))
        if triplet in seen:
            continue
        seen.add(triplet)
        image = base / "images" / split / f"{triplet[0]}.jpg"
        kind = "closed" if str(row.get("answer_type", "")).lower() == "yes/no" else "open"
        rows.append((triplet[1], triplet[2], ImageRef(path=str(image), name=image.name), str(row["question_id"]), kind))
    return rows
