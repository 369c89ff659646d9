"""``vqa-rad``: VQA-RAD in its common JSON layout (``trainset.json``, ``testset.json``, ``images/``).

One record per (split, image), grouping all of that image's questions from that file; the split
comes from the file (trainset -> train, testset -> test). ``answer_type`` CLOSED/OPEN becomes
``closed``/``open``; ``image_organ`` (CHEST/ABD/HEAD) becomes the organ. The dataset has no
per-image modality field; the modality is read from the image's own MODALITY questions when they
agree on one (an open answer "CT"/"MRI - T2 weighted"/"Xray", or "yes" to "Is this a CT?"),
else it is "radiology" (option ``infer_modality=false`` turns the reading off; option
``modality`` overrides). The same image can appear in both splits (that is how the public split is made);
leakage control downstream decides what to do about it.
"""

from __future__ import annotations

import re
from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.records import QAPair, Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    bool_option,
    grouped_json,
    limit_items,
    make_record,
    read_json,
    record_fields,
    reject,
)

SPLIT_FILES = {"train": "trainset.json", "test": "testset.json"}
ORGANS = {"CHEST": "chest", "ABD": "abdomen", "HEAD": "head"}


_MODALITY_PATTERNS = (
    ("CT", re.compile(r"\bct\b|computed tomography")),
    ("MR", re.compile(r"\bmri?\b|\bmr-|flair|\bdwi\b|diffusion|t[12][ -]weighted|\bt[12]\b")),
    ("X-ray", re.compile(r"x-?ray|\bxr\b|\bcxr\b|radiograph|\bfilm\b")),
    ("ultrasound", re.compile(r"ultrasound|sonogra")),
)


def _modalities_in(text: str) -> set[str]:
    lowered = text.lower()
    return {name for name, pattern in _MODALITY_PATTERNS if pattern.search(lowered)}


def modality_from_questions(entries: list[dict]) -> str | None:
    """The one modality the image's MODALITY questions agree on, or None (no or mixed evidence)."""
    votes: set[str] = set()
    for e in entries:
        if str(e.get("question_type", "")).strip().upper() != "MODALITY":
            continue
        if re.search(r"\bnot\b|n't\b", str(e.get("question", "")).lower()):
            continue  # "What type of imaging does this not represent?" names the wrong one
        answer = str(e.get("answer", "")).strip()
        if answer.lower() in ("yes", "no"):
            if answer.lower() == "yes":  # "Is this a CT?" -> yes
                votes |= _modalities_in(str(e.get("question", "")))
        else:
            votes |= _modalities_in(answer)
    return votes.pop() if len(votes) == 1 else None


def _entries(path: Path, split: str) -> list[dict]:
    data = read_json(path / SPLIT_FILES[split])
    if not isinstance(data, list):
        raise ValueError(f"{path / SPLIT_FILES[split]}: expected a JSON list of questions")
    return data


def _wanted_splits(options: dict[str, str]) -> list[str]:
    wanted = options.get("split", "")
    return [wanted] if wanted in SPLIT_FILES else list(SPLIT_FILES)


@register("vqa-rad")
class VqaRadSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str, str]]:
        if not (path / "trainset.json").is_file() and not (path / "testset.json").is_file():
            raise FileNotFoundError(f"vqa-rad source {path} has neither trainset.json nor testset.json")
        items = []
        for split in _wanted_splits(options):
            if (path / SPLIT_FILES[split]).is_file():
                names = sorted({str(e.get("image_name", "")) for e in _entries(path, split)})
                items.extend((split, name) for name in names)
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str, str], options: dict[str, str]) -> list[Record | Reject]:
        split, image_name = item
        fields = record_fields(path, {**options, "split": split}, default_modality="radiology", default_name="vqa-rad")
        ref = path / "images" / image_name if image_name else path / SPLIT_FILES[split]
        if not image_name:
            return [reject(ref, fields["source"], "question(s) without image_name")]
        entries = grouped_json(path / SPLIT_FILES[split], "image_name").get(image_name, [])
        qa, problems = [], []
        for entry in entries:
            question, answer = str(entry.get("question", "")).strip(), str(entry.get("answer", "")).strip()
            if not question or not answer:
                problems.append(f"qid {entry.get('qid')}: empty question or answer")
                continue
            kind = str(entry.get("answer_type", "")).strip().lower()
            qa.append(QAPair(question, answer, kind if kind in ("open", "closed") else "open"))
        if not qa:
            return [reject(ref, fields["source"], "; ".join(problems) or "no questions")]
        try:
            image = read_image(ref)
        except ImageReadError as err:
            return [reject(ref, fields["source"], err.reason)]
        inferred = modality_from_questions(entries) if bool_option(options, "infer_modality", True) else None
        if inferred and "modality" not in options:
            fields["modality"] = inferred
        organs = sorted({ORGANS.get(str(e.get("image_organ", "")).strip().upper(), "") for e in entries} - {""})
        if "organ" not in options and organs:
            fields["organ"] = organs[0]
        meta = {
            "qids": [e.get("qid") for e in entries],
            "question_types": sorted({str(e.get("question_type", "")).strip() for e in entries} - {""}),
            "modality_from": "questions" if inferred and "modality" not in options else "option or default",
        }
        if problems:
            meta["skipped_questions"] = problems  # reported with the record rather than lost
        return [make_record(image, ref, fields, "vqa", qa=qa, meta=meta)]
