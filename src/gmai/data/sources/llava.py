"""``llava``: LLaVA-format conversations passed through unchanged.

PATH is a JSON list (or JSONL) of ``{"id", "image", "conversations": [{"from": "human"|"gpt",
"value": ...}, ...]}``. Images are relative to the ``images`` option, else ``<json folder>/images``
if present, else the JSON's folder. Roles ``user``/``assistant`` are normalised to
``human``/``gpt``. Samples without an image are rejected here (a Record is an image); text-only
dialogue belongs to the training mixture, not to this image pipeline.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import limit_items, make_record, record_fields, reject

_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}


@lru_cache(maxsize=4)
def _samples(path: str, mtime_ns: int) -> tuple[dict, ...]:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".jsonl"):
        return tuple(json.loads(line) for line in text.splitlines() if line.strip())
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA samples")
    return tuple(data)


def _load_samples(path: Path) -> tuple[dict, ...]:
    return _samples(str(path.resolve()), path.stat().st_mtime_ns)


def _image_dir(path: Path, options: dict[str, str]) -> Path:
    if options.get("images"):
        return Path(options["images"])
    return path.parent / "images" if (path.parent / "images").is_dir() else path.parent


def _conversation(raw: object) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("conversations must be a non-empty list")
    turns = []
    for i, turn in enumerate(raw):
        role = _ROLES.get(str((turn or {}).get("from", "")).lower()) if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if role is None or not isinstance(value, str) or not value.strip():
            raise ValueError(f"turn {i} needs from=human|gpt and a non-empty value")
        expected = "human" if i % 2 == 0 else "gpt"
        if role != expected:
            raise ValueError(f"turn {i} is from {role}, expected {expected} (turns must alternate, human first)")
        turns.append({"from": role, "value": value})
    return turns


@register("llava")
class LlavaSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[int]:
        if not path.is_file():
            raise FileNotFoundError(f"llava source {path} is not a JSON/JSONL file")
        return limit_items(list(range(len(_load_samples(path)))), options)

    @staticmethod
    def load(path: Path, item: int, options: dict[str, str]) -> list[Record | Reject]:
        sample = _load_samples(path)[item]
        fields = record_fields(path, options)
        ref = f"{path}#{sample.get('id', item)}"
        if not sample.get("image"):
            return [reject(ref, fields["source"], "text-only sample (no image): not an image record")]
        file = _image_dir(path, options) / str(sample["image"])
        try:
            turns = _conversation(sample.get("conversations"))
        except ValueError as err:
            return [reject(ref, fields["source"], str(err))]
        try:
            image = read_image(file)
        except ImageReadError as err:
            return [reject(file, fields["source"], err.reason)]
        return [
            make_record(
                image, file, fields, "conversation", conversations=turns, meta={"id": str(sample.get("id", item))}
            )
        ]
