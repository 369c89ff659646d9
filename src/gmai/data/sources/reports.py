"""``reports``: a CSV of images and free-text reports (``image,report``; header required).

Optional columns ``split``, ``modality``, ``organ``. Paths are relative to the CSV's folder or the
``root`` option. An empty report rejects the row.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import limit_items, make_record, normalise_modality, record_fields, reject


def _rows(path: Path) -> tuple[dict[str, str], ...]:
    return _read_rows(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=4)  # parsed once per worker, not once per row
def _read_rows(path: str, mtime_ns: int) -> tuple[dict[str, str], ...]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "image" not in fields or "report" not in fields:
            raise ValueError(f"{path}: needs a header with 'image' and 'report' columns; got {reader.fieldnames}")
        return tuple({k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader)


@register("reports")
class ReportsSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[int]:
        if not path.is_file():
            raise FileNotFoundError(f"reports source {path} is not a file")
        return limit_items(list(range(len(_rows(path)))), options)

    @staticmethod
    def load(path: Path, item: int, options: dict[str, str]) -> list[Record | Reject]:
        row = _rows(path)[item]
        per_row = {k: row[k] for k in ("split", "organ") if row.get(k)}
        if row.get("modality"):
            per_row["modality"] = normalise_modality(row["modality"])
        fields = record_fields(path, {**options, **per_row})
        file = (Path(options["root"]) if options.get("root") else path.parent) / row["image"]
        if not row["report"]:
            return [reject(file, fields["source"], f"empty report (row {item + 2})")]
        try:
            image = read_image(file)
        except ImageReadError as err:
            return [reject(file, fields["source"], err.reason)]
        return [make_record(image, file, fields, "report", report=row["report"])]
