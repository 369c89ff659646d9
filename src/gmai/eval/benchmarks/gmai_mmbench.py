"""GMAI-MMBench (Chen et al. 2024) as released: VLMEvalKit-style TSVs with base64 images.

- ``val``: ``GMAI_mm_bench_VAL.tsv`` (OpenGVLab/GMAI-MMBench), or ``GMAI-MMBench_VAL.tsv`` (the name on the
  VLMEvalKit mirror VLMEval/GMAI-MMBench);
- ``test``: ``GMAI_mm_bench_TEST_part_1.tsv`` ... ``_part_11.tsv`` (OpenGVLab), read as one split. Its
  answers are withheld, so its rows load but are listed as failures (no gold) rather than scored.

Columns are matched without regard to case (the release writes ``clinical VQA task``; VLMEvalKit lower-
cases names when it scores). The files are streamed: one row at a time is parsed, each image is kept
as (file, byte offset) and decoded only when its batch is evaluated, so memory is bounded by a batch,
not by the file (over 1 GB for VAL). A short ``image`` value is the index of the row holding the image.
"""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import (BenchItem, ImageRef, Loaded, iter_tsv_rows, missing, register,
                                       require_dir)

NAME = "gmai-mmbench"
VAL_FILES = ("GMAI_mm_bench_VAL.tsv", "GMAI-MMBench_VAL.tsv")
TEST_PARTS = 11  # GMAI_mm_bench_TEST_part_{1..11}.tsv (VLMEvalKit's GMAIMMBenchDataset.DATASET_URL)
META = ("category", "l2-category", "department", "perceptual granularity")


def test_part_names() -> list[str]:
    return [f"GMAI_mm_bench_TEST_part_{k}.tsv" for k in range(1, TEST_PARTS + 1)]


def _blank(value) -> bool:
    return value is None or str(value).strip() in ("", "nan", "NaN", "None")


@register(NAME, "GMAI-MMBench multiple choice (VLMEvalKit TSVs, base64 images; val, or test = 11 parts)",
          fetch="Fetch GMAI_mm_bench_VAL.tsv (and GMAI_mm_bench_TEST_part_1..11.tsv) from the Hugging Face dataset "
                "OpenGVLab/GMAI-MMBench (or GMAI-MMBench_VAL.tsv from VLMEval/GMAI-MMBench) and pass the folder "
                "(or one .tsv file).",
          splits=("val", "test"))
def load(path: str | Path, split: str = "val") -> Loaded:
    items = Loaded()
    for tsv in split_files(require_dir(NAME, path), split):
        _read_tsv(tsv, split, items)
    return items


def split_files(root: Path, split: str) -> list[Path]:
    if root.is_file():
        return [root]
    if split == "val":
        found = next((root / f for f in VAL_FILES if (root / f).is_file()), None)
        if found is None:
            raise missing(NAME, root, " or ".join(VAL_FILES))
        return [found]
    parts = [root / f for f in test_part_names()]
    absent = [p.name for p in parts if not p.is_file()]
    if absent:
        raise missing(NAME, root, f"TEST part(s) {', '.join(absent)}")
    return parts


def _read_tsv(tsv: Path, split: str, items: Loaded) -> None:
    rows = iter_tsv_rows(tsv)
    header = next(rows, None)
    if header is None:
        raise ValueError(f"{NAME}: {tsv} is empty")
    col = {name.strip().lower(): i for i, name in enumerate(header)}
    for needed in ("index", "question", "image"):
        if needed not in col:
            raise ValueError(f"{NAME}: {tsv} has no {needed!r} column (columns: {header})")
    offsets: dict[str, int] = {}
    pending: list[tuple[BenchItem, str]] = []
    for offset, cells in rows:
        row = {name: cells[i] if i < len(cells) else "" for name, i in col.items() if name != "image"}
        image = cells[col["image"]] if col["image"] < len(cells) else ""
        offsets[row["index"]] = offset
        item = _item(row, split, tsv)
        if len(image) <= 64:  # a reference to another row's image (resolved once every row is indexed)
            pending.append((item, image.strip()))
        else:
            item.images = [ImageRef(tsv=str(tsv), offset=offset, column=col["image"], name=item.images[0].name)]
        items.append(item)
    for item, ref in pending:
        if ref in offsets:
            item.images = [ImageRef(tsv=str(tsv), offset=offsets[ref], column=col["image"], name=item.images[0].name)]
        # else: the image stays empty: loading it raises ImageLoadError (a failed item, never skipped)


def _item(row: dict[str, str], split: str, tsv: Path) -> BenchItem:
    options = {k: row[k.lower()].strip() for k in "ABCDEFGHIJ" if not _blank(row.get(k.lower()))}
    hint = "" if _blank(row.get("hint")) else f"{row['hint'].strip()}\n"
    answer = "" if _blank(row.get("answer")) else row["answer"].strip().upper()
    return BenchItem(
        qid=row["index"].strip(), question=hint + row["question"].strip(), answer=answer, answer_type="choice",
        options=options, images=[ImageRef(name=f"{tsv.name}#{row['index'].strip()}")], benchmark=NAME, split=split,
        organ=row.get("department", "") or "", modality=row.get("modality", "") or "",
        question_type=row.get("clinical vqa task", "") or row.get("category", "") or "",
        meta={k: row[k] for k in META if k in row})
