"""The project's own held-out split: LLaVA-style JSONL written by the data engine (``gmai data build``).

Each line: ``{"id", "image": str | [str], "conversations": [{"from": "human"|"gpt", "value"}...]}`` plus the
sample's Q&A metadata (``answer``, ``answer_type`` open|closed|choice, ``options`` ["A. text", ...],
``question_type``, ``modality``, ``organ``), at the top level or under ``meta``. Lines whose
``answer_type`` is empty (captions, region captions, multi-turn dialogue) are not questions: they are
counted and reported (``LoadStats``), not scored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, closed_or_open, missing, register, require_dir

NAME = "gmai"
_SPLIT_FILES = {"test": ("test.jsonl", "heldout.jsonl", "held_out.jsonl", "eval.jsonl"),
                "val": ("val.jsonl", "validation.jsonl"), "train": ("train.jsonl",)}
_OPTION = re.compile(r"^\s*\(?([A-Z])[\).:]\s*(.*)$")

#: what the last call skipped, by reason (reports include it: nothing is dropped silently)
LAST_SKIPPED: dict[str, int] = {}


def find_split_file(root: Path, split: str) -> Path | None:
    if root.is_file():
        return root
    for folder in (root, root / "data", root / "splits"):
        for name in _SPLIT_FILES.get(split, (f"{split}.jsonl",)):
            if (folder / name).is_file():
                return folder / name
        hits = sorted(folder.glob(f"*{split}*.jsonl")) if folder.is_dir() else []
        if len(hits) == 1:
            return hits[0]
    return None


@register(NAME, "held-out split of a dataset built by the gmai data engine (LLaVA-style JSONL)",
          fetch="Build one with `gmai data build ... --out DIR` and pass DIR (or its held-out .jsonl file).",
          splits=("test", "val", "train"), has_train=True)
def load(path: str | Path, split: str = "test") -> list[BenchItem]:
    root = require_dir(NAME, path)
    jsonl = find_split_file(root, split)
    if jsonl is None:
        raise missing(NAME, root, f"a {split} split file ({', '.join(_SPLIT_FILES.get(split, ()))})")
    LAST_SKIPPED.clear()
    items = []
    for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{jsonl}:{n}: not JSON: {err}") from err
        item = _item(row, jsonl, split, n)
        if item is not None:
            items.append(item)
    return items


def _field(row: dict, key: str, default=""):
    meta = row.get("meta") or {}
    return row.get(key, meta.get(key, default))


def _item(row: dict, jsonl: Path, split: str, n: int) -> BenchItem | None:
    conv = row.get("conversations") or []
    humans = [t["value"] for t in conv if t.get("from") == "human"]
    gpts = [t["value"] for t in conv if t.get("from") == "gpt"]
    answer_type = str(_field(row, "answer_type", "")).lower()
    if not answer_type or len(humans) != 1 or len(gpts) != 1:
        reason = "not a single-turn question" if answer_type else "no answer_type (caption/dialogue)"
        LAST_SKIPPED[reason] = LAST_SKIPPED.get(reason, 0) + 1
        return None
    answer = str(_field(row, "answer", "") or gpts[0]).strip()
    options = {}
    for text in _field(row, "options", []) or []:
        m = _OPTION.match(str(text))
        if m:
            options[m.group(1)] = m.group(2).strip()
    if answer_type not in ("open", "closed", "choice"):
        answer_type = closed_or_open(answer)
    images = row.get("image") or row.get("images") or []
    images = [images] if isinstance(images, str) else list(images)
    image_root = Path(str(_field(row, "image_root", ""))) if _field(row, "image_root", "") else jsonl.parent
    question = humans[0].replace("<image>\n", "").replace("<image>", "").strip()
    return BenchItem(qid=str(row.get("id", f"{split}-{n}")), question=question, answer=answer,
                     answer_type=answer_type, options=options if answer_type == "choice" else {},
                     images=[ImageRef(path=str(image_root / p), name=str(p)) for p in images],
                     benchmark=NAME, split=split, organ=str(_field(row, "organ", "")),
                     modality=str(_field(row, "modality", "")), question_type=str(_field(row, "question_type", "")),
                     meta={"format": _field(row, "format", ""), "source": _field(row, "source", "")})
