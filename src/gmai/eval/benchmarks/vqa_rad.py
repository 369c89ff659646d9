"""VQA-RAD (Lau et al. 2018) in either release layout, with the official question ids in both.

- The JSON release: ``testset.json`` / ``trainset.json`` + ``images/`` (fields ``qid``, ``image_name``,
  ``image_organ``, ``answer``, ``answer_type`` CLOSED/OPEN, ``question_type``, ``question``,
  ``phrase_type``); 451 test questions, 272 closed / 179 open by the dataset's own labels.
- Hugging Face ``flaviagiammarino/vqa-rad``: ``data/{test,train}-00000-of-00001-*.parquet`` with only
  ``image``, ``question``, ``answer`` (its ``scripts/processing.py`` dropped duplicate triplets,
  lower-cased the text and renamed the images). Test rows are mapped onto the official test index
  shipped with gmai (``data/vqa_rad_test_index.jsonl``, CC0): by the normalised (question, answer)
  (failing that, the question alone), and where several official questions share those, by the
  image's bytes (sha256), else its nearest average hash. Mapped rows take the official qid, text, closed/open label, organ and question type, so
  a prediction file scores the same against either layout. A row the index lacks goes to ``failures``.
  The HF train split (1,793 rows, test overlaps removed) has no official ids: ``train-<row>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, ImageRef, Loaded, closed_or_open, find_split_parquet, load_json,
                                       missing, parquet_image, read_parquet_rows, register, require_dir)

NAME = "vqa-rad"
INDEX = Path(__file__).with_name("data") / "vqa_rad_test_index.jsonl"


@register(NAME, "VQA-RAD radiology VQA (451 test / 3,064 train; closed yes/no + open)",
          fetch="Fetch either the preprocessed JSON release (testset.json, trainset.json, images/) or the "
                "Hugging Face dataset flaviagiammarino/vqa-rad (data/test-*.parquet, data/train-*.parquet) "
                "and pass that folder.",
          splits=("test", "train"), has_train=True)
def load(path: str | Path, split: str = "test") -> Loaded:
    root = require_dir(NAME, path)
    json_file = root / f"{split}set.json"
    if json_file.is_file():
        return _from_json(root, json_file, split)
    parquet = find_split_parquet(root, split)
    if parquet:
        rows = read_parquet_rows(parquet)
        return _hf_test(rows) if split == "test" else _hf_positional(rows, split)
    raise missing(NAME, root, f"{json_file.name} (JSON layout) or data/{split}-*.parquet (HF layout)")


def _item(row: dict, image: ImageRef, split: str, layout: str) -> BenchItem:
    answer = str(row["answer"]).strip()
    return BenchItem(
        qid=str(row["qid"]), question=str(row["question"]).strip(), answer=answer,
        answer_type=str(row.get("answer_type") or closed_or_open(answer)).strip().lower(), images=[image],
        benchmark=NAME, split=split, organ=str(row.get("image_organ", "")),
        question_type=str(row.get("question_type", "")), meta={"layout": layout})


def _from_json(root: Path, json_file: Path, split: str) -> Loaded:
    return Loaded(_item(row, ImageRef(path=str(root / "images" / row["image_name"]), name=row["image_name"]),
                        split, "json") for row in load_json(json_file, NAME))


def _hf_positional(rows: list[dict], split: str) -> Loaded:
    return Loaded(_item({"qid": f"{split}-{i:05d}", "question": r["question"], "answer": r["answer"]},
                        parquet_image(r.get("image"), f"{split}-{i}"), split, "hf") for i, r in enumerate(rows))


def hf_normalise(text) -> str:
    """The Hugging Face copy's cleaning (its scripts/processing.py): lower case, single spaces, " ?" -> "?"."""
    return re.sub(" +", " ", str(text).lower()).replace(" ?", "?").strip()


@lru_cache(maxsize=1)
def official_test_index() -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in INDEX.read_text(encoding="utf-8").splitlines() if line.strip())


def _hf_test(rows: list[dict]) -> Loaded:
    by_pair: dict[tuple[str, str], list[dict]] = {}
    by_question: dict[str, list[dict]] = {}
    for entry in official_test_index():
        question = hf_normalise(entry["question"])
        by_pair.setdefault((question, hf_normalise(entry["answer"])), []).append(entry)
        by_question.setdefault(question, []).append(entry)
    claimed: set[int] = set()
    items = Loaded()
    for i, row in enumerate(rows):
        image = parquet_image(row.get("image"), f"test-{i}")
        question = hf_normalise(row["question"])
        # the (question, answer) pair; failing that the question alone (an answer spelt differently)
        entry = None
        for pool in (by_pair.get((question, hf_normalise(row["answer"])), []), by_question.get(question, [])):
            entry = _pick([e for e in pool if e["qid"] not in claimed], image.data)
            if entry is not None:
                break
        if entry is None:
            items.fail(f"hf-test-{i:05d}", f"row {i} ({row['question']!r} -> {row['answer']!r}) is not in the "
                                           f"official VQA-RAD test index")
            continue
        claimed.add(entry["qid"])  # each official question is claimed once
        items.append(_item(entry, image, "test", "hf"))
    return items


def _pick(candidates: list[dict], image_bytes: bytes | None) -> dict | None:
    if len(candidates) <= 1 or not image_bytes:
        return candidates[0] if candidates else None
    digest = hashlib.sha256(image_bytes).hexdigest()
    same = [c for c in candidates if c["image_sha256"] == digest]
    if same:
        return same[0]
    from gmai.eval.benchmarks.data.build_vqa_rad_index import average_hash

    try:
        ahash = int(average_hash(image_bytes), 16)
    except OSError:
        return candidates[0]
    return min(candidates, key=lambda c: bin(int(c["image_ahash"], 16) ^ ahash).count("1"))
