"""MedXpertQA, multimodal subset (Zuo et al. 2025), in either release layout.

- Hugging Face ``TsinghuaC3I/MedXpertQA``: ``MM/test.jsonl`` (2,000) and ``MM/dev.jsonl`` (5), images
  from ``images.zip`` unzipped to ``images/``; ``options`` is a letter -> text mapping, ``label`` a letter,
  ``images`` a list of file names.
- The official GitHub repository's evaluation input ``eval/data/medxpertqa/input/medxpertqa_mm_input.jsonl``
  (the test set): ``options`` is a list of ``{"letter", "content"}``, ``label`` a list of letters,
  ``images`` a list of ``{"image_path"}`` (written by its ``prepare_medxpertqa.ipynb``).

Both give the same ids (``MM-0`` ...), questions, options and gold letters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gmai.eval.benchmarks.base import BenchItem, ImageRef, Loaded, jsonl_rows, missing, register, require_dir

NAME = "medxpertqa-mm"
GITHUB_INPUT = "medxpertqa_mm_input.jsonl"


@register(NAME, "MedXpertQA MM: expert multiple choice (5 options) with images",
          fetch="Fetch the Hugging Face dataset TsinghuaC3I/MedXpertQA (MM/test.jsonl, MM/dev.jsonl and images.zip "
                "unzipped to images/), or the GitHub repository's eval/data/medxpertqa/input/medxpertqa_mm_input.jsonl "
                "with the images in eval/data/medxpertqa/images/, and pass that folder (or the .jsonl file).",
          splits=("test", "dev"))
def load(path: str | Path, split: str = "test") -> Loaded:
    root = require_dir(NAME, path)
    jsonl = _find_jsonl(root, split)
    image_dir = next((d for d in _image_dirs(root, jsonl) if d.is_dir()), jsonl.parent / "images")
    items = Loaded()
    for n, row in jsonl_rows(jsonl):
        try:
            items.append(_item(row, image_dir, split))
        except (KeyError, TypeError, ValueError) as err:
            items.fail(row.get("id", f"line-{n}") if isinstance(row, dict) else f"line-{n}",
                       f"{jsonl.name}:{n}: unreadable row ({type(err).__name__}: {err})")
    return items


def _find_jsonl(root: Path, split: str) -> Path:
    if root.is_file():
        return root
    candidates = [root / "MM" / f"{split}.jsonl", root / f"{split}.jsonl"]
    if split == "test":  # the GitHub copy holds the test set only
        candidates += [root / GITHUB_INPUT, root / "input" / GITHUB_INPUT,
                       root / "eval" / "data" / "medxpertqa" / "input" / GITHUB_INPUT]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise missing(NAME, root, f"MM/{split}.jsonl" + (f" or {GITHUB_INPUT}" if split == "test" else ""))
    return found


def _image_dirs(root: Path, jsonl: Path) -> list[Path]:
    base = root.parent if root.is_file() else root
    return [base / "images", jsonl.parent / "images", jsonl.parent.parent / "images",
            base / "eval" / "data" / "medxpertqa" / "images"]


def _options(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k).strip().upper(): str(v) for k, v in value.items()}
    return {str(o["letter"]).strip().upper(): str(o["content"]) for o in value}


def _label(value: Any) -> str:
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"expected one gold letter, got {value!r}")
        value = value[0]
    return str(value).strip().upper()


def _image_names(value: Any) -> list[str]:
    return [str(v["image_path"]) if isinstance(v, dict) else str(v) for v in value or []]


def _item(row: dict, image_dir: Path, split: str) -> BenchItem:
    question = str(row["question"]).split("\nAnswer Choices:")[0].strip()  # options are rendered by us
    return BenchItem(
        qid=str(row["id"]), question=question, answer=_label(row["label"]), answer_type="choice",
        options=_options(row["options"]),
        images=[ImageRef(path=str(image_dir / name), name=name) for name in _image_names(row.get("images"))],
        benchmark=NAME, split=split, organ=str(row.get("body_system", "")),
        question_type=str(row.get("question_type", "")), meta={"medical_task": row.get("medical_task", "")})
