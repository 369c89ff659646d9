"""``slake``: SLAKE (Liu et al. 2021) JSON layout: ``train.json``, ``validation.json``,
``test.json`` and ``imgs/<folder>/source.jpg``.

Entries carry ``img_name``, ``question``, ``answer``, ``answer_type`` (OPEN/CLOSED), ``q_lang``
(en/zh), ``location`` (organ region) and ``modality`` (CT/MRI/X-Ray). One record per
(split, image) grouping its questions in the chosen language (option ``lang``, default ``en``;
``lang=all`` keeps both).
"""

from __future__ import annotations

from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.records import QAPair, Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    grouped_json,
    limit_items,
    make_record,
    normalise_modality,
    read_json,
    record_fields,
    reject,
)

SPLIT_FILES = {"train": "train.json", "val": "validation.json", "test": "test.json"}


def _entries(path: Path, split: str, lang: str) -> list[dict]:
    data = read_json(path / SPLIT_FILES[split])
    if not isinstance(data, list):
        raise ValueError(f"{path / SPLIT_FILES[split]}: expected a JSON list of questions")
    return [e for e in data if lang == "all" or str(e.get("q_lang", "en")).lower() == lang]


def _image_root(path: Path) -> Path:
    return path / "imgs" if (path / "imgs").is_dir() else path / "images"


@register("slake")
class SlakeSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str, str]]:
        splits = [s for s in SPLIT_FILES if (path / SPLIT_FILES[s]).is_file()]
        if not splits:
            raise FileNotFoundError(f"slake source {path} has none of {', '.join(SPLIT_FILES.values())}")
        wanted = options.get("split")
        lang = options.get("lang", "en").lower()
        items = []
        for split in splits:
            if wanted and wanted != split:
                continue
            items.extend(
                (split, name) for name in sorted({str(e.get("img_name", "")) for e in _entries(path, split, lang)})
            )
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str, str], options: dict[str, str]) -> list[Record | Reject]:
        split, image_name = item
        lang = options.get("lang", "en").lower()
        grouped = grouped_json(path / SPLIT_FILES[split], "img_name").get(image_name, [])
        entries = [e for e in grouped if lang == "all" or str(e.get("q_lang", "en")).lower() == lang]
        first = entries[0] if entries else {}
        opts = {
            "modality": normalise_modality(str(first.get("modality", ""))) or "radiology",
            "organ": str(first.get("location", "")).strip().lower(),
            **options,
            "split": split,
        }
        fields = record_fields(path, opts, default_name="slake")
        ref = _image_root(path) / image_name
        if not image_name:
            return [reject(path / SPLIT_FILES[split], fields["source"], "question(s) without img_name")]
        qa = []
        for e in entries:
            question, answer = str(e.get("question", "")).strip(), str(e.get("answer", "")).strip()
            if question and answer:
                kind = str(e.get("answer_type", "")).strip().lower()
                qa.append(QAPair(question, answer, kind if kind in ("open", "closed") else "open"))
        if not qa:
            return [reject(ref, fields["source"], "no question with a non-empty answer")]
        try:
            image = read_image(ref)
        except ImageReadError as err:
            return [reject(ref, fields["source"], err.reason)]
        meta = {
            "qids": [e.get("qid") for e in entries],
            "lang": lang,
            "content_types": sorted({str(e.get("content_type", "")) for e in entries} - {""}),
        }
        return [make_record(image, ref, fields, "vqa", qa=qa, meta=meta)]
