"""GMAI-MMBench (Chen et al. 2024), VLMEvalKit TSV with base64 images."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, missing, register, require_dir

NAME = "gmai-mmbench"
_FILES = {"val": "GMAI-MMBench_VAL.tsv", "validation": "GMAI-MMBench_VAL.tsv", "test": "GMAI-MMBench_TEST.tsv"}


def _blank(value) -> bool:
    return value is None or str(value).strip() in ("", "nan", "NaN", "None")


@register(NAME, "GMAI-MMBench multiple choice (VLMEvalKit TSV, base64 images)",
          fetch="Fetch GMAI-MMBench_VAL.tsv (and GMAI-MMBench_TEST.tsv) from the VLMEvalKit / Hugging Face "
                "OpenGVLab/GMAI-MMBench release and pass the folder (or the .tsv file itself).",
          splits=("val", "test"))
def load(path: str | Path, split: str = "val") -> list[BenchItem]:
    root = require_dir(NAME, path)
    tsv = root if root.is_file() else root / _FILES.get(split, f"GMAI-MMBench_{split.upper()}.tsv")
    if not tsv.is_file():
        raise missing(NAME, root, tsv.name)
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    with tsv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    by_index = {str(r.get("index")): r for r in rows}
    items = []
    for r in rows:
        if _blank(r.get("answer")):
            raise ValueError(f"{tsv}: item {r.get('index')} has no answer (the TEST split's answers are "
                             f"withheld; evaluate the VAL split locally)")
        options = {k: str(r[k]).strip() for k in "ABCDEFGHIJ" if k in r and not _blank(r[k])}
        image = str(r.get("image", ""))
        if len(image) <= 64 and image in by_index:  # VLMEvalKit: a short value points at another row's image
            image = str(by_index[image]["image"])
        images = [ImageRef.from_base64(image, name=f"{tsv.name}#{r.get('index')}")] if image else []
        hint = "" if _blank(r.get("hint")) else f"{r['hint'].strip()}\n"
        items.append(BenchItem(
            qid=str(r["index"]), question=hint + str(r["question"]).strip(), answer=str(r["answer"]).strip().upper(),
            answer_type="choice", options=options, images=images, benchmark=NAME, split=split,
            organ=str(r.get("department", "") or ""), modality=str(r.get("modality", "") or ""),
            question_type=str(r.get("clinical vqa task", "") or r.get("category", "") or ""),
            meta={k: r[k] for k in ("category", "l2-category", "perceptual granularity") if k in r}))
    return items
