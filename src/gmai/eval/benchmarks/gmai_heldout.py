"""The project's own held-out split of a dataset built by the data engine (``gmai data build``).

Build layout (``gmai.data.write``): ``OUT/heldout/<split>/<subset>.jsonl`` with image paths relative to
``OUT``. Each row: ``{"id", "image", "conversations", "subset", "split", "source", "modality", "organ",
"format", "question_type", "answer_type", "answer", "options", ...}``. Single-turn Q&A rows
(``answer_type`` open | closed | choice) become items; the prompt is the exact human turn the model
would have seen in training. Other rows (captions, region captions, multi-turn dialogue) are no
questions: they are counted per reason in ``LAST_SKIPPED`` and in the report, never silently dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, ImageRef, closed_or_open, jsonl_rows, missing, register,
                                       require_dir)

NAME = "gmai"
_OPTION = re.compile(r"^\s*\(?([A-Z])[\).:]\s*(.*)$")

#: what the last call skipped, by reason (reports include it)
LAST_SKIPPED: dict[str, int] = {}


def split_files(root: Path, split: str) -> tuple[list[Path], Path]:
    """(JSONL files, image root) for a build folder or a single JSONL file."""
    if root.is_file():
        image_root = next((p for p in [root.parent, *root.parents][:4] if (p / "images").is_dir()), root.parent)
        return [root], image_root
    folder = root / "heldout" / split
    return sorted(folder.glob("*.jsonl")), root


@register(NAME, "held-out split of a dataset built by the gmai data engine (OUT/heldout/<split>/*.jsonl)",
          fetch="Build one with `gmai data build ... --out OUT` and pass OUT (or one heldout .jsonl file); "
                "its held-out records are those whose source split is val or test.",
          splits=("test", "val", "train"), has_train=True)
def load(path: str | Path, split: str = "test") -> list[BenchItem]:
    root = require_dir(NAME, path)
    if split == "train" and root.is_dir():  # the training split sits at the top of the build folder
        files, image_root = sorted(root.glob("MM-*.jsonl")), root
    else:
        files, image_root = split_files(root, split)
    if not files:
        found = sorted(p.name for p in (root / "heldout").glob("*")) if (root / "heldout").is_dir() else []
        raise missing(NAME, root, f"heldout/{split}/*.jsonl (held-out splits present: {found or 'none'})")
    LAST_SKIPPED.clear()
    items = []
    for jsonl in files:
        for n, row in jsonl_rows(jsonl):
            item = item_from_row(row, image_root, split, f"{jsonl.stem}-{n}")
            if item is not None:
                items.append(item)
    return items


def _field(row: dict, key: str, default=""):
    meta = row.get("meta") or {}
    value = row.get(key, meta.get(key, default))
    return default if value is None else value


def _skip(reason: str) -> None:
    LAST_SKIPPED[reason] = LAST_SKIPPED.get(reason, 0) + 1


def item_from_row(row: dict, image_root: Path, split: str, fallback_id: str) -> BenchItem | None:
    """One data-engine row -> a question (None, counted in LAST_SKIPPED, for captions and dialogue)."""
    conv = row.get("conversations") or []
    humans = [t["value"] for t in conv if t.get("from") == "human"]
    gpts = [t["value"] for t in conv if t.get("from") == "gpt"]
    answer_type = str(_field(row, "answer_type", "")).lower()
    if not answer_type:
        _skip(f"no answer_type ({_field(row, 'format', '') or 'caption/dialogue'})")
        return None
    if len(humans) != 1 or len(gpts) != 1:
        _skip("not a single-turn question")
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
    prompt = humans[0].replace("<image>\n", "").replace("<image>", "").strip()
    question = prompt.split("\nA. ")[0] if answer_type == "choice" else prompt
    return BenchItem(qid=str(row.get("id") or fallback_id), question=question, answer=answer,
                     answer_type=answer_type, options=options if answer_type == "choice" else {},
                     images=[ImageRef(path=str(image_root / p), name=str(p)) for p in images],
                     benchmark=NAME, split=split, organ=str(_field(row, "organ", "")),
                     modality=str(_field(row, "modality", "")), question_type=str(_field(row, "question_type", "")),
                     meta={"prompt": prompt, "format": _field(row, "format", ""), "source": _field(row, "source", ""),
                           "subset": _field(row, "subset", "")})
